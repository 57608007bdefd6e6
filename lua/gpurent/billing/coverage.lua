-- gpurent.coverage: may a release delete everything an inventory found? Owns the
-- decision file by file, the --discard echo, and the refusal listing.
--
-- A file that dies with the instance is safe to lose when it is
--   covered:      same size and SHA-256 as an entry of a verified pull (a local
--                 PULL_VERIFIED.json whose manifest equals, path for path, byte for
--                 byte, hash for hash, a PULL_MANIFEST.json the inventory re-read on
--                 the box): any run's, from the ledger or --pulled DIR;
--   reproducible: under a glob of the profile's release.reproducible (caches, the image);
--   discarded:    named by the person with --discard GLOB (echoed with sizes first).
-- Anything else blocks the release, listed largest first with the command that pulls it.
--
--   coverage.evaluate(inv, item, {pulled = {dirs}, discard = {globs}, profile =, out =,
--                     need_status = "shutdown"}) -> c
--   c = {problems = {one-line reasons}, details = {lines}, ok_text = "..."}
-- A --discard glob that matches nothing raises a usage error naming it (exit 2).
local errors = require "gpurent.util.errors"
local fs = require "gpurent.util.fs"
local inventory = require "gpurent.billing.inventory"
local json = require "gpurent.util.json"
local manifest = require "gpurent.lifecycle.manifest"

local coverage = {}
coverage.LIST_CAP = 20
local q = inventory.q

-- JSON numbers decode as floats: a key is built from the integer value.
local function key(bytes, sha256) return string.format("%d:%s", math.tointeger(bytes) or -1, sha256) end

function coverage.size_text(n)
  local units, v, i = {"B", "KiB", "MiB", "GiB", "TiB"}, n, 1
  while v >= 1024 and i < #units do v, i = v / 1024, i + 1 end
  return i == 1 and string.format("%d B", n) or string.format("%.1f %s (%d bytes)", v, units[i], n)
end
local size_text = coverage.size_text

-- Every pulled directory gpurent verified, from the ledger (missing ledger: none).
local function ledger_pulls()
  local ok, rows = pcall(function()
    local L = require("gpurent.state.ledger").open()
    local r = L.db:query("SELECT DISTINCT path FROM manifests WHERE kind = 'pull_verified' ORDER BY id")
    L:close()
    return r
  end)
  local dirs = {}
  for _, r in ipairs(ok and rows or {}) do
    local d = r.path and r.path:match("^(.*)/" .. manifest.VERIFIED_FILE:gsub("%.", "%%.") .. "$")
    if d then dirs[#dirs + 1] = d end
  end
  return dirs
end

-- The manifest re-read on the box that a local verified manifest equals, or nil.
local function on_box(inv, mlocal)
  for _, m in ipairs(inv.manifests or {}) do
    local ok, remote = pcall(function() return manifest.validate(json.decode(m.text, m.path), m.path) end)
    if ok and #manifest.compare(mlocal, remote, "verified", "box") == 0 then return m end
  end
  return nil
end

-- One pulled directory: its covered (bytes, sha256) keys, or why it counts for nothing.
local function check_pull(inv, dir)
  local ok, v, mlocal = pcall(manifest.read_verified, dir)
  if not ok then return nil, tostring(v) end
  for _, f in ipairs(mlocal.files) do
    local size = fs.attributes(dir .. "/" .. f.path, "size")
    if size ~= f.bytes then
      return nil, string.format("%s/%s: %s now, %d bytes when verified", dir, f.path, size and (size .. " bytes") or "missing", f.bytes)
    end
  end
  local m = on_box(inv, mlocal)
  if not m then
    return nil, string.format("%s (run %s): no PULL_MANIFEST.json re-read on the box at %s equals its manifest", dir,
      tostring(v.run_id), tostring(inv.taken_at_utc))
  end
  local keys = {}
  for _, f in ipairs(mlocal.files) do keys[key(f.bytes, f.sha256)] = true end
  return {dir = dir, run_id = v.run_id, keys = keys, remote = m.path}
end

-- Verified pulls: an explicit --pulled DIR that does not verify is a problem (the
-- person named it as evidence); a ledger one that no longer does is only noted.
local function gather_pulls(inv, explicit, c)
  local pulls, seen, ignored = {}, {}, {}
  local function add(dir, named)
    dir = dir:gsub("/+$", "")
    if seen[dir] then return end
    seen[dir] = true
    local p, why = check_pull(inv, dir)
    if p then pulls[#pulls + 1] = p
    elseif named then c.problems[#c.problems + 1] = "--pulled " .. why
    else ignored[#ignored + 1] = why end
  end
  for _, d in ipairs(explicit or {}) do add(d, true) end
  for _, d in ipairs(ledger_pulls()) do add(d, false) end
  if #ignored > 0 then      -- old pulls since moved or deleted: one line, not one each
    c.details[#c.details + 1] = string.format("(%d pull%s in the ledger cover nothing now; first: %s)", #ignored,
      #ignored == 1 and "" or "s", ignored[1])
  end
  return pulls
end

local function mount_of(inv)
  local m = {}
  for _, r in ipairs(inv.roots or {}) do m[r.path] = r.mount or r.path end
  return m
end

-- A glob as given: absolute matches absolute paths; relative is relative to the
-- mount point of the tier the file lives on (the data disk's, for "otherproj/**").
local function discard_matchers(globs)
  local out = {}
  for _, g in ipairs(globs or {}) do
    if g == "" then errors.usage("--discard needs a GLOB, got an empty string", 0) end
    out[#out + 1] = {glob = g, match = inventory.glob(g), absolute = g:sub(1, 1) == "/", files = {}, bytes = 0}
  end
  return out
end

local function relative(path, mount)
  if mount == "/" then return path:sub(2) end
  return path:sub(#mount + 2)
end

local function classify(inv, f, pulls, repro, discards, mounts)
  local hit = nil
  for _, d in ipairs(discards) do
    local subject = d.absolute and f.path or relative(f.path, mounts[f.root] or f.root)
    if d.match(subject) then d.files[#d.files + 1] = f; d.bytes = d.bytes + f.bytes; hit = hit or d end
  end
  if f.sha256 then
    for _, p in ipairs(pulls) do
      if p.keys[key(f.bytes, f.sha256)] then return "covered" end
    end
  end
  for _, r in ipairs(repro) do if r.match(f.path) then return "reproducible" end end
  if hit then return "discarded" end
  return "uncovered"
end

-- Echo each --discard glob with what it matches, before anything is sent.
local function echo_discards(discards, out)
  for _, d in ipairs(discards) do
    if #d.files == 0 then
      errors.usage(string.format("--discard %s matches no file that dies with the instance (a relative glob is relative to the tier's mount point, e.g. 'otherproj/**'; check the spelling)", q(d.glob)), 0)
    end
    out:write(string.format("discard %s: %d file%s, %s\n", q(d.glob), #d.files, #d.files == 1 and "" or "s", size_text(d.bytes)))
    table.sort(d.files, function(a, b) return a.bytes > b.bytes or (a.bytes == b.bytes and a.path < b.path) end)
    for i = 1, math.min(#d.files, coverage.LIST_CAP) do
      out:write(string.format("  %s  %s\n", size_text(d.files[i].bytes), d.files[i].path))
    end
    if #d.files > coverage.LIST_CAP then out:write(string.format("  ... and %d more\n", #d.files - coverage.LIST_CAP)) end
  end
end

-- The command that pulls what is listed: power on, then tar over ssh into ./NAME-unpulled.
-- Many files: their directories instead, without one that lies inside another
-- (tar would send it twice), so the command stays a command.
local function pull_paths(files)
  local set, list = {}, {}
  for _, f in ipairs(files) do
    local p = #files > 50 and (f.path:match("^(.*)/[^/]+$") or f.path) or f.path
    if not set[p] then set[p] = true; list[#list + 1] = p end
  end
  local out = {}
  for _, p in ipairs(list) do
    local inside = false
    for a in p:gmatch("()/") do
      if a > 1 and set[p:sub(1, a - 1)] then inside = true; break end
    end
    if not inside then out[#out + 1] = q(p:sub(2)) end
  end
  return out
end

function coverage.pull_command(inv, files)
  local paths = pull_paths(files)
  local name = inv.instance or inv.uuid
  local dest = "./" .. tostring(name):gsub("[^%w%._%-]", "_") .. "-unpulled"
  local cfg = os.getenv("GPURENT_SSH_CONFIG")
  local remote = "tar -C / -cf - -- " .. table.concat(paths, " ")
  return string.format("gpurent billing power-on %s && mkdir -p %s && ssh %s%s %s | tar -C %s -xf -",
    q(name), q(dest), cfg and cfg ~= "" and ("-F " .. q(cfg) .. " ") or "", q(inv.target or name), q(remote), q(dest))
end

local function list_uncovered(inv, missing, c)
  table.sort(missing, function(a, b) return a.bytes > b.bytes or (a.bytes == b.bytes and a.path < b.path) end)
  local total = 0
  for _, f in ipairs(missing) do total = total + f.bytes end
  c.problems[#c.problems + 1] = string.format("%d file%s (%s) that die with %s are not covered by a verified pull, not reproducible and not discarded; largest: %s (%s)",
    #missing, #missing == 1 and "" or "s", size_text(total), tostring(inv.instance), missing[1].path, size_text(missing[1].bytes))
  c.details[#c.details + 1] = "not pulled (largest first):"
  for i = 1, math.min(#missing, coverage.LIST_CAP) do
    c.details[#c.details + 1] = string.format("  %s  %s", size_text(missing[i].bytes), missing[i].path)
  end
  if #missing > coverage.LIST_CAP then
    c.details[#c.details + 1] = string.format("  ... and %d more; %d files, %s in all", #missing - coverage.LIST_CAP, #missing, size_text(total))
  end
  c.details[#c.details + 1] = "pull them with:"
  c.details[#c.details + 1] = "  " .. coverage.pull_command(inv, missing)
  c.details[#c.details + 1] = "or, if they are expendable, name them on the release: --discard 'GLOB' (repeatable)"
end

local function header(inv, pulls)
  local runs = {}
  for _, p in ipairs(pulls) do runs[#runs + 1] = p.run_id end
  return string.format("inventory of %s taken %s over SSH (%s), in the stretch powered on at %s: %d files, %s; %d PULL_MANIFEST.json re-read on the box then; verified pulls matching one: %s",
    tostring(inv.instance), tostring(inv.taken_at_utc), tostring(inv.target), tostring(inv.stretch_started_at),
    #inv.files, size_text(inv.totals and inv.totals.bytes or 0), #(inv.manifests or {}),
    #runs > 0 and table.concat(runs, ", ") or "none")
end

function coverage.evaluate(inv, item, o)
  o = o or {}
  local c = {problems = {}, details = {}}
  local stale = inventory.stale(inv, item)
  if stale then c.problems[1] = stale; return c end
  if o.need_status and item.status ~= o.need_status then
    c.problems[1] = string.format("%s is %s: it must be %s first (the platform releases only a powered-off instance)",
      tostring(item.name), tostring(item.status), o.need_status)
    return c
  end
  local pulls = gather_pulls(inv, o.pulled, c)
  table.insert(c.details, 1, header(inv, pulls))
  local repro = {}
  for _, r in ipairs(((o.profile or {}).release or {}).reproducible or {}) do repro[#repro + 1] = {match = inventory.glob(r.glob)} end
  local discards, mounts = discard_matchers(o.discard), mount_of(inv)
  local counts, missing = {covered = 0, reproducible = 0, discarded = 0}, {}
  for _, f in ipairs(inv.files) do
    local k = classify(inv, f, pulls, repro, discards, mounts)
    if k == "uncovered" then missing[#missing + 1] = f else counts[k] = counts[k] + 1 end
  end
  echo_discards(discards, o.out or io.stdout)
  if #missing > 0 then list_uncovered(inv, missing, c) end
  c.ok_text = string.format("every file that dies with %s is safe: %d pulled and verified, %d reproducible, %d discarded",
    tostring(inv.instance), counts.covered, counts.reproducible, counts.discarded)
  return c
end

return coverage
