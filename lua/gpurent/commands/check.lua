-- gpurent check: run the gotcha catalog against a live host and report a table (or
-- JSON). Exit 1 when any probe fails, 0 otherwise (warn and n/a do not fail). The first
-- contact with a host whose profile has a "surface to the user" block prints its
-- conveniences and danger clocks once; hosts are remembered in the state dir.
local cli = require "gpurent.cli"
local json = require "gpurent.util.json"
local fs = require "gpurent.util.fs"
local profile_mod = require "gpurent.config.profile"
local gotchas = require "gpurent.gotchas"

local M = {summary = "probe a host for the platform's gotchas (AD1-AD9, universal ones)"}
M.usage = [[usage: gpurent check HOST [--profile NAME] [--json] [--fix] [--only ID,...]
                     [--peer HOST,...] [--code REMOTE_DIR] [--local DIR] [--ssh-config FILE]
                     [--accept-new-host]
Runs every gotcha probe of HOST's profile concurrently and prints id, status, evidence
and fix. Statuses: ok, warn, fail, n/a (the probe could not look; the reason is given).
  --profile NAME   profile name or YAML path (default: the profile whose connect.host_pattern
                   or alias_pattern fits HOST, local for HOST "local", else generic-ssh)
  --fix            apply the safe auto-fixes (AD1, AD2, AD7, U-THREADS) and re-probe
  --only IDS       run only these ids (comma-separated)
  --peer HOSTS     other instances for the cross-instance probes (AD3)
  --code DIR       the project's code dir on HOST (U-CODE-DRIFT, U-CRLF, AD9)
  --local DIR      the local git work tree to compare against (default .)
  --ssh-config FILE  read this ssh_config instead of ~/.ssh/config (like ssh -F)
  --accept-new-host  record an unknown host key (HOST's and the peers'), as
                   StrictHostKeyChecking accept-new; a changed key is still refused
Exit: 0 nothing failed, 1 a probe failed, 2 usage error.
First contact with a host prints the profile's conveniences and danger clocks once
(remembered in $GPURENT_STATE_DIR, else $XDG_STATE_HOME/gpurent).]]

local COLORS = {ok = "\27[32m", warn = "\27[33m", fail = "\27[31m", ["n/a"] = "\27[90m"}

local function state_dir()
  local env = os.getenv("GPURENT_STATE_DIR")
  if env and env ~= "" then return env end
  local xdg = os.getenv("XDG_STATE_HOME")
  if not xdg or xdg == "" then xdg = (os.getenv("HOME") or "/tmp") .. "/.local/state" end
  return xdg .. "/gpurent"
end
M.state_dir = state_dir

local function default_profile(host)
  if host == "local" or host == "localhost" then return "local" end
  -- a profile whose connect.alias_pattern / host_pattern fits HOST (gpurent.platform)
  return require("gpurent.platform").profile_for_host(host, host) or "generic-ssh"
end

local function split(s)
  local out = {}
  for x in (s or ""):gmatch("[^,%s]+") do out[#out + 1] = x end
  return out
end

-- The machine itself, for the local profile: same inst:sh contract as an SSH instance.
local Local = {}
Local.__index = Local
Local.__tostring = function() return "local" end
function Local:sh(cmd, opts)
  local out, err = os.tmpname(), os.tmpname()
  local ok, how, code = os.execute("(" .. cmd .. ") </dev/null >" .. out .. " 2>" .. err)
  local function slurp(p) local f = io.open(p, "rb"); local s = f and f:read("a") or ""; if f then f:close() end; os.remove(p); return s end
  local r = {stdout = slurp(out), stderr = slurp(err), code = how == "exit" and code or 128 + (code or 0),
             signal = how == "signal" and code or nil}
  if opts and opts.check and not ok then error("local command failed (" .. tostring(r.code) .. "): " .. cmd, 2) end
  return r
end

local function connect(host, p, opts)
  if p.connect.transport == "local" then return setmetatable({label = "local", profile = p}, Local) end
  local inst = gpurent.connect(host, {config = opts.ssh_config, accept_new_host = opts.accept_new_host,
    accept_flag = "--accept-new-host"})
  inst.profile = p
  return inst
end

-- First contact: remember the host; return the notice to show (nil if seen before).
local function first_contact(host, p)
  local s = p.surface
  if not s or (#s.conveniences == 0 and #s.danger_clocks == 0) then return nil end
  local dir = state_dir()
  local file = dir .. "/contacted.json"
  local seen = {}
  if fs.exists(file) then
    local okd, t = pcall(json.decode, fs.read_file(file), file)
    if okd and type(t) == "table" then seen = t end
  end
  local key = p.platform .. " " .. host
  if seen[key] then return nil end
  seen[key] = {at = os.time(), profile = p.platform}
  fs.mkdirs(dir)
  fs.atomic_write(file, json.encode_stable(seen) .. "\n")
  return {conveniences = s.conveniences, danger_clocks = s.danger_clocks}
end

local function print_notice(host, p, notice, color)
  local b, r = color and "\27[1m" or "", color and "\27[0m" or ""
  io.write(b, "First contact with ", host, " (", p.platform, "): worth knowing", r, "\n")
  for _, c in ipairs(notice.conveniences) do
    io.write("  + ", c.name or c.id or "", ": ", c.text, "\n")
  end
  for _, c in ipairs(notice.danger_clocks) do
    io.write("  ", color and COLORS.warn or "", "! ", r, c.id and (c.id .. ": ") or "", c.text, "\n")
  end
  io.write("\n")
end

local function print_table(results, color)
  local w = 2
  for _, r in ipairs(results) do w = math.max(w, #r.id) end
  io.write(string.format("%-" .. w .. "s  %-6s  %s\n", "ID", "STATUS", "EVIDENCE"))
  for _, r in ipairs(results) do
    local st = string.format("%-6s", r.status)
    if color then st = COLORS[r.status] .. st .. "\27[0m" end
    io.write(string.format("%-" .. w .. "s  %s  %s\n", r.id, st, r.evidence))
    if r.fixed then io.write(string.rep(" ", w + 10), "fixed: ", r.fixed, " (was ", r.before or "?", ")\n") end
    if r.fix_error then io.write(string.rep(" ", w + 10), "auto-fix failed: ", r.fix_error, "\n") end
    if r.status == "warn" or r.status == "fail" then
      io.write(string.rep(" ", w + 10), "fix: ", r.fix, "\n")
    end
  end
end

function M.main(args)
  local opts, rest = cli.options(args, {profile = "value", json = "flag", fix = "flag", only = "value",
    peer = "value", code = "value", ["local"] = "value", ssh_config = "value", accept_new_host = "flag"}, M.usage)
  if opts.help then io.write(M.usage, "\n"); return 0 end
  if #rest ~= 1 then gpurent.usage_error("check needs exactly one HOST\n" .. M.usage, 0) end
  local host = rest[1]
  local p = profile_mod.load(opts.profile or default_profile(host))
  local only = opts.only and split(opts.only)
  if only then
    for _, id in ipairs(only) do
      if not gotchas.get(id) then gpurent.usage_error("--only: unknown gotcha id " .. id, 0) end
    end
  end
  local inst = connect(host, p, opts)
  local peers = {}
  for _, ph in ipairs(split(opts.peer)) do peers[#peers + 1] = connect(ph, p, opts) end
  local notice = first_contact(host, p)
  local results = gotchas.run(inst, {profile = p, only = only, fix = opts.fix, peers = peers,
    code_dir = opts.code, local_dir = opts["local"]})
  local worst = gotchas.worst(results)
  if opts.json then
    io.write(json.encode_stable({host = host, profile = p.platform, worst = worst,
      first_contact = notice ~= nil, notice = notice or json.null, results = json.array(results)}), "\n")
  else
    local color = require("gpurent.util.pretty").use_color(1)
    if notice then print_notice(host, p, notice, color) end
    print_table(results, color)
  end
  if inst.close then pcall(inst.close, inst) end
  for _, peer in ipairs(peers) do if peer.close then pcall(peer.close, peer) end end
  return worst == "fail" and 1 or 0
end

return M
