-- gpurent trust: the person vouches for a project directory they cloned or downloaded,
-- so its profiles/, lua/, recipes/ and gpurent.lock may steer gpurent (issue 14).
-- The mechanism and the checks are lua/gpurent/config/trust.lua.
local cli = require "gpurent.cli"
local trust = require "gpurent.config.trust"

local M = {summary = "trust a project directory's profiles/, lua/, recipes/ and gpurent.lock"}
M.usage = [[usage: gpurent trust [DIR] [--json]     trust DIR (default: the project dir) as it is now
       gpurent trust --list [--json]    the directories you trusted
       gpurent trust --revoke [DIR]     forget DIR
gpurent uses the profiles/*.yaml, lua/**/*.lua, recipes/**/*.lua and gpurent.lock of the
project dir (nearest ancestor holding gpurent.lock, else the working directory) only
after you trust it. `trust` records each file's SHA-256 in
$XDG_CONFIG_HOME/gpurent/trusted.json (else ~/.config/gpurent); a file that is new or
changed later is refused until you run `gpurent trust DIR` again. Read the files first:
trusting a directory lets its code run with your privileges (it still cannot approve
a release or power-off). --json prints what the table shows as one JSON object.]]

local function show_trusted(real, entry)
  local names = {}
  for rel in pairs(entry.files) do names[#names + 1] = rel end
  table.sort(names)
  io.write("trusted ", real, " (", #names, " file", #names == 1 and "" or "s", "):\n")
  for _, rel in ipairs(names) do io.write("  ", entry.files[rel]:sub(1, 16), "  ", rel, "\n") end
  if #names == 0 then io.write("  (no gpurent.lock, profiles/*.yaml, lua/ or recipes/ files yet)\n") end
  io.write("recorded in ", trust.file_path(), "; a file added or changed later asks again\n")
end

local function list(as_json)
  local rows = trust.list()
  if as_json then
    local json = require "gpurent.util.json"
    io.write(json.encode_stable({trust_file = trust.file_path(), dirs = json.array(rows)}))
    return 0
  end
  if #rows == 0 then io.write("no trusted directories (", trust.file_path(), ")\n"); return 0 end
  for _, r in ipairs(rows) do
    io.write(r.dir, "  ", r.files, " file", r.files == 1 and "" or "s", "  ", r.at or "?",
             r.via and ("  (" .. r.via .. ")") or "", "\n")
  end
  return 0
end

local function revoke(dir)
  local done, real = trust.revoke(dir)
  io.write(done and ("revoked trust in " .. real .. "\n") or (real .. " was not trusted\n"))
  return 0
end

function M.main(args)
  local opts, rest = cli.options(args, {list = "flag", revoke = "flag", json = "flag"}, M.usage)
  if opts.help then io.write(M.usage, "\n"); return 0 end
  if #rest > 1 then gpurent.usage_error("trust takes at most one DIR\n" .. M.usage, 0) end
  if opts.list and (opts.revoke or #rest > 0) then gpurent.usage_error("--list takes no DIR and no --revoke", 0) end
  if opts.list then return list(opts.json) end
  if opts.json and opts.revoke then gpurent.usage_error("--json is for trust DIR and trust --list", 0) end
  local dir = rest[1] or gpurent.project_dir()
  if opts.revoke then return revoke(dir) end
  local entry, real = trust.record(dir)
  if opts.json then
    io.write(require("gpurent.util.json").encode_stable({dir = real, files = entry.files, at = entry.at,
      trust_file = trust.file_path()}))
    return 0
  end
  show_trusted(real, entry)
  return 0
end

return M
