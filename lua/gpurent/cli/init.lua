-- gpurent.cli: commands written in Lua, and the one command table. `gpurent NAME
-- args...` runs require("gpurent.commands.NAME").main(args); a command module returns
-- {usage = "usage: gpurent NAME ...", main = function(args) ... return exit_code end}.
-- cli.COMMANDS is the single list of commands: `gpurent help`, the man page
-- (docs/gpurent.1) and the bash/zsh completions (contrib/) are all generated from it
-- (lua/gpurent/cli/clidoc.lua), so a command cannot be missing from one of them.
-- cli.options() is the small getopt-like parser the commands share.
local errors = require "gpurent.util.errors"

local cli = {}

-- name, synopsis (after "gpurent NAME"), one-line summary. builtin: parsed in
-- runtime/main.c (its usage text is here, in BUILTIN_USAGE).
cli.COMMANDS = {
  {name = "run", args = "RECIPE [key=value ...] [-- ARGS]", builtin = true,
   summary = "run a recipe: a file, or a name listed by `gpurent recipes`"},
  {name = "recipes", args = "[--json | --names]", summary = "the recipes you can run by name, with their descriptions"},
  {name = "exec", args = "HOST [--timeout S] -- COMMAND [ARGS]",
   summary = "run one command on an instance; output streams, its exit code is gpurent's"},
  {name = "ssh", args = "HOST [-- COMMAND]", summary = "an interactive shell on an instance (OpenSSH, same config and host keys)"},
  {name = "logs", args = "RUN [-f] [-n LINES]", summary = "a run's log, read from the box; -f follows it"},
  {name = "repl", args = "HOST | --local", summary = "interactive Lua against a live instance"},
  {name = "tunnel", args = "HOST [LOCAL:]REMOTE ...",
   summary = "forward local ports to ports on an instance (ssh -L), e.g. TensorBoard"},
  {name = "tensorboard", args = "HOST [--restart]",
   summary = "the pinned TensorBoard's runs; --restart evicts stale runs (deleted or renamed)"},
  {name = "put", args = "HOST SRC... DST [--json] [--dry-run] [--streams N]",
   summary = "copy local files and trees to an instance: resumable, SHA-256 verified, many files in flight"},
  {name = "get", args = "HOST SRC... DST [--json] [--dry-run] [--streams N]",
   summary = "copy files and trees from an instance: resumable, SHA-256 verified, many files in flight"},
  {name = "check", args = "HOST", summary = "probe an instance for known gotchas, as a table"},
  {name = "host", args = "add|set-port|list ...", summary = "add or update the ssh alias of a rented instance"},
  {name = "watch", args = "RUN [--once] [--finish]", summary = "re-attach to a run and watch it until it finishes, dies or stalls"},
  {name = "status", args = "[--json]", summary = "instances, meters, accrued cost, danger clocks, current run"},
  {name = "history", args = "[--run ID] [--json]", summary = "runs recorded in the ledger, or one run's events"},
  {name = "cost", args = "[--since DATE] [--json]", summary = "accrued cost per run and per instance"},
  {name = "billing", args = "status|power-on|power-off|release|create|budget|autostop|... INSTANCE",
   summary = "the platform's meter, balance, budgets, danger clocks; create, power-on/off and release (gated)"},
  {name = "clean", args = "HOST [--delete PATH... --approve HOST]",
   summary = "list an instance's space and inode hogs; delete exact listed targets with approval"},
  {name = "verify", args = "DIR [--json]", summary = "verify a pulled result directory and write PULL_VERIFIED.json"},
  {name = "lib", args = "add|list|update|remove|sync ...", summary = "team-shared recipe libraries (git, pinned in gpurent.lock)"},
  {name = "trust", args = "[DIR] | --list | --revoke [DIR]",
   summary = "let a project's profiles/, lua/, recipes/ and gpurent.lock steer gpurent"},
  {name = "version", args = "", builtin = true, summary = "versions of gpurent and the libraries it links"},
  {name = "help", args = "[COMMAND | RECIPE]", summary = "this text, a command's usage, or a recipe's parameters"},
}

local BUILTIN_USAGE = {
  run = [[usage: gpurent run RECIPE [key=value ...] [-- ARGS ...]
Runs a recipe. RECIPE is a file (a path that exists), or a name: `autodl_train`,
`autodl_train.lua` or `recipes/autodl_train.lua` is looked up in the trusted project's
recipes/, then gpurent's installed recipes/; `LIB/NAME` is recipe NAME of team library
LIB (gpurent lib). `gpurent recipes` lists them. key=value pairs reach the recipe as the
table `params` (validated against its declaration first: exit 2 on an unknown key, a
missing required one or a wrong type); words after -- reach it as arg[1..n].
`gpurent help RECIPE` lists the parameters a recipe declares.]],
  version = [[usage: gpurent version   (also gpurent -V, gpurent --version)
Prints the versions of gpurent, Lua, libssh2, libyaml, OpenSSL, libcurl and SQLite.]],
}

-- cli.find(name) -> the command table's entry, or nil.
function cli.find(name)
  for _, c in ipairs(cli.COMMANDS) do if c.name == name then return c end end
  return nil
end

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

-- The command's module, nil when gpurent's library has none (asked of the library's
-- directory, where gpurent.* modules load from, not of require's error text).
local function module_of(name)
  local modname = "gpurent.commands." .. name:gsub("%-", "_")
  if not package.searchpath(modname, require("gpurent").share_dir() .. "/lua/?.lua") then return nil end
  return require(modname)
end

-- cli.usage_of(name) -> the usage text of command `name` (nil when there is none).
function cli.usage_of(name)
  if BUILTIN_USAGE[name] then return BUILTIN_USAGE[name] end
  if name == "help" then return cli.help_usage() end
  local mod = cli.find(name) and module_of(name)
  return mod and (mod.usage or mod.summary) or nil
end

function cli.help_usage()
  return [[usage: gpurent help [COMMAND | RECIPE]
Without an argument: the commands, global options, exit codes and environment.
COMMAND: that command's usage (the same as `gpurent COMMAND --help`).
RECIPE: a recipe file or name (see `gpurent recipes`): its description and parameters.]]
end

-- The top-level help: every command of the table, options, exit codes, environment.
function cli.overview()
  local lines = {"usage: gpurent [-v|--verbose] [--approve INSTANCE] COMMAND [ARGS]",
    "       gpurent -e CODE         run a Lua chunk with the gpurent library loaded",
    "       gpurent -V | --version  gpurent -h | --help", "", "commands:"}
  for _, c in ipairs(cli.COMMANDS) do
    lines[#lines + 1] = string.format("  %-10s %s", c.name, c.summary)
  end
  lines[#lines + 1] = "`gpurent help COMMAND` or `gpurent COMMAND --help` shows a command's usage."
  return table.concat(lines, "\n") .. "\n\n" .. cli.OPTIONS_TEXT
end

cli.OPTIONS_TEXT = [[
options:
  -v, --verbose      errors keep gpurent's internal file:line and add the traceback
  --approve NAME     approve destructive actions (release, power-off) on instance NAME
                     for this command; repeatable, also accepted after the command's
                     own arguments (not after --)
  -e CODE            run a Lua chunk
  -V, --version      versions of gpurent and its libraries
  -h, --help         this text

exit codes:
  0    ok
  1    recipe or runtime error
  2    usage error
  3    refused by a safety gate (teardown gate, free-space gate, host key)
  130  interrupted (SIGINT)

environment:
  NO_COLOR           (any value) no colour in output; so does TERM=dumb or a non-terminal
  GPURENT_PATH       extra module directories, colon-separated, searched last
  GPURENT_STATE_DIR  where the ledger lives (else $XDG_STATE_HOME/gpurent)
  API token          the variables the profile's billing.api.token names (never printed)

module search path: the recipe's directory, the project's lua/ (nearest
gpurent.lock, else the working directory; used once you `gpurent trust` it),
gpurent's own library, then each directory of GPURENT_PATH (colon-separated).
gpurent.* modules load only from gpurent's own library. Show the path:
gpurent -e 'print(gpurent.path())'. See docs/SECURITY.md and docs/API.md.
]]

local function help(args)
  local topic = args[1]
  if #args > 1 then errors.usage("help takes one COMMAND or RECIPE\n" .. cli.help_usage(), 0) end
  if not topic then io.write(cli.overview()); return 0 end
  if topic == "-h" or topic == "--help" then topic = "help" end
  local usage = cli.usage_of(topic)
  if usage then io.write(usage, "\n"); return 0 end
  local recipe = require "gpurent.lifecycle.recipe"
  if not recipe.find(topic) then
    errors.usage(string.format("help: %q is neither a command (gpurent help lists them) nor a recipe " ..
      "(gpurent recipes lists them; a file path works too)", topic), 0)
  end
  io.write(recipe.help_text(topic))
  return 0
end

-- -h / --help anywhere before "--" asks for the usage, whatever else is on the line.
local function wants_help(args)
  for _, a in ipairs(args) do
    if a == "--" then return false end
    if a == "-h" or a == "--help" then return true end
  end
  return false
end

function cli.main(cmd, args)
  if cmd == "help" then return help(args) end
  if not cmd:match("^[%w_%-]+$") or not cli.find(cmd) then
    errors.usage(string.format("unknown command '%s' (gpurent help lists the commands; " ..
      "a recipe runs with gpurent run NAME)", cmd), 0)
  end
  local mod = module_of(cmd)
  if not mod then errors.usage("unknown command '" .. cmd .. "' (see gpurent help)", 0) end
  if wants_help(args) then io.write(mod.usage or mod.summary or "", "\n"); return 0 end
  -- owed at every command: the release clocks' due reminders and held pushes (never fatal)
  if require("gpurent.state.dir").has_pending() then  -- one stat: nothing due, nothing loaded
    pcall(function() require("gpurent.billing.clock").on_command() end)
  end
  return mod.main(args)
end

return cli
