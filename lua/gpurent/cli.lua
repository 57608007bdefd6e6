-- gpurent.cli: commands written in Lua. `gpurent NAME args...` runs
-- require("gpurent.commands.NAME").main(args); a command module returns
-- {summary = "...", usage = "...", main = function(args) ... return exit_code end}.
-- cli.options() is the small getopt-like parser those commands share.
local errors = require "gpurent.errors"

local cli = {}

-- cli.options(args, spec) -> opts, positional
-- spec: {name = "flag" | "value", ...}; "-h"/"--help" sets opts.help.
-- Accepts --name, --name=value, --name value; "--" ends options.
function cli.options(args, spec, usage)
  local opts, positional, i = {}, {}, 1
  while i <= #args do
    local a = args[i]
    if a == "--" then
      for j = i + 1, #args do positional[#positional + 1] = args[j] end
      break
    elseif a == "-h" or a == "--help" then
      opts.help = true
    elseif a:sub(1, 2) == "--" then
      local name, value = a:match("^%-%-([^=]+)=(.*)$")
      name = name or a:sub(3)
      local key = name:gsub("%-", "_")
      local kind = spec[key]
      if not kind then errors.usage("unknown option --" .. name .. (usage and ("\n" .. usage) or ""), 0) end
      if kind == "flag" then
        if value then errors.usage("option --" .. name .. " takes no value", 0) end
        opts[key] = true
      else
        if not value then
          i = i + 1
          value = args[i]
          if value == nil then errors.usage("option --" .. name .. " needs a value", 0) end
        end
        opts[key] = value
      end
    else
      positional[#positional + 1] = a
    end
    i = i + 1
  end
  return opts, positional
end

local function help(args)
  local file = args[1]
  if not file then
    io.write("usage: gpurent help RECIPE.lua\n")
    return 0
  end
  local name = file
  local mod_ok, mod = pcall(require, "gpurent.commands." .. file)
  if mod_ok and type(mod) == "table" then
    io.write(mod.usage or mod.summary or "", "\n")
    return 0
  end
  io.write(require("gpurent.recipe").help_text(name))
  return 0
end

function cli.main(cmd, args)
  if cmd == "help" then return help(args) end
  if not cmd:match("^[%w_%-]+$") then errors.usage("unknown command " .. string.format("%q", cmd), 0) end
  local modname = "gpurent.commands." .. cmd:gsub("%-", "_")
  local ok, mod = pcall(require, modname)
  if not ok then
    if tostring(mod):find("module '" .. modname .. "' not found", 1, true) then
      errors.usage("unknown command '" .. cmd .. "' (see gpurent help)", 0)
    end
    error(mod, 0)
  end
  return mod.main(args)
end

return cli
