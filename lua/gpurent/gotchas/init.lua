-- gpurent.gotchas: the gotcha catalog and its runner. An entry is data plus a probe:
--   {id, title, severity = "high"|"medium"|"low", symptom, fix,
--    probe = function(inst, ctx) -> {status = "ok"|"warn"|"fail"|"n/a", evidence = "..."},
--    autofix = function(inst, ctx) -> "what was done"  (optional; only with --fix)}
-- Entries live in the gotcha module each platform names (gpurent.platform: P.gotchas;
-- run when a profile lists them) and gotchas/universal.lua (U-*: run on every SSH profile).
--
--   gotchas.all() -> {entry, ...}            gotchas.get(id) -> entry | nil
--   gotchas.for_profile(p) -> {entry, ...}   (universal + the profile's `gotchas:` list)
--   gotchas.list(p) -> {{id, title, severity, symptom, fix, universal, autofix}, ...}
--     the same entries as plain data (no probe functions): what the REPL's gotchas() shows
--   gotchas.run(inst, {profile=, only={id,...}, fix=, peers=, code_dir=, local_dir=})
--     -> {{id, title, severity, status, evidence, fix, fixed}, ...} in catalog order
--   gotchas.run_one(entry, inst, ctx) -> result
--
-- A platform's P.gotchas_elsewhere = {[id] = reason} answers those universal entries n/a
-- with the reason, unprobed (a Slurm login node has no GPU: they look in an allocation).
-- A probe that raises, or returns anything but a verdict, is reported as n/a with the
-- reason: the runner never turns "could not look" into ok. Probes run concurrently
-- (gpurent.parallel); calls on one SSH session are serialised by the instance itself.
local profile_mod = require "gpurent.config.profile"

local gotchas = {}

local STATUS = {ok = true, warn = true, fail = true, ["n/a"] = true}
gotchas.STATUS_ORDER = {ok = 0, ["n/a"] = 1, warn = 2, fail = 3}

local catalog, by_id

-- Every installed platform's gotcha module, then the universal entries.
local function catalog_modules()
  local platform = require "gpurent.platform"
  local mods = {}
  for _, name in ipairs(platform.names()) do
    local m = platform.of(name).gotchas
    if m then mods[#mods + 1] = m end
  end
  mods[#mods + 1] = "gpurent.gotchas.universal"
  return mods
end

local function load_catalog()
  if catalog then return end
  catalog, by_id = {}, {}
  for _, modname in ipairs(catalog_modules()) do
    for _, e in ipairs(require(modname)) do
      assert(e.id and e.title and e.severity and e.symptom and e.fix and type(e.probe) == "function",
        "gotcha entry " .. tostring(e.id) .. " in " .. modname .. " lacks a required field")
      assert(not by_id[e.id], "duplicate gotcha id " .. e.id)
      catalog[#catalog + 1] = e
      by_id[e.id] = e
    end
  end
end

function gotchas.all() load_catalog(); return catalog end
function gotchas.get(id) load_catalog(); return by_id[id] end

function gotchas.for_profile(p)
  load_catalog()
  local want = {}
  for _, id in ipairs(p.gotchas or {}) do
    if not by_id[id] then error("profile " .. tostring(p.platform) .. " lists unknown gotcha " .. id, 2) end
    want[id] = true
  end
  local list = {}
  for _, e in ipairs(catalog) do
    local universal = e.universal and (not e.kinds or e.kinds[p.kind])
    if want[e.id] or universal then list[#list + 1] = e end
  end
  return list
end

-- The entries a profile checks, as data a person reads (the REPL's gotchas()).
function gotchas.list(p)
  local out = {}
  for _, e in ipairs(gotchas.for_profile(p)) do
    out[#out + 1] = {id = e.id, title = e.title, severity = e.severity, symptom = e.symptom, fix = e.fix,
                     universal = e.universal and true or false, autofix = e.autofix ~= nil}
  end
  return out
end

-- Results constructors for probes.
function gotchas.ok(ev) return {status = "ok", evidence = ev} end
function gotchas.warn(ev) return {status = "warn", evidence = ev} end
function gotchas.fail(ev) return {status = "fail", evidence = ev} end
function gotchas.na(ev) return {status = "n/a", evidence = ev} end

-- ctx.sh(script) inside probes: inst:sh with a bounded time; "k v" output parsed by gotchas.kv.
function gotchas.kv(stdout)
  local t, multi = {}, {}
  for line in (stdout or ""):gmatch("[^\n]+") do
    local k, v = line:match("^(%S+)%s?(.*)$")
    if k then
      t[k] = t[k] or v
      multi[k] = multi[k] or {}
      table.insert(multi[k], v)
    end
  end
  return t, multi
end

local function one_line(s)
  s = tostring(s):gsub("\n%s*stack traceback:.*$", ""):gsub("%s+", " ")
  return s
end

function gotchas.run_one(e, inst, ctx)
  local ok, r = pcall(e.probe, inst, ctx)
  if not ok then
    r = gotchas.na("probe could not run: " .. one_line(require("gpurent.util.errors").message(r)))
  elseif type(r) ~= "table" or not STATUS[r.status] or type(r.evidence) ~= "string" or r.evidence == "" then
    r = gotchas.na("probe returned no verdict")
  end
  local out = {id = e.id, title = e.title, severity = e.severity, status = r.status,
               evidence = r.evidence, fix = e.fix}
  if ctx.fix and e.autofix and (r.status == "warn" or r.status == "fail") then
    local fok, what = pcall(e.autofix, inst, ctx)
    if fok then
      out.fixed = tostring(what or "applied")
      local again = gotchas.run_one(setmetatable({autofix = false}, {__index = e}), inst,
        setmetatable({fix = false}, {__index = ctx}))
      out.status, out.evidence = again.status, again.evidence
      out.before = r.status
    else
      out.fix_error = one_line(what)
    end
  end
  return out
end

local function parallel(items, fn)
  local g = rawget(_G, "gpurent")
  if g and g.parallel then return g.parallel(items, fn) end
  local ok, sched = pcall(require, "gpurent.transport.sched")
  if ok and sched.parallel then return sched.parallel(items, fn) end
  local results = {failed = 0}
  for i, it in ipairs(items) do
    local pok, v = pcall(fn, it, i)
    results[i] = pok and {ok = true, value = v} or {ok = false, error = v}
  end
  return results
end

function gotchas.run(inst, opts)
  opts = opts or {}
  local p = opts.profile or inst.profile
  if type(p) == "string" then p = profile_mod.load(p) end
  assert(p, "gotchas.run: no profile")
  local list = gotchas.for_profile(p)
  if opts.only then
    local only = {}
    for _, id in ipairs(opts.only) do
      if not gotchas.get(id) then error("unknown gotcha id " .. id, 2) end
      only[id] = true
    end
    local l2 = {}
    for _, e in ipairs(gotchas.all()) do if only[e.id] then l2[#l2 + 1] = e end end
    list = l2
  end
  local ctx = setmetatable({profile = p}, {__index = opts})
  function ctx.sh(script, o)
    return inst:sh(script, o or {timeout = opts.timeout or 120})
  end
  -- a platform whose GPUs are elsewhere (a scheduler's compute nodes) names the
  -- universal probes that would only look at its login node: n/a with its reason
  local elsewhere = require("gpurent.platform").of(p).gotchas_elsewhere or {}
  local results = parallel(list, function(e)
    if elsewhere[e.id] then
      return {id = e.id, title = e.title, severity = e.severity, status = "n/a", evidence = elsewhere[e.id], fix = e.fix}
    end
    return gotchas.run_one(e, inst, ctx)
  end)
  local out = {}
  for i, e in ipairs(list) do
    local r = results[i]
    out[i] = r and r.ok and r.value or {id = e.id, title = e.title, severity = e.severity, status = "n/a",
      evidence = "probe could not run: " .. one_line(r and r.error or "no result"), fix = e.fix}
  end
  return out
end

-- The worst status of a result list (fail > warn > n/a > ok).
function gotchas.worst(results)
  local worst = "ok"
  for _, r in ipairs(results) do
    if gotchas.STATUS_ORDER[r.status] > gotchas.STATUS_ORDER[worst] then worst = r.status end
  end
  return worst
end

-- Shared by probes and fixes -------------------------------------------------

local q = require("gpurent.util.shell").quote
gotchas.q = q

-- The conda/python prefix of the profile's interpreter (/root/miniconda3/bin/python
-- -> /root/miniconda3), for site-packages globs that need no python on the box.
function gotchas.py_prefix(p)
  local py = p.env and p.env.python or ""
  return py:match("^(/.+)/bin/[^/]+$")
end

-- A shell fragment listing dist-info dirs of the given packages: "dist NAME-VER"
-- (remote/dist_list.sh); empty without a prefix.
function gotchas.dist_script(prefix, names)
  if not prefix then return "" end
  return require("gpurent.remote").script("dist_list", {PREFIX = prefix,
    NAMES = require("gpurent.remote").lines(names, "gotchas.dist_script: names")}) .. "\n"
end

-- Append (once) a marked block to ~/.bashrc: the login environment every later
-- command sees. Returns what was done.
function gotchas.bashrc_block(inst, tag, lines)
  local mark = "# >>> gpurent " .. tag
  local body = mark .. "\n" .. table.concat(lines, "\n") .. "\n# <<< gpurent " .. tag .. "\n"
  local r = inst:sh(require("gpurent.remote").script("gotcha_bashrc", {MARK = mark, BODY = body}), {timeout = 30})
  if r.code ~= 0 then error("cannot append to ~/.bashrc: " .. (r.stderr or "")) end
  return "appended to ~/.bashrc: " .. table.concat(lines, "; ")
end

return gotchas
