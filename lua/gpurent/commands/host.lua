-- gpurent host: the ssh_config aliases of rented instances (phase -1, setup), kept by
-- gpurent.hosts; the login string is parsed by the profile's platform (P.parse_login).
--   gpurent host add NAME 'ssh -p 12345 root@h.example'   (as the console shows it)
--   gpurent host add NAME --uuid UUID              (host and port from the API snapshot)
--   gpurent host set-port NAME PORT                (a re-created instance's new port)
--   gpurent host list [--json]
-- Blocks go to a file of gpurent's own (~/.ssh/gpurent_config) that ~/.ssh/config
-- Includes. `add` then makes first contact: records the host key (shown), optionally
-- installs your public key with the console password typed on the terminal (like
-- ssh-copy-id), and shows the first-contact notice.
local cli = require "gpurent.cli"
local errors = require "gpurent.util.errors"
local hosts = require "gpurent.hosts"
local setup = require "gpurent.lifecycle.phases.setup"

local M = {summary = "add or update the ssh alias of a rented instance"}
M.usage = [[usage:
  gpurent host add NAME 'ssh -p PORT user@host' [--identity KEY] [--profile NAME]
                   [--install-key PUB] [--known-hosts FILE] [--no-contact]
  gpurent host add NAME --uuid INSTANCE_UUID [...]   (needs the platform's API token)
  gpurent host set-port NAME PORT
  gpurent host list [--json]
The connection string is the one the platform's console shows (the profile's platform:
--profile NAME, default the default profile), pasted as one argument.
--install-key PUB appends that public key to the box's authorized_keys on first contact;
when no key is accepted yet, the console password is asked on the terminal (never argv).
Exit codes: 0 ok, 1 first contact failed, 2 usage.]]

local SPEC = {identity = "value", install_key = "value", known_hosts = "value", uuid = "value",
              no_contact = "flag", profile = "value", json = "flag"}

local function contact(name, opts)
  local run = require "gpurent.lifecycle.run"
  local inst = require("gpurent.transport.instance").connect(name, {accept_new_host = true})
  if inst.conn and inst.conn.hostkey then
    local hk = inst.conn.hostkey
    io.write(string.format("host key of %s: %s %s%s\n", name, hk.type, hk.fingerprint,
      hk.added and (" (recorded in " .. hk.added .. ")") or " (already known)"))
  end
  if opts.install_key then
    local fs = require "gpurent.util.fs"
    local how = setup.install_key(inst, fs.read_file(opts.install_key))
    io.write(string.format("public key %s: %s in ~/.ssh/authorized_keys on %s (later connections are key-based)\n",
      opts.install_key, how, name))
  end
  local r = run.new{host = name, project = "setup", recipe = "host add", profile = opts.profile, record = false}
  r.notify = function() end
  setup.check(inst, r, {})
  inst:close()
end

-- One name per box: the ledger links the alias to the provider's instance, so billing,
-- status, run and repl accept either name (the platform client's find reads the link).
local function link_uuid(name, uuid, profile_name)
  local L = require("gpurent.state.ledger").open()
  local ok, err = pcall(L.upsert_instance, L, {name = name, profile = profile_name, provider_id = uuid})
  L:close()
  if not ok then error(err, 0) end
  io.write(string.format("%s is linked to instance %s: billing and status accept either name\n", name, uuid))
end

function M.main(args)
  local opts, pos = cli.options(args, SPEC, M.usage)
  if opts.help then io.write(M.usage, "\n"); return 0 end
  if #pos == 0 then errors.usage(M.usage, 0) end
  local verb, name = pos[1], pos[2]
  if verb == "list" then
    local known = hosts.read_hosts()
    local names, rows = {}, {}
    for n in pairs(known) do names[#names + 1] = n end
    table.sort(names)
    for _, n in ipairs(names) do
      local h = known[n]
      rows[#rows + 1] = {name = n, user = h.user or "root", host = h.host, port = h.port}
    end
    if opts.json then
      local json = require "gpurent.util.json"
      io.write(json.encode_stable({hosts_file = hosts.hosts_file(), hosts = json.array(rows)}), "\n")
      return 0
    end
    for _, h in ipairs(rows) do io.write(string.format("%-20s %s@%s:%d\n", h.name, h.user, h.host, h.port)) end
    return 0
  end
  if not name then errors.usage(M.usage, 0) end
  if verb == "set-port" then
    local port = math.tointeger(tonumber(pos[3]))
    if not port or port < 1 or port > 65535 then errors.usage("gpurent host set-port NAME PORT (1-65535)", 0) end
    local old = hosts.set_port(name, port)
    io.write(string.format("%s: port %s -> %d in %s\n", name, tostring(old), port, hosts.hosts_file()))
    return 0
  end
  if verb ~= "add" then errors.usage("unknown host verb " .. verb .. "\n" .. M.usage, 0) end
  local h
  local profile_mod = require "gpurent.config.profile"
  local profile_name = opts.profile or profile_mod.default_name()
  local P = require("gpurent.platform").of(profile_mod.load(profile_name))
  if opts.uuid then
    local client = P.require_client{context = "--uuid needs the platform's API: "}
    local snap = client:snapshot(opts.uuid)
    if not snap.ssh.host or not snap.ssh.port then error("the API snapshot of " .. opts.uuid .. " has no ssh host/port", 0) end
    -- an integer: JSON numbers decode as floats, and ssh refuses "Port 38961.0"
    local port = math.tointeger(tonumber(snap.ssh.port))
    if not port then error("the API snapshot of " .. opts.uuid .. " has a bad ssh port: " .. tostring(snap.ssh.port), 0) end
    h = {host = snap.ssh.host, port = port, user = "root"}
    io.write(string.format("API snapshot of %s: %s\n", opts.uuid, tostring(snap.ssh_command or (h.host .. ":" .. h.port))))
  else
    if not pos[3] then errors.usage("gpurent host add NAME 'ssh -p PORT user@host' (or --uuid UUID)", 0) end
    h = P.parse_login(pos[3])
  end
  h.identity, h.known_hosts = opts.identity, opts.known_hosts
  local file, replaced, included = hosts.write_host(name, h)
  io.write(string.format("%s %s -> %s@%s:%d in %s%s\n", replaced and "updated" or "added", name, h.user, h.host, h.port,
    file, included and " (Include added to ~/.ssh/config)" or ""))
  if opts.uuid then link_uuid(name, opts.uuid, profile_name) end
  if opts.no_contact then return 0 end
  local ok, err = pcall(contact, name, opts)
  if not ok then
    io.stderr:write("gpurent host: first contact with ", name, " failed: ", tostring(err), "\n")
    return 1
  end
  return 0
end

return M
