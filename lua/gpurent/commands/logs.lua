-- gpurent logs RUN [-f]: a run's log (the job's stdout and stderr, written by the
-- wrapper to <active>/<run-id>/train.log on the box), read over SSH from the host the
-- ledger recorded for the run. -f follows it like tail -F, until the run's current
-- attempt is marked DONE or FAILED by the wrapper (lua/gpurent/lifecycle/detach.lua), or Ctrl-C.
local cli = require "gpurent.cli"
local errors = require "gpurent.util.errors"
local remote = require "gpurent.remote"

local M = {}
M.usage = [[usage: gpurent logs RUN [-f | --follow] [-n LINES | --lines LINES]
Prints the log of run RUN (a run id: gpurent history lists them) from the box the run
is on: the job's stdout and stderr as the wrapper wrote them to train.log in the run's
active directory. -n LINES prints only the last LINES lines (default: the whole log).
-f follows the log as it grows (tail -F) and stops once the run's current attempt is
marked DONE or FAILED, printing which; Ctrl-C stops following (the remote tail gets TERM).
Exit codes: 0 ok (with -f: the attempt ended DONE), 1 the log is missing or the attempt
FAILED, 2 usage, 255 the box cannot be reached.]]

local q = require("gpurent.util.shell").quote
local POLL_SECONDS = 1

-- -f and -n N are short options here (tail's), so they are taken out first.
local function shorts(args)
  local rest, o, i = {}, {}, 1
  while i <= #args do
    local a = args[i]
    if a == "--" then table.move(args, i, #args, #rest + 1, rest); break end
    if a == "-f" then o.follow = true
    elseif a == "-n" then
      o.lines = args[i + 1]
      if not o.lines then errors.usage("-n needs a number of lines\n" .. M.usage, 0) end
      i = i + 1
    elseif a:match("^%-n%d+$") then o.lines = a:sub(3)
    else rest[#rest + 1] = a end
    i = i + 1
  end
  return rest, o
end

local function parse(args)
  local rest, o = shorts(args)
  local opts, pos = cli.options(rest, {follow = "flag", lines = "value"}, M.usage)
  if #pos ~= 1 then errors.usage((#pos == 0 and "logs needs RUN" or "logs takes one RUN") .. "\n" .. M.usage, 0) end
  local follow, lines = o.follow or opts.follow, o.lines or opts.lines
  if lines then
    local n = math.tointeger(tonumber(lines))
    if not n or n < 0 then errors.usage(string.format("-n %q: give a whole number of lines, e.g. -n 100", lines), 0) end
    lines = n
  end
  return pos[1], follow, lines
end

-- The remote script: print (or follow) the log; while following, poll the current
-- attempt's markers and stop the tail once one is written. Bounded by the run's end.
local function script(r, follow, lines)
  local log = q(r.paths.log)
  local n = lines and tostring(lines) or "+1"
  if not follow then
    return string.format("[ -f %s ] || { echo 'no log at '%s >&2; exit 3; }; tail -n %s -- %s", log, log, q(n), log)
  end
  return remote.script("logs_follow", {LOG = r.paths.log, META = r.paths.meta, LINES = n, POLL = POLL_SECONDS})
end

local function stream(inst, text)
  local ended
  local r = inst:sh(text, {capture = false, on_line = function(line, s)
    local attempt, marker, detail = line:match("^gpurent%-logs%-end attempt (%S+) (%u+) ?(.*)$")
    if s == "stderr" and attempt then ended = {attempt = attempt, marker = marker, detail = detail}; return end
    local f = s == "stderr" and io.stderr or io.stdout
    f:write(line, "\n")
    f:flush()
  end})
  return r, ended
end

function M.main(args)
  local id, follow, lines = parse(args)
  local r = require("gpurent.lifecycle.run").load(id)
  -- the run's recorded ssh_config unless the environment names one (as Run:connect)
  local config = os.getenv("GPURENT_SSH_CONFIG")
  if not config or config == "" then config = r.ssh_config end
  local ok, inst = pcall(require("gpurent.transport.instance").connect, r.host, {config = config ~= "" and config or nil})
  if not ok then
    if errors.has_own_exit(inst) then error(inst, 0) end
    io.stderr:write("gpurent: logs ", id, ": ", errors.message(inst), "\n")
    return 255
  end
  local res, ended = stream(inst, script(r, follow, lines))
  inst:close()
  if res.code == 3 then return 1 end
  if ended then
    io.stderr:write(string.format("[logs] run %s attempt %s ended %s%s\n", id, ended.attempt, ended.marker,
      ended.detail ~= "" and (" (" .. ended.detail .. ")") or ""))
    return ended.marker == "DONE" and 0 or 1
  end
  return res.code == 0 and 0 or 1
end

return M
