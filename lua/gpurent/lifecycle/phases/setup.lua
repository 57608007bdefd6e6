-- Phase -1, one-time setup (LIFECYCLE.md): the host alias, the key, the durable
-- tier, the first-contact notice.
--
-- The alias lives in a file of gpurent's own (~/.ssh/gpurent_config, or
-- $GPURENT_HOSTS_FILE), which ~/.ssh/config Includes; `gpurent host add` writes it
-- from the connection string exactly as the AutoDL console shows it, and
-- `gpurent host set-port` follows a re-created instance's new port.
--
--   the phase: needs {run, inst} (connect opened the session) -> produces {durable}
--   setup.check(inst, r, opts) -> {durable = path, notice_shown = bool}
--     checks the alias answers, the durable tier exists and is writable, and shows
--     the profile's conveniences and danger clocks once per host.
--   setup.parse_connection("ssh -p 12345 root@connect.westDC2.seetacloud.com") -> {user, host, port}
--   setup.hosts_file() / setup.write_host(name, {host, port, user, identity}) / setup.set_port(name, port)
--   setup.install_key(inst, pubkey_text) -> "added" | "present"
local fs = require "gpurent.util.fs"
local errors = require "gpurent.util.errors"
local ledger = require "gpurent.state.ledger"
local profile_mod = require "gpurent.config.profile"

local setup = {name = "setup", needs = {"run", "inst"}, produces = {"durable"}}

local function home() return os.getenv("HOME") or error("setup: HOME is not set", 0) end

function setup.hosts_file()
  local f = os.getenv("GPURENT_HOSTS_FILE")
  if f and f ~= "" then return f end
  return home() .. "/.ssh/gpurent_config"
end

-- The console string: `ssh -p PORT user@host` (extra -o options are ignored, and
-- `ssh user@host -p PORT` works too).
function setup.parse_connection(s)
  if type(s) ~= "string" then errors.usage("connection string expected", 0) end
  local words = {}
  for w in s:gmatch("%S+") do words[#words + 1] = w end
  if words[1] ~= "ssh" then
    errors.usage(string.format("%q is not an ssh command line (expected: ssh -p PORT root@connect.REGION.seetacloud.com)", s), 0)
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
function setup.ensure_include(file)
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

function setup.read_hosts()
  local text = read_or_empty(setup.hosts_file())
  local hosts = {}
  for name, body in text:gmatch("# >>> gpurent host (%S+)\n(.-)# <<< gpurent host %S+\n") do
    hosts[name] = {host = body:match("HostName (%S+)"), port = tonumber(body:match("Port (%d+)")),
                   user = body:match("User (%S+)"), identity = body:match("IdentityFile (%S+)"),
                   known_hosts = body:match("UserKnownHostsFile (%S+)")}
  end
  return hosts, text
end

function setup.write_host(name, h)
  require("gpurent.lifecycle.run").check_name("host name", name)
  local file = setup.hosts_file()
  local _, text = setup.read_hosts()
  local pat = "# >>> gpurent host " .. esc(name) .. "\n.-# <<< gpurent host " .. esc(name) .. "\n"
  local replaced
  text, replaced = text:gsub(pat, function() return block(name, h) end)
  if replaced == 0 then
    if text == "" then text = "# gpurent host aliases: written by `gpurent host add`; one block per host.\n" end
    text = text .. block(name, h)
  end
  fs.mkdirs(file:match("^(.*)/[^/]*$"))
  fs.atomic_write(file, text, 384)
  local included = setup.ensure_include(file)
  return file, replaced > 0, included
end

function setup.set_port(name, port)
  local hosts = setup.read_hosts()
  local h = hosts[name]
  if not h then errors.usage("no host " .. name .. " in " .. setup.hosts_file() .. " (gpurent host add first)", 0) end
  local old = h.port
  h.port = port
  setup.write_host(name, h)
  return old
end

-- Like ssh-copy-id: append the key once, with the right modes, over stdin.
function setup.install_key(inst, pub)
  pub = pub:match("^%s*(.-)%s*$")
  if not pub:match("^ssh%-") and not pub:match("^ecdsa%-") then error("install_key: not an OpenSSH public key", 2) end
  local res = inst:sh([[umask 077; mkdir -p ~/.ssh && touch ~/.ssh/authorized_keys && IFS= read -r k &&
if grep -qxF -- "$k" ~/.ssh/authorized_keys; then echo present; else printf '%s\n' "$k" >> ~/.ssh/authorized_keys && echo added; fi]],
    {stdin = pub .. "\n", timeout = 60, check = true})
  return res.stdout:match("(%a+)")
end

-- ---- the phase ------------------------------------------------------------------

local function notice_marker(host)
  return ledger.state_dir() .. "/first-contact/" .. host
end

function setup.notice_text(p)
  local s = p.surface or {}
  local lines = {"first contact with this " .. p.platform .. " host: things most people miss (shown once)"}
  for _, c in ipairs(s.conveniences or {}) do lines[#lines + 1] = "  convenience: " .. c.name .. ": " .. c.text end
  for _, d in ipairs(s.danger_clocks or {}) do lines[#lines + 1] = "  DANGER " .. d.id .. ": " .. d.text end
  return table.concat(lines, "\n")
end

function setup.check(inst, r, o)
  o = o or {}
  local profile = r.profile
  local durable = profile_mod.durable_tier(profile)
  local res = inst:sh("echo alive; hostname", {timeout = o.timeout or 60, idempotent = true})
  if res.code ~= 0 then error("setup: " .. r.host .. " does not answer: " .. (res.stderr or ""), 0) end
  r:say("setup", "%s answers (%s)", r.host, (res.stdout:match("alive\n([^\n]*)") or "?"))
  local out = {}
  if durable then
    local q = require("gpurent.lifecycle.storage").shell_path
    local d = inst:sh("test -d " .. q(durable.path) .. " && test -w " .. q(durable.path) .. " && echo ok",
      {timeout = 60, idempotent = true})
    if not d.stdout:find("ok", 1, true) then
      errors.refuse(string.format("setup: the durable tier %s (%s) is missing or not writable on %s: create it on the console first",
        durable.name, durable.path, r.host), 0)
    end
    r:say("setup", "durable tier %s present and writable (survives release: %s)", durable.path,
      tostring(durable.survives and durable.survives.release))
    out.durable = durable.path
  else
    r:say("setup", "profile %s has no durable tier: results live only on the box until pulled", profile.platform)
  end
  local marker = notice_marker(r.host)
  if not fs.exists(marker) or o.show_notice then
    r:say("setup", setup.notice_text(profile))
    fs.mkdirs(marker:match("^(.*)/[^/]*$"))
    fs.atomic_write(marker, os.date("!%Y-%m-%dT%H:%M:%SZ") .. "\n")
    r:notify("first_contact", "first-contact notice shown for " .. r.host)
    out.notice_shown = true
  else
    r:say("setup", "first-contact notice already shown for %s (%s)", r.host, marker)
  end
  return out
end

function setup.run(ctx, o)
  return {durable = setup.check(ctx.inst, ctx.run, o).durable}
end

return setmetatable(setup, {__call = function(_, ...) return setup.run(...) end})
