-- gpurent.hosts: the registry of host aliases (phase -1 of LIFECYCLE.md). Each rented
-- box is a block in a file of gpurent's own (~/.ssh/gpurent_config, or
-- $GPURENT_HOSTS_FILE), which ~/.ssh/config Includes; `gpurent host add` writes it
-- from the login string the platform's console shows (the platform parses it:
-- gpurent.platform, P.parse_login), and `gpurent host set-port` follows a re-created
-- instance's new port.
--
--   hosts.parse_ssh_command("ssh -p 12345 root@h.example" [, example]) -> {user, host, port}
--       (example: the login string quoted in the usage error, the platform's own)
--   hosts.hosts_file() -> path        hosts.read_hosts() -> {name = {host, port, user,
--       identity, known_hosts}}, text
--   hosts.write_host(name, {host, port, user, identity, known_hosts}) -> file, replaced, included
--   hosts.set_port(name, port) -> old port
--   hosts.ensure_include(file) -> true (added) | false (present) | nil (not ours to add)
local fs = require "gpurent.util.fs"
local errors = require "gpurent.util.errors"

local hosts = {}

local function home() return os.getenv("HOME") or error("hosts: HOME is not set", 0) end

function hosts.hosts_file()
  local f = os.getenv("GPURENT_HOSTS_FILE")
  if f and f ~= "" then return f end
  return home() .. "/.ssh/gpurent_config"
end

-- A login string: `ssh -p PORT user@host` (extra -o options are ignored, and
-- `ssh user@host -p PORT` works too).
function hosts.parse_ssh_command(s, example)
  if type(s) ~= "string" then errors.usage("connection string expected", 0) end
  local words = {}
  for w in s:gmatch("%S+") do words[#words + 1] = w end
  if words[1] ~= "ssh" then
    errors.usage(string.format("%q is not an ssh command line (expected: %s)", s, example or "ssh -p PORT user@host"), 0)
  end
  local port, target = 22, nil
  local i = 2
  while i <= #words do
    local w = words[i]
    if w == "-p" then port = tonumber(words[i + 1]); i = i + 2
    elseif w:match("^%-p%d+$") then port = tonumber(w:sub(3)); i = i + 1
    elseif w == "-o" or w == "-i" or w == "-l" then i = i + 2
    elseif w:sub(1, 1) == "-" then i = i + 1
    else target = w; i = i + 1 end
  end
  if not port or port < 1 or port > 65535 then errors.usage("bad port in " .. s, 0) end
  if not target then errors.usage("no user@host in " .. s, 0) end
  local user, host = target:match("^([^@]+)@(.+)$")
  host = host or target
  if not host:match("^[%w%.%-]+$") then errors.usage("bad host name " .. host, 0) end
  return {user = user or "root", host = host, port = port}
end

local function block(name, h)
  local lines = {
    "# >>> gpurent host " .. name,
    "Host " .. name,
    "  HostName " .. h.host,
    "  Port " .. h.port,
    "  User " .. (h.user or "root"),
    -- keepalive: a dead link is noticed in ~90 s instead of hanging a watcher
    "  ServerAliveInterval " .. (h.alive_interval or 30),
    "  ServerAliveCountMax " .. (h.alive_count or 3),
  }
  if h.identity then
    lines[#lines + 1] = "  IdentityFile " .. h.identity
    lines[#lines + 1] = "  IdentitiesOnly yes"
  end
  if h.known_hosts then lines[#lines + 1] = "  UserKnownHostsFile " .. h.known_hosts end
  lines[#lines + 1] = "# <<< gpurent host " .. name
  return table.concat(lines, "\n") .. "\n"
end

local function esc(s) return (s:gsub("[%^%$%(%)%%%.%[%]%*%+%-%?]", "%%%0")) end

local function read_or_empty(p) return fs.exists(p) and fs.read_file(p) or "" end

-- ~/.ssh/config must Include our file (first, so an older block elsewhere does not win).
function hosts.ensure_include(file)
  if os.getenv("GPURENT_HOSTS_FILE") and os.getenv("GPURENT_HOSTS_FILE") ~= "" and not os.getenv("GPURENT_INCLUDE_INTO") then
    return nil
  end
  local main = os.getenv("GPURENT_INCLUDE_INTO") or (home() .. "/.ssh/config")
  local text = read_or_empty(main)
  local line = "Include " .. file
  if text:find(line, 1, true) then return false end
  fs.mkdirs(main:match("^(.*)/[^/]*$"))
  fs.atomic_write(main, "# gpurent host aliases (gpurent host add)\n" .. line .. "\n\n" .. text, 384)
  return true
end

function hosts.read_hosts()
  local text = read_or_empty(hosts.hosts_file())
  local known = {}
  for name, body in text:gmatch("# >>> gpurent host (%S+)\n(.-)# <<< gpurent host %S+\n") do
    known[name] = {host = body:match("HostName (%S+)"), port = tonumber(body:match("Port (%d+)")),
                   user = body:match("User (%S+)"), identity = body:match("IdentityFile (%S+)"),
                   known_hosts = body:match("UserKnownHostsFile (%S+)")}
  end
  return known, text
end

function hosts.write_host(name, h)
  require("gpurent.lifecycle.run").check_name("host name", name)
  local file = hosts.hosts_file()
  local _, text = hosts.read_hosts()
  local pat = "# >>> gpurent host " .. esc(name) .. "\n.-# <<< gpurent host " .. esc(name) .. "\n"
  local replaced
  text, replaced = text:gsub(pat, function() return block(name, h) end)
  if replaced == 0 then
    if text == "" then text = "# gpurent host aliases: written by `gpurent host add`; one block per host.\n" end
    text = text .. block(name, h)
  end
  fs.mkdirs(file:match("^(.*)/[^/]*$"))
  fs.atomic_write(file, text, 384)
  local included = hosts.ensure_include(file)
  return file, replaced > 0, included
end

function hosts.set_port(name, port)
  local known = hosts.read_hosts()
  local h = known[name]
  if not h then errors.usage("no host " .. name .. " in " .. hosts.hosts_file() .. " (gpurent host add first)", 0) end
  local old = h.port
  h.port = port
  hosts.write_host(name, h)
  return old
end

return hosts
