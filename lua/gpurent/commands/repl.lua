-- `gpurent repl [HOST] [--profile NAME] [--accept-new-host]`: an interactive Lua
-- REPL bound to a live instance (see lua/gpurent/repl.lua).
local cli = require "gpurent.cli"

local usage = [[
usage: gpurent repl [HOST] [--profile NAME] [--accept-new-host]
Interactive Lua against a live instance: `inst` is the connection; sh "cmd", df(),
check(), put(), get(), meter(), gotchas(); !cmd streams a shell command; :help.
Without HOST the REPL is local (no instance).]]

return {
  summary = "interactive Lua REPL against a live instance",
  usage = usage,
  main = function(args)
    local opts, pos = cli.options(args, {profile = "value", accept_new_host = "flag"}, usage)
    if opts.help then io.write(usage, "\n"); return 0 end
    if #pos > 1 then gpurent.usage_error("repl takes one HOST\n" .. usage, 0) end
    return require("gpurent.repl").run({host = pos[1], profile = opts.profile,
                                        accept_new_host = opts.accept_new_host})
  end,
}
