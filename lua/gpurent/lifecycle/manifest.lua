-- gpurent.manifest: PULL_MANIFEST.json (written beside the results on the durable
-- tier) and PULL_VERIFIED.json (written beside the pulled copy, only on success),
-- exactly in the layout of ../shared/design/MANIFEST.md, so that gpurent and the
-- remote-gpu-trainer scripts can verify each other's pulls.
--
--   manifest.parse_roster(text) -> {names...}            raises on a bad roster
--   manifest.build(root, roster, {run_id=, required=, write=true}) -> m, text
--   manifest.validate(m [, name]) -> m                   schema and path rules
--   manifest.verify(dir, {load_cmd=|load_check=fn, checkpoint_patterns=}) -> verified
--   manifest.read_verified(dir) -> verified, m, manifest_text   (marker matches the copy)
--   manifest.compare(a, b) -> {differences...}           path, bytes, sha256 per file
--
-- Every check here raises a plain error listing each problem found; the teardown
-- gate (gpurent.gate) turns them into refusals.
local fs = require "gpurent.util.fs"
local hash = require "gpurent.util.hash"
local json = require "gpurent.util.json"

local manifest = {}

manifest.SCHEMA = "remote-gpu-trainer/PULL/v1"
manifest.VERIFIED_SCHEMA = "remote-gpu-trainer/PULL-VERIFIED/v1"
manifest.FILE = "PULL_MANIFEST.json"
manifest.VERIFIED_FILE = "PULL_VERIFIED.json"
manifest.REQUIRED = {"best.pth", "best_metrics.json"}   -- the skill's required files per result dir
manifest.CHECKPOINTS = {"%.pth$", "%.pt$", "%.ckpt$"}

local function utc_now() return os.date("!%Y-%m-%dT%H:%M:%S+00:00") end

local function fail(what, problems)
  local shown = {}
  for i = 1, math.min(#problems, 20) do shown[i] = "  " .. problems[i] end
  if #problems > 20 then shown[#shown + 1] = string.format("  ... and %d more", #problems - 20) end
  error(what .. ":\n" .. table.concat(shown, "\n"), 0)
end

-- ---- roster ------------------------------------------------------------------

function manifest.parse_roster(text)
  if type(text) ~= "string" then error("roster: expected text", 2) end
  text = text:gsub("^\239\187\191", "")               -- UTF-8 BOM
  if not utf8.len(text) then error("roster: not UTF-8", 0) end
  local names, seen, problems = {}, {}, {}
  local n = 0
  for line in (text .. "\n"):gmatch("([^\n]*)\n") do
    n = n + 1
    line = line:gsub("\r$", ""):match("^%s*(.-)%s*$")
    if line ~= "" and line:sub(1, 1) ~= "#" then
      if not line:match("^[%w%._%-]+$") or line == "." or line == ".." then
        problems[#problems + 1] = string.format("line %d: %q: use letters, digits, '.', '_', '-' only", n, line)
      elseif seen[line] then
        problems[#problems + 1] = string.format("line %d: %s is listed twice (first on line %d)", n, line, seen[line])
      else
        seen[line] = n
        names[#names + 1] = line
      end
    end
  end
  if #problems > 0 then fail("roster", problems) end
  if #names == 0 then error("roster: empty (an empty roster is a failure, not a success)", 0) end
  return names
end

-- ---- walking a tree ------------------------------------------------------------

-- Regular files under dir (relative paths, sorted); symlinks and specials are problems.
local function walk(root, rel, out, problems, skip)
  local dir = rel == "" and root or (root .. "/" .. rel)
  local entries = {}
  for name in fs.dir(dir) do
    if name ~= "." and name ~= ".." then entries[#entries + 1] = name end
  end
  table.sort(entries)
  for _, name in ipairs(entries) do
    local r = rel == "" and name or (rel .. "/" .. name)
    local full = root .. "/" .. r
    local mode = fs.symlinkattributes(full, "mode")
    if skip and skip(r, mode) then
      -- ignored
    elseif mode == "link" then
      problems[#problems + 1] = r .. ": a symlink (refused: it may point off the tier)"
    elseif mode == "directory" then
      walk(root, r, out, problems, skip)
    elseif mode == "file" then
      out[#out + 1] = r
    else
      problems[#problems + 1] = r .. ": not a regular file (" .. tostring(mode) .. ")"
    end
  end
  return out
end

-- ---- builder -------------------------------------------------------------------

local function is_tmp(rel) return rel:match("%.tmp$") ~= nil end

function manifest.build(root, roster, opts)
  opts = opts or {}
  if type(opts.run_id) ~= "string" or opts.run_id == "" then error("manifest.build: run_id is required", 2) end
  if not fs.is_dir(root) then error("manifest.build: result root " .. tostring(root) .. " is not a directory", 0) end
  local names = type(roster) == "table" and manifest.parse_roster(table.concat(roster, "\n"))
    or manifest.parse_roster(roster)
  local required = opts.required or manifest.REQUIRED
  local problems, expected = {}, {}
  for _, n in ipairs(names) do expected[n] = true end
  local present = {}
  for name in fs.dir(root) do
    if name ~= "." and name ~= ".." and name ~= manifest.FILE and name ~= manifest.VERIFIED_FILE
       and not is_tmp(name) and not name:match("%.tmp%.%d+$") then
      local mode = fs.symlinkattributes(root .. "/" .. name, "mode")
      if mode == "directory" then
        present[name] = true
        if not expected[name] then problems[#problems + 1] = name .. "/: unexpected (not in the roster)" end
      elseif mode == "link" then
        problems[#problems + 1] = name .. ": a symlink (refused)"
      else
        problems[#problems + 1] = name .. ": unexpected " .. tostring(mode) .. " at the top of the result root"
      end
    end
  end
  local files = {}
  local total = 0
  for _, n in ipairs(names) do
    if not present[n] then
      problems[#problems + 1] = n .. "/: missing (listed in the roster)"
    else
      local list = walk(root, n, {}, problems, function(r) return is_tmp(r) end)
      local have = {}
      for _, r in ipairs(list) do have[r] = true end
      for _, req in ipairs(required) do
        if not have[n .. "/" .. req] then problems[#problems + 1] = n .. "/" .. req .. ": required file missing" end
      end
      for _, r in ipairs(list) do
        local hex, bytes = hash.sha256_file(root .. "/" .. r)
        files[#files + 1] = {path = r, bytes = bytes, sha256 = hex}
        total = total + bytes
      end
    end
  end
  if #files == 0 then problems[#problems + 1] = "zero files (an empty aggregation is a failure)" end
  if #problems > 0 then fail("PULL_MANIFEST " .. root, problems) end
  table.sort(files, function(a, b) return a.path < b.path end)
  table.sort(names)
  local m = {
    schema = manifest.SCHEMA, run_id = opts.run_id, created_at_utc = opts.created_at_utc or utc_now(),
    top_level_dirs = json.array(names), files = json.array(files),
    totals = {files = #files, bytes = total},
  }
  local text = json.encode_stable(m)
  if opts.write ~= false then fs.atomic_write(root .. "/" .. manifest.FILE, text) end
  return m, text
end

-- ---- validation ------------------------------------------------------------------

local function bad_path(p)
  if type(p) ~= "string" or p == "" then return "empty or not a string" end
  if p:sub(1, 1) == "/" or p:sub(1, 1) == "\\" then return "absolute" end
  if p:find("\\", 1, true) then return "contains a backslash" end
  for part in p:gmatch("[^/]+") do
    if part == ".." then return "contains .." end
    if part == "." then return "contains ." end
  end
  if p:find("//", 1, true) or p:sub(-1) == "/" then return "not a normal relative path" end
  return nil
end

local function is_int(v) return math.type(v) == "integer" or (type(v) == "number" and v == math.floor(v)) end

function manifest.validate(m, name)
  name = name or manifest.FILE
  if type(m) ~= "table" then error(name .. ": not a JSON object", 0) end
  local problems = {}
  if m.schema ~= manifest.SCHEMA then
    problems[#problems + 1] = string.format("schema is %s, expected %q", json.encode(m.schema or json.null), manifest.SCHEMA)
  end
  if type(m.run_id) ~= "string" or m.run_id == "" then problems[#problems + 1] = "run_id is empty or missing" end
  if type(m.files) ~= "table" or #m.files == 0 then
    problems[#problems + 1] = "files is empty or missing (an empty roster is a failure)"
  else
    local seen = {}
    for i, f in ipairs(m.files) do
      local why = type(f) ~= "table" and "not an object" or bad_path(f.path)
      if why then
        problems[#problems + 1] = string.format("files[%d] path %s: %s", i, tostring(type(f) == "table" and f.path), why)
      elseif seen[f.path] then
        problems[#problems + 1] = f.path .. ": listed twice"
      else
        seen[f.path] = true
        if not is_int(f.bytes) or f.bytes < 0 then problems[#problems + 1] = f.path .. ": bytes is not a non-negative integer" end
        if type(f.sha256) ~= "string" or not f.sha256:match("^" .. string.rep("[0-9a-f]", 64) .. "$") then
          problems[#problems + 1] = f.path .. ": sha256 is not 64 lowercase hex digits"
        end
      end
    end
  end
  if #problems > 0 then fail(name, problems) end
  return m
end

-- ---- comparison (the gate) ---------------------------------------------------------

function manifest.compare(a, b, an, bn)
  an, bn = an or "local", bn or "remote"
  local diffs = {}
  if a.run_id ~= b.run_id then
    diffs[#diffs + 1] = string.format("run_id: %s %s, %s %s", an, tostring(a.run_id), bn, tostring(b.run_id))
  end
  local ia, ib = {}, {}
  for _, f in ipairs(a.files or {}) do ia[f.path] = f end
  for _, f in ipairs(b.files or {}) do ib[f.path] = f end
  for _, f in ipairs(a.files or {}) do
    local g = ib[f.path]
    if not g then diffs[#diffs + 1] = f.path .. ": in the " .. an .. " manifest, not in the " .. bn .. " one"
    elseif g.bytes ~= f.bytes then
      diffs[#diffs + 1] = string.format("%s: %d bytes %s, %d bytes %s", f.path, f.bytes, an, g.bytes, bn)
    elseif g.sha256 ~= f.sha256 then
      diffs[#diffs + 1] = string.format("%s: sha256 %s %s, %s %s", f.path, f.sha256, an, g.sha256, bn)
    end
  end
  for _, f in ipairs(b.files or {}) do
    if not ia[f.path] then diffs[#diffs + 1] = f.path .. ": in the " .. bn .. " manifest, not in the " .. an .. " one" end
  end
  return diffs
end

-- ---- verifier ------------------------------------------------------------------------

local shell_quote = require("gpurent.util.shell").quote

local function is_checkpoint(path, patterns)
  for _, p in ipairs(patterns) do if path:match(p) then return true end end
  return false
end

-- A load check: a Lua function(path) -> ok, why; or a command where {} is the quoted
-- path (appended when there is no {}), run by the shell; exit status 0 means it loaded.
local function load_checker(opts)
  if type(opts.load_check) == "function" then return opts.load_check end
  if type(opts.load_cmd) == "string" and opts.load_cmd ~= "" then
    return function(path)
      local cmd = opts.load_cmd:find("{}", 1, true) and opts.load_cmd:gsub("{}", function() return shell_quote(path) end)
        or (opts.load_cmd .. " " .. shell_quote(path))
      local ok, how, code = os.execute(cmd .. " </dev/null >/dev/null 2>&1")
      if ok then return true end
      return false, string.format("load command %s %d", how, code)
    end
  end
  return nil
end

function manifest.verify(dir, opts)
  opts = opts or {}
  local mpath = dir .. "/" .. manifest.FILE
  if not fs.exists(mpath) then error("verify " .. dir .. ": no " .. manifest.FILE .. " (pull it with the results)", 0) end
  local text = fs.read_file(mpath)
  local m = manifest.validate(json.decode(text, mpath), mpath)
  local problems = {}
  local locals = walk(dir, "", {}, problems, function(r)
    return r == manifest.FILE or r == manifest.VERIFIED_FILE or is_tmp(r)
      or r:match("^PULL_[%u_]+%.json%.tmp%.%d+$") ~= nil
  end)
  local have = {}
  for _, r in ipairs(locals) do have[r] = true end
  local listed = {}
  for _, f in ipairs(m.files) do
    listed[f.path] = true
    if not have[f.path] then problems[#problems + 1] = f.path .. ": missing locally" end
  end
  for _, r in ipairs(locals) do
    if not listed[r] then problems[#problems + 1] = r .. ": unexpected local file (not in the manifest)" end
  end
  if #problems > 0 then fail("verify " .. dir, problems) end
  local total = 0
  for _, f in ipairs(m.files) do      -- sizes first: cheap, and a short file needs no hash
    local size = fs.attributes(dir .. "/" .. f.path, "size")
    if size ~= f.bytes then problems[#problems + 1] = string.format("%s: %d bytes locally, %d in the manifest", f.path, size, f.bytes) end
    total = total + size      -- the file's own size: an integer (the JSON number may read 2797.0)
  end
  if #problems > 0 then fail("verify " .. dir, problems) end
  for _, f in ipairs(m.files) do
    local hex = hash.sha256_file(dir .. "/" .. f.path)
    if hex ~= f.sha256 then problems[#problems + 1] = string.format("%s: sha256 %s locally, %s in the manifest", f.path, hex, f.sha256) end
  end
  if #problems > 0 then fail("verify " .. dir, problems) end
  local patterns = opts.checkpoint_patterns or manifest.CHECKPOINTS
  local check = load_checker(opts)
  for _, f in ipairs(m.files) do
    if is_checkpoint(f.path, patterns) then
      if not check then
        problems[#problems + 1] = f.path .. ": a checkpoint, and no load check was given (--load-cmd CMD): a file that does not load is not a result"
      else
        local ok, why = check(dir .. "/" .. f.path)
        if not ok then problems[#problems + 1] = f.path .. ": does not load (" .. tostring(why) .. ")" end
      end
    end
  end
  if #problems > 0 then fail("verify " .. dir, problems) end
  local v = {
    schema = manifest.VERIFIED_SCHEMA, run_id = m.run_id, manifest_sha256 = hash.sha256(text),
    verified_at_utc = opts.verified_at_utc or utc_now(), files = #m.files, bytes = total,
  }
  fs.atomic_write(dir .. "/" .. manifest.VERIFIED_FILE, json.encode_stable(v))
  return v, m
end

-- The local evidence for the gate: the marker, and the manifest copy it names.
function manifest.read_verified(dir)
  local vpath = dir .. "/" .. manifest.VERIFIED_FILE
  if not fs.exists(vpath) then error("no " .. manifest.VERIFIED_FILE .. " in " .. dir .. " (the pull was never verified)", 0) end
  local v = json.decode(fs.read_file(vpath), vpath)
  if type(v) ~= "table" or v.schema ~= manifest.VERIFIED_SCHEMA then
    error(vpath .. ": schema is not " .. manifest.VERIFIED_SCHEMA, 0)
  end
  if type(v.run_id) ~= "string" or v.run_id == "" then error(vpath .. ": run_id is empty", 0) end
  if not is_int(v.files) or v.files < 1 then error(vpath .. ": files is " .. tostring(v.files) .. " (an empty roster is a failure)", 0) end
  local mpath = dir .. "/" .. manifest.FILE
  if not fs.exists(mpath) then error("no " .. manifest.FILE .. " beside " .. vpath, 0) end
  local text = fs.read_file(mpath)
  if hash.sha256(text) ~= v.manifest_sha256 then
    error(mpath .. " changed since it was verified (its sha256 is not the one in " .. manifest.VERIFIED_FILE .. ")", 0)
  end
  local m = manifest.validate(json.decode(text, mpath), mpath)
  if m.run_id ~= v.run_id then error(vpath .. ": run_id " .. v.run_id .. " is not the manifest's " .. m.run_id, 0) end
  if #m.files ~= v.files then error(vpath .. ": files " .. v.files .. " is not the manifest's " .. #m.files, 0) end
  return v, m, text
end

return manifest
