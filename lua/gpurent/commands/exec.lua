-- gpurent exec HOST -- COMMAND: one command on an instance, the way `ssh HOST CMD`
-- runs it: through gpurent's connection (the same ssh_config resolution and host-key
-- checks as every recipe), stdout and stderr streamed as they come, and gpurent's
-- exit code is the remote command's. Ctrl-C (and --timeout) TERM the command's
-- remote process group, since closing a channel does not stop a remote command.
local cli = require "gpurent.cli"
local errors = require "gpurent.util.errors"

local M = {}
M.usage = [[usage: gpurent exec HOST [--timeout S] [--no-stdin] [--accept-new-host] -- COMMAND [ARGS ...]
Runs COMMAND on HOST (an ssh_config alias or user@host:port) through gpurent's SSH
connection: your ssh_config and known_hosts, the same host-key checks as `gpurent
check` and every recipe. The words after -- are joined with spaces into one remote
shell command line, as ssh does (quote what the remote shell must not expand).
stdout and stderr stream as they come; stdin, when it is not a terminal, is read to
its end and sent to the command (--no-stdin: send nothing, like ssh -n).
--timeout S stops the command after S seconds (its remote process group gets TERM;
exit code 124, as timeout(1)).
--accept-new-host records the key of a host never seen before (as
StrictHostKeyChecking=accept-new); a changed key is always refused.
Exit codes: the remote command's exit code; 128+N when a signal N ended it;
255 when gpurent could not run it (connection, authentication), like ssh; 124 after
--timeout;
2 usage; 3 host key refused; 130 interrupted (the remote command got TERM).]]

-- POSIX signal numbers (Linux) for an exit code of 128+N, as a shell reports it.
local SIGNALS = {HUP = 1, INT = 2, QUIT = 3, ILL = 4, TRAP = 5, ABRT = 6, BUS = 7, FPE = 8, KILL = 9,
  USR1 = 10, SEGV = 11, USR2 = 12, PIPE = 13, ALRM = 14, TERM = 15}

-- The words after "--" are the command; before it only options and HOST.
local function split(args)
  for i, a in ipairs(args) do
    if a == "--" then return table.move(args, 1, i - 1, 1, {}), table.move(args, i + 1, #args, 1, {}) end
  end
  return args, {}
end

local function parse(args)
  local before, command = split(args)
  local opts, pos = cli.options(before, {timeout = "value", no_stdin = "flag", accept_new_host = "flag"}, M.usage)
  if #pos == 0 then errors.usage("exec needs HOST\n" .. M.usage, 0) end
  if #pos > 1 then
    errors.usage(string.format("exec: %q after HOST: put the command after --: gpurent exec %s -- %s",
      pos[2], pos[1], table.concat(pos, " ", 2)), 0)
  end
  if #command == 0 then errors.usage("exec needs a command after --: gpurent exec " .. pos[1] .. " -- uname -a", 0) end
  local timeout
  if opts.timeout then
    timeout = tonumber(opts.timeout)
    if not timeout or timeout <= 0 or timeout ~= timeout or timeout == math.huge then
      errors.usage(string.format("--timeout %q: give the seconds as a positive number, e.g. --timeout 30", opts.timeout), 0)
    end
  end
  return pos[1], table.concat(command, " "), timeout, opts
end

-- stdin for the command: a terminal is not read (it would wait for the person).
local function input(opts)
  if opts.no_stdin or gpurent.isatty(0) then return nil end
  return io.stdin:read("a")
end

-- stdout goes straight to our fd 1, byte for byte, when that is a pipe or a
-- terminal. A regular file (`> out`, `>> log`) gets it line by line through our own
-- fd instead: opening /dev/stdout anew would truncate it and write at an offset of
-- its own, under what the shell writes next.
local function stdout_sink()
  local mode = require("lfs").attributes("/dev/stdout", "mode")
  if mode == "file" then return nil end
  return "/dev/stdout"
end

local function run(host, command, timeout, opts)
  local inst = require("gpurent.transport.instance").connect(host, {accept_new_host = opts.accept_new_host})
  local sink = stdout_sink()
  local r = inst:sh(command, {stdin = input(opts), timeout = timeout, capture = false, to = sink,
    on_line = function(line, stream)
      if stream == "stdout" and sink then return end -- the sink has those bytes already
      local f = stream == "stderr" and io.stderr or io.stdout
      f:write(line, "\n")
      f:flush()
    end})
  inst:close()
  return r
end

function M.main(args)
  local host, command, timeout, opts = parse(args)
  io.stdout:setvbuf("no")
  local ok, r = pcall(run, host, command, timeout, opts)
  if not ok then
    -- gpurent's own codes for usage, refusal and Ctrl-C; any other failure is ssh's 255
    if errors.has_own_exit(r) then error(r, 0) end
    io.stderr:write("gpurent: exec ", host, ": ", errors.message(r), "\n")
    if errors.is(r, "transport") and r.code == "timeout" and r.timeout then return 124 end -- as timeout(1)
    return 255
  end
  if r.code then return r.code end
  return 128 + (SIGNALS[tostring(r.signal):gsub("^SIG", "")] or 0)
end

return M
