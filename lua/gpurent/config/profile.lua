-- gpurent.profile: platform profiles (profiles/*.yaml) as plain Lua tables, checked
-- against profiles/schema.yaml on every load. Owns finding a profile by name, team
-- overlays (deep merge on top of a shipped profile), schema validation with errors
-- that name file:line:col and the key path, and small lookups over the result.
--
--   profile.load(name_or_path [, {overlays = {path, ...}, search = {dir, ...}}]) -> p
--   profile.find(name [, search]) -> path, kind    profile.search_dirs() -> {dir, ...}
--   profile.search_entries() -> {{dir=, kind=}, ...}
--   profile.tier(p, name) -> tier (with .name)     profile.durable_tier(p) -> tier | nil
--   profile.expand(template, vars) -> string       profile.source(p) -> {files = {...}}
--
-- A null (~) in YAML reads as nil in the loaded profile: `if p.tiers.data.inode_cap`
-- means "this tier has a cap". An overlay is a YAML file with `extends: NAME` (or one
-- passed in opts.overlays); maps merge key by key, lists and scalars replace, and
-- `_delete: [key, ...]` inside any map removes those keys of the layer below.
--
-- Trust (issue 14): a profile found in the project dir's profiles/ is used only once
-- the person trusted that dir (`gpurent trust`, lua/gpurent/config/trust.lua) and the file is
-- unchanged; provider API keys (PROVIDER_KEYS_CONFIG_ONLY) are accepted only from the
-- installed profiles and the person's config dir.
local yaml = require "gpurent.util.yaml"
local fs = require "gpurent.util.fs"

local profile = {}

local NULL = yaml.null
local sources = setmetatable({}, {__mode = "k"})   -- loaded profile -> {files=}

-- ---------------------------------------------------------------------------
-- Documents with locations: every table we build is described in `loc`:
-- loc[tbl] = {kind = "map"|"list"|"empty", at = {file,line,col}, keys = {k = at}}.

local function make_locs() return setmetatable({}, {__mode = "k"}) end

-- Annotate a freshly loaded YAML value: kind of each table and key positions.
-- An alias shares its table, so a table may be reached many times: annotate it
-- once (where it was first reached); re-walking shared tables costs time
-- exponential in the nesting of aliases (issue 15).
local function annotate(v, positions, file, at, loc)
  if type(v) ~= "table" or loc[v] then return end
  local pos = positions and positions[v]
  local info = {at = at, keys = {}}
  if pos then
    info.kind = "map"
    for k, p in pairs(pos) do info.keys[k] = {file, p[1], p[2]} end
  elseif next(v) == nil then
    info.kind = "empty"
  elseif #v > 0 then
    info.kind = "list"
  else
    info.kind = "map"
  end
  loc[v] = info
  for k, child in pairs(v) do
    annotate(child, positions, file, info.keys[k] or at, loc)
  end
end

local function read_doc(path, loc)
  local text = fs.read_file(path)
  local doc, positions = yaml.load(text, path, {positions = true})
  if type(doc) ~= "table" or (positions[doc] == nil and next(doc) ~= nil) then
    error(path .. ":1:1: a profile must be a YAML mapping", 0)
  end
  annotate(doc, positions, path, {path, 1, 1}, loc)
  return doc
end

local function kind_of(v, loc)
  if type(v) ~= "table" then return nil end
  return loc[v] and loc[v].kind or (next(v) == nil and "empty" or (#v > 0 and "list" or "map"))
end

-- Deep merge `top` over `base` into a new table; locations follow the value's origin.
local function merge(base, top, loc)
  local bk, tk = kind_of(base, loc), kind_of(top, loc)
  local top_is_map = tk == "map" or tk == "empty"
  local base_is_map = bk == "map" or bk == "empty"
  if not (top_is_map and base_is_map and (tk == "map" or bk == "map")) then
    return top
  end
  local out = {}
  local tinfo, binfo = loc[top] or {keys = {}}, loc[base] or {keys = {}}
  local info = {kind = "map", at = tinfo.at or binfo.at, keys = {}}
  local deleted = {}
  local del = top._delete
  if del ~= nil then
    if type(del) ~= "table" or kind_of(del, loc) == "map" then
      local at = tinfo.keys._delete or tinfo.at or {"?", 0, 0}
      error(string.format("%s:%d:%d: _delete: expected a list of keys", at[1], at[2], at[3]), 0)
    end
    for _, k in ipairs(del) do deleted[k] = true end
  end
  for k, v in pairs(base) do
    if not deleted[k] then out[k] = v; info.keys[k] = binfo.keys[k] end
  end
  for k, v in pairs(top) do
    if k ~= "_delete" then
      if out[k] ~= nil and type(v) == "table" and type(out[k]) == "table" then
        out[k] = merge(out[k], v, loc)
      else
        out[k] = v
      end
      info.keys[k] = tinfo.keys[k]
    end
  end
  loc[out] = info
  return out
end

-- ---------------------------------------------------------------------------
-- Finding profiles.

-- Where profiles come from, and how far each source is trusted (issue 14):
--   env        GPURENT_PROFILE_PATH, set by the person
--   project    the project dir's profiles/ (nearest gpurent.lock, else the cwd): a
--              directory the person may merely have cloned, so a file there is used
--              only once `gpurent trust` recorded it unchanged (gpurent.trust)
--   config     the person's config dir ($XDG_CONFIG_HOME/gpurent/profiles)
--   installed  gpurent's own profiles (share dir)
--   explicit   a path the person named, or a search dir a caller passed
local function config_profiles()
  local xdg = os.getenv("XDG_CONFIG_HOME")
  if (not xdg or xdg == "") and os.getenv("HOME") then xdg = os.getenv("HOME") .. "/.config" end
  return xdg and (xdg .. "/gpurent/profiles") or nil
end

local function installed_profiles()
  local g = rawget(_G, "gpurent")
  return g and g.share_dir and g.share_dir() and (g.share_dir() .. "/profiles") or nil
end

local function project_profiles()
  local g = rawget(_G, "gpurent")
  local dir = g and g.project_dir and g.project_dir()
  if not dir or not fs.is_dir(dir .. "/profiles") then return nil end
  -- run from gpurent's own source tree, the project's profiles/ are the installed ones
  local trust = require "gpurent.config.trust"
  local inst = installed_profiles()
  if inst and trust.realdir(inst) == trust.realdir(dir .. "/profiles") then return nil end
  return dir .. "/profiles", dir
end

-- The team libraries pinned in the lock in effect that ship profiles/ (gpurent.lib),
-- as search entries. A lock that cannot be read is an entry that raises when a
-- lookup reaches it: a name found earlier does not depend on the lock.
local function library_entries(entries)
  local ok, dirs = pcall(function() return require("gpurent.config.lib").profile_dirs() end)
  if not ok then
    entries[#entries + 1] = {dir = "(team libraries)", kind = "library", broken = dirs}
    return
  end
  for _, d in ipairs(dirs) do
    entries[#entries + 1] = {dir = d.dir, kind = "library", library = d.name, lockpath = d.lockpath,
      scope = d.scope, missing = d.missing}
  end
end

-- profile.search_entries() -> {{dir =, kind =, project = dir?}, ...} in search order:
-- GPURENT_PROFILE_PATH, the (trusted) project's profiles/, the person's config dir,
-- the team libraries of the lock in effect (by name), gpurent's own. Libraries come
-- after the person's own choices and before gpurent's defaults, so a team's
-- `acme-team` (extends: a shipped profile) is found by name and the person can still
-- override it in their config dir.
function profile.search_entries()
  local entries = {}
  local env = os.getenv("GPURENT_PROFILE_PATH")
  if env and env ~= "" then
    for d in env:gmatch("[^:]+") do entries[#entries + 1] = {dir = d, kind = "env"} end
  end
  local pdir, project = project_profiles()
  if pdir then entries[#entries + 1] = {dir = pdir, kind = "project", project = project} end
  local cdir = config_profiles()
  if cdir then entries[#entries + 1] = {dir = cdir, kind = "config"} end
  library_entries(entries)
  local idir = installed_profiles()
  if idir then entries[#entries + 1] = {dir = idir, kind = "installed"} end
  return entries
end

function profile.search_dirs()
  local dirs = {}
  for i, e in ipairs(profile.search_entries()) do dirs[i] = e.dir end
  return dirs
end

-- The kind of a directory a caller named (opts.search, an explicit path): gpurent's
-- own and the person's config dir keep their standing; anything else is "explicit".
local function kind_of_dir(dir)
  local trust = require "gpurent.config.trust"
  local real = trust.realdir(dir)
  for _, k in ipairs({{installed_profiles(), "installed"}, {config_profiles(), "config"}}) do
    if k[1] and (k[1] == dir or (real and trust.realdir(k[1]) == real)) then return k[2] end
  end
  return "explicit"
end

local function entries_for(search)
  if not search then return profile.search_entries() end
  local entries = {}
  for i, d in ipairs(search) do entries[i] = {dir = d, kind = kind_of_dir(d)} end
  return entries
end

-- A profile found in a library: the lock that pins the library must be one the person
-- trusted (gpurent.lib.vouch_lock), and no second library may ship the same name.
local function profile_from_library(name, path, e, entries, i)
  for j = i + 1, #entries do
    local other = entries[j]
    if other.kind == "library" and not other.broken and fs.exists(other.dir .. "/" .. name .. ".yaml") then
      error(string.format("library clash: profile %s is shipped by both library %s (%s) and library %s (%s)",
        name, e.library, path, other.library, other.dir .. "/" .. name .. ".yaml"), 0)
    end
  end
  require("gpurent.config.lib").vouch_lock(e.lockpath, e.scope)
end

-- profile.find(name [, search]) -> path, kind. A name with a '/' or '.yaml' is a path.
-- A profile found in an untrusted (or changed) project dir is refused, never skipped:
-- falling through to another file of the same name would hide the attack.
function profile.find(name, search, skip)
  if type(name) ~= "string" or name == "" then error("profile.find: name must be a non-empty string", 2) end
  if name:find("/", 1, true) or name:match("%.ya?ml$") then
    if not fs.exists(name) then error("profile " .. name .. ": no such file", 0) end
    return name, kind_of_dir(name:match("^(.*)/[^/]*$") or ".")
  end
  if not name:match("^[%w_.%-]+$") then error("profile name " .. string.format("%q", name) .. ": use letters, digits, '.', '_', '-'", 0) end
  local tried, hints, entries = {}, {}, entries_for(search)
  for i, e in ipairs(entries) do
    if e.broken then error("profile " .. name .. ": cannot read the team libraries' lock: " .. tostring(e.broken), 0) end
    local p = e.dir .. "/" .. name .. ".yaml"
    if p ~= skip and fs.exists(p) then
      if e.kind == "project" then require("gpurent.config.trust").vouch(p, e.project, "use profile") end
      if e.kind == "library" then profile_from_library(name, p, e, entries, i) end
      return p, e.kind
    end
    tried[#tried + 1] = p
    if e.missing then
      hints[#hints + 1] = "library " .. e.library .. " is pinned but not on this machine: gpurent lib sync"
    end
  end
  error("profile " .. name .. " not found (looked in " .. table.concat(tried, ", ") .. ")" ..
    (#hints > 0 and ("; " .. table.concat(hints, "; ")) or ""), 0)
end

-- Keys that decide where the provider token goes and how it is read. runtime/
-- provider.c reads them ONLY from the installed profiles and the person's config dir,
-- so a layer from anywhere else (a trusted project dir, a library, GPURENT_PROFILE_PATH,
-- an explicit path) that sets one is refused rather than silently not honoured.
-- "*" matches any key (every endpoint).
local PROVIDER_KEYS_CONFIG_ONLY = {
  {"billing", "api", "base_url"},
  {"billing", "api", "base_url_env"},
  {"billing", "api", "auth_header"},
  {"billing", "api", "token"},
  {"billing", "api", "approval"},
  {"billing", "api", "endpoints", "*", "base_url"},
}
local KEY_SOURCES_OK = {installed = true, config = true}

-- ---------------------------------------------------------------------------
-- The schema.

local NODE_ATTRS = {type = 1, optional = 1, nullable = 1, enum = 1, min = 1, keys = 1,
                    values = 1, items = 1, ref = 1, doc = 1}
local TYPES = {string = 1, integer = 1, number = 1, boolean = 1, map = 1, list = 1, any = 1}

local schema_cache = {}

local function check_schema_node(node, where, loc, defs)
  local function bad(msg, key)
    local info = loc[node] or {}
    local at = (key and info.keys and info.keys[key]) or info.at or {"schema.yaml", 0, 0}
    error(string.format("%s:%d:%d: schema %s: %s", at[1], at[2], at[3], where, msg), 0)
  end
  if type(node) ~= "table" then bad("a node must be a mapping") end
  for k in pairs(node) do
    if not NODE_ATTRS[k] then bad("unknown schema attribute " .. tostring(k), k) end
  end
  if node.ref ~= nil and (type(node.ref) ~= "string" or not defs[node.ref]) then
    bad("ref names no defs entry: " .. tostring(node.ref), "ref")
  end
  local types = type(node.type) == "table" and node.type or {node.type}
  for _, t in ipairs(types) do
    if not TYPES[t] then bad("unknown type " .. tostring(t), "type") end
  end
  if node.ref == nil and node.type == nil then bad("a node needs a type or a ref") end
  if node.keys ~= nil then
    for k, sub in pairs(node.keys) do check_schema_node(sub, where .. "." .. k, loc, defs) end
  end
  if node.values ~= nil then check_schema_node(node.values, where .. ".*", loc, defs) end
  if node.items ~= nil then check_schema_node(node.items, where .. "[]", loc, defs) end
end

-- profile.schema([path]) -> schema table {defs=, root=}, checked and cached.
function profile.schema(path)
  -- the schema is gpurent's own contract: never one from a search dir
  path = path or (installed_profiles() and fs.exists(installed_profiles() .. "/schema.yaml")
                  and installed_profiles() .. "/schema.yaml") or profile.find("schema")
  if schema_cache[path] then return schema_cache[path] end
  local loc = make_locs()
  local doc = read_doc(path, loc)
  if type(doc.root) ~= "table" then error(path .. ":1:1: schema needs a root node", 0) end
  local defs = doc.defs or {}
  for name, node in pairs(defs) do check_schema_node(node, "defs." .. name, loc, defs) end
  check_schema_node(doc.root, "root", loc, defs)
  local s = {defs = defs, root = doc.root, path = path, default_profile = doc.default_profile}
  schema_cache[path] = s
  return s
end

-- ---------------------------------------------------------------------------
-- Validation: collect every problem, then raise them all at once.

local function describe(v)
  if v == NULL then return "null" end
  if type(v) == "string" then return string.format("string %q", v) end
  if math.type(v) then return math.type(v) .. " " .. tostring(v) end
  if type(v) == "table" then return "a " .. (next(v) == nil and "empty table" or "table") end
  return type(v) .. " " .. tostring(v)
end

local function type_ok(t, v, loc)
  if t == "any" then return true
  elseif t == "string" then return type(v) == "string"
  elseif t == "integer" then return math.type(v) == "integer"
  elseif t == "number" then return type(v) == "number"
  elseif t == "boolean" then return type(v) == "boolean"
  elseif t == "map" then local k = kind_of(v, loc); return k == "map" or k == "empty"
  elseif t == "list" then local k = kind_of(v, loc); return k == "list" or k == "empty"
  end
  return false
end

local function validate_node(node, v, path, at, ctx)
  while node.ref do node = ctx.defs[node.ref] end
  local function problem(msg, where)
    where = where or at or {"?", 0, 0}
    ctx.problems[#ctx.problems + 1] = {file = where[1], line = where[2], col = where[3],
                                       key = path, msg = msg}
  end
  if v == NULL then
    if not node.nullable then problem("must not be null (expected " .. tostring(
      type(node.type) == "table" and table.concat(node.type, " or ") or node.type) .. ")") end
    return
  end
  local types = type(node.type) == "table" and node.type or {node.type or "any"}
  local ok = false
  for _, t in ipairs(types) do if type_ok(t, v, ctx.loc) then ok = true; break end end
  if not ok then
    problem("expected " .. table.concat(types, " or ") .. ", got " .. describe(v))
    return
  end
  if node.enum then
    local found = false
    for _, e in ipairs(node.enum) do if e == v then found = true end end
    if not found then
      local names = {}
      for _, e in ipairs(node.enum) do names[#names + 1] = tostring(e) end
      problem(describe(v) .. " is not one of: " .. table.concat(names, ", "))
    end
  end
  if node.min and type(v) == "number" and v < node.min then
    problem(tostring(v) .. " is below the minimum " .. tostring(node.min))
  end
  if type(v) ~= "table" then return end
  local info = ctx.loc[v] or {keys = {}}
  local function child_path(k) return path == "" and tostring(k) or (path .. "." .. tostring(k)) end
  if node.keys then
    local names = {}
    for k in pairs(v) do names[#names + 1] = k end
    table.sort(names, function(a, b) return tostring(a) < tostring(b) end)
    for _, k in ipairs(names) do
      local sub = node.keys[k]
      local kat = info.keys[k] or info.at or at
      if sub == nil then
        local cp = child_path(k)
        ctx.problems[#ctx.problems + 1] = {file = kat[1], line = kat[2], col = kat[3], key = cp,
                                           msg = "unknown key"}
      else
        validate_node(sub, v[k], child_path(k), kat, ctx)
      end
    end
    local req = {}
    for k, sub in pairs(node.keys) do
      if not sub.optional and v[k] == nil then req[#req + 1] = k end
    end
    table.sort(req)
    for _, k in ipairs(req) do
      problem("missing required key " .. k, info.at or at)
      ctx.problems[#ctx.problems].key = child_path(k)
    end
  elseif node.values then
    for k, sub in pairs(v) do
      validate_node(node.values, sub, child_path(k), info.keys[k] or info.at or at, ctx)
    end
  elseif node.items then
    for i, sub in ipairs(v) do
      local iat = (ctx.loc[sub] and ctx.loc[sub].at) or info.at or at
      validate_node(node.items, sub, path .. "[" .. i .. "]", iat, ctx)
    end
  end
end

-- Cross-references the schema cannot express: tier names.
local function check_references(doc, ctx)
  local tiers = type(doc.tiers) == "table" and doc.tiers or {}
  local cp = type(doc.checkpoints) == "table" and doc.checkpoints or nil
  local function at_of(tbl, k)
    local info = ctx.loc[tbl]
    return info and (info.keys[k] or info.at) or {"?", 0, 0}
  end
  local function need_tier(tbl, k, path)
    local name = tbl[k]
    if type(name) == "string" and tiers[name] == nil then
      local at = at_of(tbl, k)
      ctx.problems[#ctx.problems + 1] = {file = at[1], line = at[2], col = at[3], key = path,
                                         msg = "names no tier: " .. name}
    end
  end
  if cp then
    need_tier(cp, "live_tier", "checkpoints.live_tier")
    need_tier(cp, "durable_tier", "checkpoints.durable_tier")
    need_tier(cp, "never_tier", "checkpoints.never_tier")
  end
  local b = type(doc.billing) == "table" and doc.billing or {}
  local function check_preserves(p, path)
    if type(p) ~= "table" then return end
    for k in pairs(p) do
      if tiers[k] == nil then
        local at = at_of(p, k)
        ctx.problems[#ctx.problems + 1] = {file = at[1], line = at[2], col = at[3],
                                           key = path .. "." .. tostring(k), msg = "names no tier"}
      end
    end
  end
  if type(b.meter_stop) == "table" then check_preserves(b.meter_stop.preserves, "billing.meter_stop.preserves") end
  if type(b.verbs) == "table" then
    for name, verb in pairs(b.verbs) do
      if type(verb) == "table" then check_preserves(verb.preserves, "billing.verbs." .. name .. ".preserves") end
    end
  end
end

local function format_problems(problems)
  table.sort(problems, function(a, b)
    if a.file ~= b.file then return a.file < b.file end
    if a.line ~= b.line then return a.line < b.line end
    return a.key < b.key
  end)
  local lines = {}
  for _, p in ipairs(problems) do
    lines[#lines + 1] = string.format("%s:%d:%d: %s: %s", p.file, p.line, p.col, p.key, p.msg)
  end
  return table.concat(lines, "\n")
end

-- profile.check(doc, loc, schema) -> problems list (empty when valid).
local function check(doc, loc, schema)
  local ctx = {defs = schema.defs, problems = {}, loc = loc}
  local root_at = (loc[doc] and loc[doc].at) or {"?", 1, 1}
  validate_node(schema.root, doc, "", root_at, ctx)
  check_references(doc, ctx)
  return ctx.problems
end

-- Replace null with nil, so Lua reads "not applicable" as absent.
local function strip_nulls(v, seen)
  if type(v) ~= "table" or seen[v] then return end
  seen[v] = true
  for k, child in pairs(v) do
    if child == NULL then v[k] = nil else strip_nulls(child, seen) end
  end
end

-- ---------------------------------------------------------------------------
-- Loading.

-- Load a file and whatever it extends, bottom layer first; returns merged doc, files.
-- Where a layer sets a key of PROVIDER_KEYS_CONFIG_ONLY: {{key = "a.b.c", at = {file, line, col}}, ...}.
local function provider_keys_set(doc, loc)
  local found = {}
  local function walk(t, pat, i, path)
    if type(t) ~= "table" then return end
    local keys = (loc[t] or {}).keys or {}
    for k, v in pairs(t) do
      if k ~= "_delete" and (pat[i] == "*" or k == pat[i]) then
        local kp = path == "" and tostring(k) or (path .. "." .. tostring(k))
        if i == #pat then found[#found + 1] = {key = kp, at = keys[k] or (loc[t] or {}).at or {"?", 0, 0}}
        else walk(v, pat, i + 1, kp) end
      end
    end
  end
  for _, pat in ipairs(PROVIDER_KEYS_CONFIG_ONLY) do walk(doc, pat, 1, "") end
  table.sort(found, function(a, b) return a.at[2] < b.at[2] end)
  return found
end

local KIND_WORDS = {project = "a trusted project dir", env = "GPURENT_PROFILE_PATH",
                    explicit = "a path named explicitly", library = "a library"}

-- Refuse a layer from outside the installed profiles and the config dir that sets a
-- provider key: the token would not follow it, and the person must know that.
local function check_provider_keys(doc, loc, path, kind)
  if KEY_SOURCES_OK[kind] then return end
  local hit = provider_keys_set(doc, loc)[1]
  if not hit then return end
  local name = path:match("([^/]+)%.ya?ml$") or "NAME"
  require("gpurent.util.errors").refuse(string.format(
    "%s:%d:%d: %s decides where the provider token goes, and gpurent takes it only from its " ..
    "installed profiles and your config dir, not from %s (%s). Put it in %s/%s.yaml instead",
    hit.at[1], hit.at[2], hit.at[3], hit.key, KIND_WORDS[kind] or kind, path,
    config_profiles() or "~/.config/gpurent/profiles", name), 0)
end

-- Load a file and whatever it extends, bottom layer first; returns merged doc, files.
local function load_layers(path, kind, loc, search, depth, chain)
  if depth > 8 then error(path .. ": overlays nest deeper than 8 (a cycle?)", 0) end
  for _, seen in ipairs(chain) do
    if seen == path then error(path .. ": overlay cycle: " .. table.concat(chain, " -> ") .. " -> " .. path, 0) end
  end
  chain[#chain + 1] = path
  local doc = read_doc(path, loc)
  check_provider_keys(doc, loc, path, kind)
  local ext = doc.extends
  if ext == nil or ext == NULL then return doc, {path} end
  if type(ext) ~= "string" then
    local at = loc[doc].keys.extends
    error(string.format("%s:%d:%d: extends: expected a profile name", at[1], at[2], at[3]), 0)
  end
  local base_path, base_kind = profile.find(ext, search, path)
  local base, files = load_layers(base_path, base_kind, loc, search, depth + 1, chain)
  local merged = merge(base, doc, loc)
  merged.extends = nil
  files[#files + 1] = path
  return merged, files
end

-- A layer may gate one more provider verb (`gated: true`); runtime/provider.c keeps it
-- gated for the rest of the process and has no way to lift a gate. An endpoint C does
-- not know cannot be sent at all, so there is nothing to gate.
local function gate_in_c(doc)
  local api = doc.billing and doc.billing.api
  if type(api) ~= "table" or type(api.endpoints) ~= "table" or type(doc.platform) ~= "string" then return end
  local provider = require("gpurent.core").provider
  if not provider.exists(doc.platform) then return end
  for name, ep in pairs(api.endpoints) do
    if type(ep) == "table" and ep.gated == true then pcall(provider.gate, doc.platform, name) end
  end
end

-- profile.load(name_or_path [, opts]) -> profile (plain tables, nulls as nil).
-- opts.overlays: extra overlay files applied in order; opts.search: dirs to look in;
-- opts.schema: schema path. Raises one error listing every problem as
-- "file:line:col: key.path: message".
function profile.load(name, opts)
  opts = opts or {}
  local loc = make_locs()
  local path, kind = profile.find(name, opts.search)
  local doc, files = load_layers(path, kind, loc, opts.search, 0, {})
  for _, ov in ipairs(opts.overlays or {}) do
    local top = read_doc(ov, loc)
    check_provider_keys(top, loc, ov, kind_of_dir(ov:match("^(.*)/[^/]*$") or "."))
    if top.extends ~= nil then top.extends = nil end
    doc = merge(doc, top, loc)
    files[#files + 1] = ov
  end
  local schema = profile.schema(opts.schema)
  local problems = check(doc, loc, schema)
  if #problems > 0 then
    error("profile " .. name .. " is invalid (" .. #problems .. " problem" ..
          (#problems == 1 and "" or "s") .. "):\n" .. format_problems(problems), 0)
  end
  strip_nulls(doc, {})
  sources[doc] = {files = files, name = doc.platform}
  gate_in_c(doc)
  return doc
end

-- profile.default_name() -> the profile used when none is named: schema.yaml's
-- default_profile (gpurent's own contract), so no generic module spells a platform.
function profile.default_name()
  local name = profile.schema().default_profile
  if type(name) ~= "string" or name == "" then error(profile.schema().path .. ": default_profile must name a profile", 0) end
  return name
end

-- ---------------------------------------------------------------------------
-- Lookups.

function profile.source(p) return sources[p] end

-- profile.tier(p, name) -> the tier table with .name set, or nil.
function profile.tier(p, name)
  local t = name and p.tiers[name]
  if t then t.name = t.name or name end
  return t
end

-- The tier that survives the platform's destroy verb (nil when none is configured).
function profile.durable_tier(p)
  return profile.tier(p, p.checkpoints.durable_tier)
end

function profile.live_tier(p)
  return profile.tier(p, p.checkpoints.live_tier)
end

-- Tiers in a stable order: by path length, then name (so "/" comes first).
function profile.tier_list(p)
  local list = {}
  for name in pairs(p.tiers) do list[#list + 1] = profile.tier(p, name) end
  table.sort(list, function(a, b)
    if #a.path ~= #b.path then return #a.path < #b.path end
    return a.name < b.name
  end)
  return list
end

-- profile.expand("/data/checkpoints/{name}", {name = "x"}) -> string.
-- An unknown {var} is an error, never an empty path component.
function profile.expand(template, vars)
  return (template:gsub("{([%w_]+)}", function(k)
    local v = vars and vars[k]
    if v == nil then error("profile.expand: no value for {" .. k .. "} in " .. template, 2) end
    return tostring(v)
  end))
end

return profile
