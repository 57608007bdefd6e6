-- gpurent tensorboard HOST [--restart]: the runs the platform's pinned TensorBoard
-- lists (its own /data/runs), and, on request, its restart (seed AD7): a run once
-- loaded is never dropped, so deleted or renamed runs stay listed (stale tags) until
-- the server restarts. The restart stops the exact process serving the profile's
-- pinned logdir on its port and starts the same command line again, detached
-- (lua/gpurent/remote/tb_restart.sh); the runs before and after, and the ones it
-- evicted, are printed. `gpurent tunnel HOST PORT` shows it locally.
local cli = require "gpurent.cli"
local errors = require "gpurent.util.errors"
local json = require "gpurent.util.json"
local profile_mod = require "gpurent.config.profile"
local remote = require "gpurent.remote"

local M = {summary = "the pinned TensorBoard's runs; --restart evicts stale runs (deleted or renamed)"}
M.usage = [[usage: gpurent tensorboard HOST [--restart] [--port N] [--wait S] [--profile NAME] [--ssh-config FILE]
Lists the runs HOST's pinned TensorBoard serves (its /data/runs, read on the box).
--restart: stop the exact TensorBoard process serving the profile's pinned logdir on
its port and start the same command line again (detached), so runs deleted or renamed
since it loaded them are no longer listed; prints the runs before and after.
  --port N    the TensorBoard's port on the box (default: the profile's)
  --wait S    seconds to wait for the restarted server to answer (10)
See it locally with `gpurent tunnel HOST PORT`.
Exit: 0 listed (or restarted and answering), 1 not found / not answering, 2 usage.]]

local function runs_of(stdout, prefix)
  local rc = tonumber(stdout:match(prefix .. "tbrc (%d+)"))
  local body = stdout:match(prefix .. "tbbody ([^\n]*)")
  if rc ~= 0 or not body then return nil, "no answer from /data/runs (curl exit " .. tostring(rc) .. ")" end
  local ok, list = pcall(json.decode, body, "/data/runs")
  if not ok or type(list) ~= "table" then return nil, "/data/runs answered something else than a JSON list" end
  return list
end

local function show(list) return #list > 0 and table.concat(list, ", ") or "(none)" end

function M.main(args)
  local opts, pos = cli.options(args, {restart = "flag", port = "value", wait = "value", profile = "value",
    ssh_config = "value", accept_new_host = "flag"}, M.usage)
  if opts.help then io.write(M.usage, "\n"); return 0 end
  local host = pos[1]
  if not host or #pos > 1 then errors.usage(M.usage, 0) end
  local p = profile_mod.load(opts.profile or require("gpurent.platform").profile_for_host(host, host) or "generic-ssh")
  local tb = p.network and p.network.tensorboard
  if not tb or not tb.pinned then
    errors.usage("tensorboard: profile " .. p.platform .. " pins no TensorBoard (network.tensorboard.pinned)", 0)
  end
  local port = opts.port and math.tointeger(tonumber(opts.port)) or tb.port
  if not port or port < 1 or port > 65535 then errors.usage("tensorboard: --port " .. tostring(opts.port) .. " is not a port", 0) end
  local wait = opts.wait and tonumber(opts.wait) or 10
  if not wait or wait <= 0 then errors.usage("tensorboard: --wait " .. tostring(opts.wait) .. " is not a number of seconds", 0) end
  local inst = gpurent.connect(host, {config = opts.ssh_config, accept_new_host = opts.accept_new_host,
    accept_flag = "--accept-new-host"})
  if not opts.restart then
    local res = inst:sh(remote.script("tb_list", {PORT = port}), {timeout = 30, idempotent = true})
    local list, why = runs_of(res.stdout, "")
    if not list then io.stderr:write("tensorboard on ", host, " port ", port, ": ", why, "\n"); return 1 end
    io.write(string.format("%s: TensorBoard on 127.0.0.1:%d (logdir %s) lists %d run(s): %s\n", host, port, tb.logdir,
      #list, show(list)))
    return 0
  end
  local res = inst:sh(remote.script("tb_restart", {LOGDIR = tb.logdir, PORT = port, WAIT = math.ceil(wait),
    LOG = "/tmp/gpurent-tensorboard.log"}), {timeout = wait + 60})
  local bad = res.stdout:match("bad ([^\n]+)")
  if bad then io.stderr:write("tensorboard on ", host, ": ", bad, ": not restarted\n"); return 1 end
  local before = runs_of(res.stdout, "before ") or {}
  local after, why = runs_of(res.stdout, "after ")
  io.write(string.format("%s: TensorBoard pid %s stopped; restarted as pid %s (same command line)\n", host,
    tostring(res.stdout:match("pid (%d+)")), tostring(res.stdout:match("restarted (%d+)"))))
  io.write("  runs before: ", show(before), "\n")
  if not after then io.stderr:write("tensorboard on ", host, ": restarted, but ", why, " within ", wait, " s\n"); return 1 end
  local now, evicted = {}, {}
  for _, n in ipairs(after) do now[n] = true end
  for _, n in ipairs(before) do if not now[n] then evicted[#evicted + 1] = n end end
  io.write("  runs after:  ", show(after), "\n")
  io.write("  evicted (stale: deleted or renamed since loaded): ", show(evicted), "\n")
  return 0
end

return M
