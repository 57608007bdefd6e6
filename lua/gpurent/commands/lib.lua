-- gpurent lib: add, list, update, remove and sync team-shared recipe libraries
-- (git repositories pinned in gpurent.lock). The mechanism is lua/gpurent/config/lib.lua.
local cli = require "gpurent.cli"
local json = require "gpurent.util.json"
local lib = require "gpurent.config.lib"

local M = {summary = "team-shared recipe libraries (git, pinned in gpurent.lock)"}
M.usage = [[usage: gpurent lib add NAME SOURCE [--ref REF]   clone SOURCE (git URL or local path), pin its commit
       gpurent lib list [--json]                 name, source, ref, commit, dirty?
       gpurent lib update NAME                   move the pin to REF's newest commit
       gpurent lib remove NAME [--force]         drop the pin and the checkout (--force: even
                                                 with local changes, which are discarded)
       gpurent lib sync                          make this machine match the lock
The lock is the project's gpurent.lock (nearest ancestor of the working directory;
`touch gpurent.lock` to start one), else $XDG_CONFIG_HOME/gpurent/gpurent.lock.
Checkouts live in $GPURENT_DATA_DIR/libs (else $XDG_DATA_HOME/gpurent/libs), one
set per lock, so projects never share one. NAME: letters, digits, '_' and '-'.
A library NAME provides `require "NAME.module"`, `gpurent run NAME/recipe.lua` and
its profiles/*.yaml by name (`--profile NAME`, after your config dir's).
Libraries are code: `add` prints the source and commit it trusts.]]

local function need(rest, n, what)
  if #rest ~= n then gpurent.usage_error(what .. "\n" .. M.usage, 0) end
end

local function list(opts)
  local rows, lockpath, scope = lib.list()
  if opts.json then
    io.write(json.encode_stable({lock = lockpath, scope = scope, libraries = json.array(rows)}))
    return 0
  end
  if #rows == 0 then io.write("no libraries in ", lockpath, " (", scope, " lock)\n"); return 0 end
  local t = {{"NAME", "SOURCE", "REF", "COMMIT", "DIRTY", "NOTE"}}
  for _, r in ipairs(rows) do
    t[#t + 1] = {r.name, r.source, r.ref or "-", r.commit:sub(1, 12), r.dirty, r.note or ""}
  end
  io.write(require("gpurent.state.ledger").table_text(t))
  io.write("(", scope, " lock ", lockpath, ")\n")
  return 0
end

function M.main(args)
  local opts, rest = cli.options(args, {ref = "value", json = "flag", force = "flag"}, M.usage)
  if opts.help then io.write(M.usage, "\n"); return 0 end
  if #rest == 0 then gpurent.usage_error("lib needs a command\n" .. M.usage, 0) end
  local verb = table.remove(rest, 1)
  if opts.ref and verb ~= "add" then gpurent.usage_error("--ref is for lib add", 0) end
  if opts.force and verb ~= "remove" then gpurent.usage_error("--force is for lib remove", 0) end
  if opts.json and verb ~= "list" then gpurent.usage_error("--json is for lib list", 0) end
  if verb == "add" then
    need(rest, 2, "lib add takes NAME and SOURCE")
    lib.add(rest[1], rest[2], opts.ref)
  elseif verb == "list" then
    need(rest, 0, "lib list takes no arguments")
    return list(opts)
  elseif verb == "update" then
    need(rest, 1, "lib update takes NAME")
    lib.update(rest[1])
  elseif verb == "remove" then
    need(rest, 1, "lib remove takes NAME")
    lib.remove(rest[1], io.stdout, {force = opts.force})
  elseif verb == "sync" then
    need(rest, 0, "lib sync takes no arguments")
    lib.sync()
  else
    gpurent.usage_error("unknown lib command " .. verb .. "\n" .. M.usage, 0)
  end
  return 0
end

return M
