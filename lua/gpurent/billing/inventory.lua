-- gpurent.inventory: what dies with an instance, read on the box while it runs, and
-- recorded atomically in the state dir for a later release (a platform may release only a
-- powered-off box, which SSH cannot reach, so the release reads this record).
--
-- What dies comes from the profile as data: every tier whose survives.release is
-- false, narrowed by release.paths[tier] (the system disk: only the paths that
-- matter). The walk stays on each root's filesystem and prunes every other tier's
-- mount point. Only files whose size equals some entry of a PULL_MANIFEST.json found
-- on the box are hashed (SHA-256 on the box), so a 50 GB disk is not hashed whole.
--
--   inventory.plan(profile) -> {roots = {{path=, tier=, mount=}}, prune = {paths}, durable = {paths}, depth=}
--   inventory.take(inst, {profile=, item=API list item, target=, profile_name=, out=}) -> inv
--   inventory.save(inv) -> path       inventory.load(uuid) -> inv | nil
--   inventory.file(uuid) -> path      inventory.stale(inv, item) -> nil | why
--   inventory.command(target, name) -> the shell command that takes one
--   inventory.glob(pattern) -> matcher(path) -> bool   (* ? within a name, ** any depth)
--
-- inv = {schema=, instance=, uuid=, target=, profile=, taken_at=, taken_at_utc=,
--        stretch_started_at= (the API's started_at of the stretch it was taken in),
--        roots = {{path=, tier=}}, files = {{path=, bytes=, sha256=?, root=}},
--        manifests = {{path=, sha256=, text=}}, totals = {files=, bytes=, hashed=}}
local fs = require "gpurent.util.fs"
local hash = require "gpurent.util.hash"
local json = require "gpurent.util.json"
local manifest = require "gpurent.lifecycle.manifest"

local inventory = {}
inventory.SCHEMA = "gpurent/INVENTORY/v1"

local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end
inventory.q = q

local function under(path, root)
  return path == root or path:sub(1, #root + 1) == root .. "/" or root == "/"
end

-- ---- globs ------------------------------------------------------------------------

-- One name against one glob segment: sshconfig's linear matcher (a Lua pattern
-- built from many '*' backtracks for minutes; fuzz/regressions/knownhosts).
local segment_match = require("gpurent.transport.sshconfig").glob_match

local function split(path, is_glob)
  local out = {}
  for s in path:gmatch("[^/]+") do
    if not (is_glob and s == "**" and out[#out] == "**") then out[#out + 1] = s end   -- **/** is **
  end
  return out
end

-- Segment-wise match; "**" takes zero or more whole segments.
local function match_from(g, gi, p, pi)
  if gi > #g then return pi > #p end
  if g[gi] == "**" then
    for k = pi, #p + 1 do
      if match_from(g, gi + 1, p, k) then return true end
    end
    return false
  end
  if pi > #p or not segment_match(g[gi], p[pi]) then return false end
  return match_from(g, gi + 1, p, pi + 1)
end

function inventory.glob(pattern)
  local g = split(pattern, true)
  return function(path) return match_from(g, 1, split(path), 1) end
end

-- ---- what dies ----------------------------------------------------------------------

function inventory.plan(p)
  local rel = p.release or {}
  local plan = {roots = {}, prune = {}, durable = {}, depth = rel.manifest_depth or 6}
  local names = {}
  for name in pairs(p.tiers or {}) do names[#names + 1] = name end
  table.sort(names)
  for _, name in ipairs(names) do
    local t = p.tiers[name]
    plan.prune[#plan.prune + 1] = t.path
    if t.survives and t.survives.release == false then
      for _, path in ipairs((rel.paths or {})[name] or {t.path}) do
        if path:sub(1, 1) ~= "/" then
          error(string.format("profile %s: release.paths.%s: %q is not an absolute path", tostring(p.platform), name, path), 0)
        end
        plan.roots[#plan.roots + 1] = {path = path, tier = name, mount = t.path}
      end
    else
      plan.durable[#plan.durable + 1] = t.path
    end
  end
  for name in pairs(rel.paths or {}) do
    if not (p.tiers or {})[name] then
      error(string.format("profile %s: release.paths.%s names no tier (tiers: %s)", tostring(p.platform), name,
        table.concat(names, ", ")), 0)
    end
  end
  return plan
end

-- find over one root: every regular file as "SIZE\tPATH\0", other tiers pruned.
local function find_cmd(root, plan)
  local prunes = {}
  for _, t in ipairs(plan.prune) do
    if t ~= root and t ~= "/" and under(t, root) then prunes[#prunes + 1] = "-path " .. q(t) end
  end
  local prune = #prunes > 0 and ("\\( " .. table.concat(prunes, " -o ") .. " \\) -prune -o ") or ""
  return string.format("if [ -d %s ]; then find %s -xdev %s-type f -printf '%%s\\t%%p\\0'; fi", q(root), q(root), prune)
end

local function sh(inst, cmd, opts)
  opts = opts or {}
  opts.timeout = opts.timeout or 600
  local r = inst:sh(cmd, opts)
  if r.code ~= 0 then
    error(string.format("inventory on %s: `%s` exited %s: %s", tostring(inst), cmd:sub(1, 120), tostring(r.code),
      (r.stderr or ""):sub(1, 400)), 0)
  end
  return r.stdout
end

local function list_files(inst, plan)
  local files, seen = {}, {}
  for _, root in ipairs(plan.roots) do
    for rec in sh(inst, find_cmd(root.path, plan)):gmatch("([^%z]+)%z") do
      local size, path = rec:match("^(%d+)\t(.+)$")
      if path and not seen[path] then
        seen[path] = true
        files[#files + 1] = {path = path, bytes = tonumber(size), root = root.path, tier = root.tier}
      end
    end
  end
  return files
end

-- Every PULL_MANIFEST.json on the box: in the surviving tiers (bounded depth) and
-- among the dying files; each re-read now, kept whole with its SHA-256.
local function read_manifests(inst, plan, files)
  local paths, seen = {}, {}
  for _, f in ipairs(files) do
    if f.path:match("/" .. manifest.FILE .. "$") then paths[#paths + 1] = f.path; seen[f.path] = true end
  end
  for _, d in ipairs(plan.durable) do
    local cmd = string.format("if [ -d %s ]; then find %s -xdev -maxdepth %d -name %s -type f -print0; fi",
      q(d), q(d), plan.depth, manifest.FILE)
    for p in sh(inst, cmd):gmatch("([^%z]+)%z") do
      if not seen[p] then seen[p] = true; paths[#paths + 1] = p end
    end
  end
  local out = {}
  for _, p in ipairs(paths) do
    local text = sh(inst, "cat -- " .. q(p), {idempotent = true})
    out[#out + 1] = {path = p, sha256 = hash.sha256(text), text = text}
  end
  return out
end

-- The sizes of every file some manifest on the box names: only those are hashed.
local function manifest_sizes(manifests)
  local sizes = {}
  for _, m in ipairs(manifests) do
    local ok, doc = pcall(json.decode, m.text, m.path)
    if ok and type(doc) == "table" and type(doc.files) == "table" then
      for _, f in ipairs(doc.files) do
        local n = math.tointeger(f.bytes)          -- JSON numbers decode as floats
        if n then sizes[n] = true end
      end
    end
  end
  return sizes
end

local function hash_candidates(inst, files, sizes)
  local want, by_path = {}, {}
  for _, f in ipairs(files) do
    if sizes[f.bytes] then want[#want + 1] = f.path .. "\0"; by_path[f.path] = f end
  end
  if #want == 0 then return 0 end
  local n = 0
  for rec in sh(inst, require("gpurent.remote").script("inventory_hash"), {stdin = table.concat(want)}):gmatch("([^%z]+)%z") do
    local h, path = rec:match("^(%x+)\t(.+)$")
    if h and #h == 64 and by_path[path] then by_path[path].sha256 = h; n = n + 1 end
  end
  return n
end

function inventory.take(inst, o)
  local plan = inventory.plan(o.profile)
  local item = o.item or {}
  local files = list_files(inst, plan)
  local manifests = read_manifests(inst, plan, files)
  local hashed = hash_candidates(inst, files, manifest_sizes(manifests))
  local bytes = 0
  for _, f in ipairs(files) do bytes = bytes + f.bytes end
  local now = os.time()
  return {schema = inventory.SCHEMA, instance = item.name or o.target, uuid = item.uuid, target = o.target,
    profile = o.profile_name or o.profile.platform, taken_at = now, taken_at_utc = os.date("!%Y-%m-%dT%H:%M:%SZ", now),
    stretch_started_at = item.started_at and item.started_at.time, status = item.status,
    roots = plan.roots, files = files, manifests = manifests,
    totals = {files = #files, bytes = bytes, hashed = hashed, manifests = #manifests}}
end

-- ---- the record -----------------------------------------------------------------------

function inventory.file(uuid)
  local name = tostring(uuid):gsub("[^%w%._%-]", "_")
  return require("gpurent.state.ledger").state_dir() .. "/inventories/" .. name .. ".json"
end

function inventory.save(inv)
  local path = inventory.file(inv.uuid or inv.instance)
  fs.mkdirs(path:match("^(.*)/"))
  local doc = {}
  for k, v in pairs(inv) do doc[k] = v end
  doc.roots, doc.files, doc.manifests = json.array(inv.roots), json.array(inv.files), json.array(inv.manifests)
  fs.atomic_write(path, json.encode_stable(doc))
  return path
end

function inventory.load(uuid)
  local path = inventory.file(uuid)
  if not fs.exists(path) then return nil end
  local inv = json.decode(fs.read_file(path), path)
  if type(inv) ~= "table" or inv.schema ~= inventory.SCHEMA or type(inv.files) ~= "table" then
    error(path .. ": not a gpurent inventory (schema " .. inventory.SCHEMA .. "); take a new one", 0)
  end
  return inv, path
end

function inventory.command(target, name)
  return string.format("gpurent billing inventory %s %s", q(target or name), q(name))
end

-- Why an inventory cannot stand for the disk now, or nil. It must come from the
-- powered-on stretch that ended in the current power-off: the API's started_at is
-- the same one the inventory recorded (a power-on since would change it).
function inventory.stale(inv, item)
  local name = item.name or item.uuid
  local take = inventory.command(inv and inv.target or name, name)
  if not inv then
    return string.format("no inventory of %s: take one while it runs, then power it off: gpurent billing power-on %s && %s && gpurent billing power-off %s --approve %s",
      name, q(name), take, q(name), q(name))
  end
  local started = item.started_at and item.started_at.time
  if inv.stretch_started_at ~= started then
    return string.format("the inventory of %s was taken %s, in the powered-on stretch that began %s; %s was powered on again at %s, so its disk may have changed: gpurent billing power-on %s && %s && gpurent billing power-off %s --approve %s",
      name, tostring(inv.taken_at_utc), tostring(inv.stretch_started_at), name, tostring(started), q(name), take, q(name), q(name))
  end
  return nil
end

return inventory
