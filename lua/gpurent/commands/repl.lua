-- `gpurent repl HOST [--profile NAME] [--accept-new-host]` | `gpurent repl --local`:
-- an interactive Lua REPL bound to a live instance (see lua/gpurent/repl/init.lua).
-- Without HOST it is a usage error, not a quiet local REPL: as `ssh` without a host
-- and `ansible-console` without an inventory, the command is about a machine, and a
-- REPL that silently has no instance lets `sh "nvidia-smi"` and `!cmd` run on the
-- laptop instead of the box. A local one is asked for by name: --local.
local cli = require "gpurent.cli"
local errors = require "gpurent.util.errors"

local usage = [[
usage: gpurent repl HOST [--profile NAME] [--accept-new-host]
       gpurent repl --local
Interactive Lua against a live instance: `inst` is the connection; sh "cmd", df(),
check(), put(), get(), meter(), gotchas(); !cmd streams a shell command; :help.
HOST is an ssh_config alias (gpurent host add) or user@host:port.
--local starts a REPL with no instance (the gpurent library only; !cmd runs locally).]]

return {
  usage = usage,
  main = function(args)
    local opts, pos = cli.options(args, {profile = "value", accept_new_host = "flag", ["local"] = "flag"}, usage)
    if #pos > 1 then errors.usage("repl takes one HOST\n" .. usage, 0) end
    if opts["local"] and pos[1] then
      errors.usage("repl: --local and HOST " .. pos[1] .. " contradict each other: give one\n" .. usage, 0)
    end
    if not opts["local"] and not pos[1] then
      errors.usage("repl needs HOST (an ssh alias: gpurent repl HOST); for a REPL without an instance: " ..
        "gpurent repl --local\n" .. usage, 0)
    end
    if opts["local"] and (opts.profile or opts.accept_new_host) then
      errors.usage("repl --local: --profile and --accept-new-host belong to a REPL on a HOST", 0)
    end
    return require("gpurent.repl").run({host = pos[1], profile = opts.profile,
                                        accept_new_host = opts.accept_new_host})
  end,
}
