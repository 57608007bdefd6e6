-- gpurent verify DIR: check a pulled result directory against the PULL_MANIFEST.json
-- pulled with it (MANIFEST.md): exact file set, sizes, SHA-256, checkpoints load;
-- only then write PULL_VERIFIED.json beside it. `--build ROSTER --run-id ID` writes a
-- PULL_MANIFEST.json for DIR instead (the builder, for a durable tier you can reach).
local cli = require "gpurent.cli"
local errors = require "gpurent.util.errors"
local fs = require "gpurent.util.fs"
local manifest = require "gpurent.lifecycle.manifest"

local M = {summary = "verify a pulled result directory and write PULL_VERIFIED.json"}
M.usage = [[usage:
  gpurent verify DIR [--load-cmd CMD] [--json]
  gpurent verify DIR --build ROSTER_FILE --run-id ID [--require a,b] [--json]
Verify: DIR holds the pulled results and their PULL_MANIFEST.json. The local file set
(ignoring the two PULL_*.json files and *.tmp) must equal the manifest's exactly, then
every size and SHA-256 must match, then every checkpoint (*.pth, *.pt, *.ckpt) must load:
CMD is run by the shell with {} replaced by the quoted path (appended if there is no {}),
exit status 0 meaning it loaded. Only then is PULL_VERIFIED.json written.
Build: write DIR/PULL_MANIFEST.json from an explicit roster (one result directory per
line; # comments and blank lines ignored); each directory must hold the required files
(default best.pth,best_metrics.json).
--json: on success, one JSON object {"dir", "run_id", "files", "bytes", "wrote"} instead
of the line (a failed check is an error on stderr, as without --json).
Exit codes: 0 verified (or built), 1 a check failed, 2 usage.]]

local function as_json(doc)
  io.write(require("gpurent.util.json").encode_stable(doc))
  return 0
end

function M.main(args)
  local opts, pos = cli.options(args, {load_cmd = "value", build = "value", run_id = "value", require = "value",
    json = "flag"}, M.usage)
  if opts.help then io.write(M.usage, "\n"); return 0 end
  local dir = pos[1]
  if not dir or #pos > 1 then errors.usage(M.usage, 0) end
  if not fs.is_dir(dir) then errors.usage(dir .. " is not a directory", 0) end
  dir = dir:gsub("(.)/+$", "%1")
  if opts.build then
    if not opts.run_id then errors.usage("--build needs --run-id ID", 0) end
    local required
    if opts.require then
      required = {}
      for r in opts.require:gmatch("[^,]+") do required[#required + 1] = r end
    end
    local m = manifest.build(dir, fs.read_file(opts.build), {run_id = opts.run_id, required = required})
    if opts.json then
      return as_json({dir = dir, run_id = m.run_id, files = m.totals.files, bytes = m.totals.bytes,
        wrote = dir .. "/" .. manifest.FILE})
    end
    io.write(string.format("wrote %s/%s: run %s, %d files, %d bytes\n", dir, manifest.FILE, m.run_id,
      m.totals.files, m.totals.bytes))
    return 0
  end
  local v = manifest.verify(dir, {load_cmd = opts.load_cmd})
  if opts.json then
    return as_json({dir = dir, run_id = v.run_id, files = v.files, bytes = v.bytes, wrote = dir .. "/" .. manifest.VERIFIED_FILE})
  end
  io.write(string.format("verified %s: run %s, %d files, %d bytes; wrote %s\n", dir, v.run_id, v.files, v.bytes,
    manifest.VERIFIED_FILE))
  return 0
end

return M
