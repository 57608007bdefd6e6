-- gpurent.storage: what the storage tiers of a live instance hold, as numbers, and
-- the gates and copies that rely on them. Every remote step is a POSIX sh script
-- (lua/gpurent/remote/storage_*.sh, measure_lib.sh; the hogs walk is built here) run
-- through inst:sh (no python on the box: AD6), one round trip per call.
--
--   storage.measure(inst [, {profile=, tiers={name,...}}]) -> reading
--     reading.tiers[name] = {name, path, exists, fs, mount, bytes_total, bytes_used,
--       bytes_free, bytes_pct, inodes_total, inodes_used, inodes_free, inodes_pct}
--     reading.mem = {cgroup = "v1"|"v2"|nil, limit, usage, peak, oom_kill, host_total}
--     reading.cpu = {quota_cpus, host_cores}
--   storage.hogs(inst [, {profile=, tiers=, top=10, paths=}]) -> {{path, real, bytes, tier}, ...}
--   storage.checkpoint_budget(tier_reading, {ckpt_bytes=, count=, scratch_bytes=}) -> verdict
--   storage.inode_budget(tier_reading, {files=}) -> verdict
--     verdict = {status = "ok"|"warn"|"fail"|"n/a", need=, free=, text=}
--   storage.free_gate(inst, tier | {tier,...}, {min_bytes=, min_inodes=, floors={TIER={min_bytes=,
--     min_inodes=}}, profile=}) -> tier reading (the first tier's; .all = every tier's)
--     both bytes AND inodes of every tier the step writes to: below a floor, or full in a
--     dimension with no floor (at the profile's *_fail_pct, or nothing free), it raises a
--     refusal (exit 3) naming the tier and the dimension, with advice for that one only
--   storage.full(t, profile) -> {{dim = "bytes"|"inodes", pct=, free=, used=, total=}, ...}
--     the dimensions of a tier reading that are full
--   storage.dimension_text(t, dim) -> "the fs tier (/mnt/fs) inodes (df -i): 600/600 used (100%), 0 free; ..."
--   storage.advice(profile, t, dim) -> what frees THIS tier in THIS dimension: expanding is
--     proposed only for bytes of a tier the profile marks expandable, never for inodes
--   storage.checked_sync(inst, src, dst_tier [, {dir=, name=, profile=, quiet=, say=}])
--     -> {src, dst, bytes, sha256}   (raises naming `df -i` when the copy fails)
--   storage.parse_size("10G") -> bytes        storage.human(bytes) -> "9.3 GiB"
local errors = require "gpurent.util.errors"
local profile_mod = require "gpurent.config.profile"
local remote = require "gpurent.remote"

local storage = {}

local q = require("gpurent.util.shell").quote
storage.q = q

-- A profile path as a shell word: "~" and "~/x" expand on the box.
function storage.shell_path(p)
  if p == "~" then return '"$HOME"' end
  local rest = p:match("^~/(.*)$")
  if rest then return '"$HOME"/' .. q(rest) end
  return q(p)
end
local spath = storage.shell_path

local UNITS = {[""] = 1, K = 1024, M = 1024 ^ 2, G = 1024 ^ 3, T = 1024 ^ 4}

function storage.parse_size(v)
  if type(v) == "number" then return math.floor(v) end
  if type(v) ~= "string" then error("storage.parse_size: expected a number or a size like 10G, got " .. type(v), 2) end
  local n, u = v:upper():match("^%s*([%d.]+)%s*([KMGT]?)I?B?%s*$")
  if not n or not tonumber(n) then error("storage.parse_size: bad size " .. string.format("%q", v), 2) end
  return math.floor(tonumber(n) * UNITS[u])
end

function storage.human(n)
  if n == nil then return "?" end
  local units = {"B", "KiB", "MiB", "GiB", "TiB"}
  local i, x = 1, n
  while math.abs(x) >= 1024 and i < #units do x = x / 1024; i = i + 1 end
  return i == 1 and string.format("%d B", n) or string.format("%.1f %s", x, units[i])
end

local function pct(used, total)
  if not used or not total or total <= 0 then return nil end
  return math.floor(used * 1000 / total + 0.5) / 10
end

local function get_profile(inst, opts)
  local p = (opts and opts.profile) or (type(inst) == "table" and inst.profile)
  if type(p) == "string" then p = profile_mod.load(p) end
  if not p then error("storage: no profile (pass opts.profile or set inst.profile)", 3) end
  return p
end
storage.get_profile = get_profile

-- storage.run(inst, script [, opts]) -> result; raises naming the host on a lost
-- connection (the caller's pcall turns that into n/a, never into ok).
function storage.run(inst, script, opts)
  local res = inst:sh(script, opts)
  if type(res) ~= "table" or res.code == nil then
    error("storage: inst:sh returned no result for " .. tostring(inst), 2)
  end
  return res
end

-- ---------------------------------------------------------------------------
-- measure: df -B1 and df -i for every tier, cgroup memory and CPU, one round trip.

-- The script measure() runs (remote/storage_measure.sh; exposed so probes can fold it
-- into their own round trip).
function storage.measure_script(p, names)
  return remote.script("storage_measure", {TIERS = storage.tier_lines(p, names)})
end

-- "NAME<TAB>PATH" lines of the named tiers, the value measure_lib.sh's measure_tiers reads.
function storage.tier_lines(p, names)
  local lines = {}
  for _, name in ipairs(names) do
    local t = p.tiers[name]
    if not t then error("storage: profile " .. tostring(p.platform) .. " has no tier " .. tostring(name), 3) end
    lines[#lines + 1] = name .. "\t" .. t.path
  end
  return remote.lines(lines, "storage: tiers")
end

local function parse_df(line)
  -- Filesystem Size Used Avail Use% Mounted-on; the fs name may hold spaces.
  local fsname, a, b, c, mount = line:match("^(.-)%s+(%d+)%s+(%d+)%s+(%d+)%s+%S+%s+(.+)$")
  if not fsname then return nil end
  return fsname, tonumber(a), tonumber(b), tonumber(c), mount
end

local function num(s)
  return s and tonumber((s:match("^%s*(%S+)")))
end

function storage.parse_measure(p, names, stdout)
  local r = {tiers = {}, mem = {}, cpu = {}, raw = stdout}
  for _, name in ipairs(names) do
    r.tiers[name] = {name = name, path = p.tiers[name].path, inode_cap = p.tiers[name].inode_cap}
  end
  local kv = {}
  for line in stdout:gmatch("[^\n]+") do
    local name, what, rest = line:match("^tier (%S+) (%S+)%s*(.*)$")
    if name and r.tiers[name] then
      local t = r.tiers[name]
      if what == "missing" then
        t.exists = false
      elseif what == "bytes" then
        local fsname, total, used, free, mount = parse_df(rest)
        t.exists = true
        if fsname then
          t.fs, t.mount, t.bytes_total, t.bytes_used, t.bytes_free = fsname, mount, total, used, free
          t.bytes_pct = pct(used, total)
        else
          t.error = rest
        end
      elseif what == "inodes" then
        local fsname, total, used, free = parse_df(rest)
        if fsname and total > 0 then
          t.inodes_total, t.inodes_used, t.inodes_free = total, used, free
          t.inodes_pct = pct(used, total)
        end
      end
    else
      local k, v = line:match("^(%S+)%s*(.*)$")
      if k then kv[k] = v end
    end
  end
  local m = r.mem
  m.cgroup = kv.cg ~= "none" and kv.cg or nil
  m.host_total = num(kv.host_mem)
  local lim = kv.mem_limit and kv.mem_limit:match("^%s*(%S+)")
  -- v1 "unlimited" is a page-rounded 2^63; v2 says "max".
  if lim and lim ~= "max" and tonumber(lim) and tonumber(lim) < 2 ^ 60 then m.limit = tonumber(lim) end
  m.usage = num(kv.mem_usage)
  m.peak = num(kv.mem_peak)
  if kv.mem_events then m.oom_kill = tonumber(kv.mem_events:match("oom_kill%s+(%d+)")) end
  r.cpu.host_cores = num(kv.host_cores)
  if kv.cpu_max then
    local quota, period = kv.cpu_max:match("^%s*(%S+)%s+(%d+)")
    if quota and quota ~= "max" then r.cpu.quota_cpus = tonumber(quota) / tonumber(period) end
  elseif kv.cpu_quota and kv.cpu_period then
    local quota, period = num(kv.cpu_quota), num(kv.cpu_period)
    if quota and quota > 0 and period and period > 0 then r.cpu.quota_cpus = quota / period end
  end
  return r
end

local function tier_names(p, opts)
  if opts and opts.tiers then return opts.tiers end
  local names = {}
  for _, t in ipairs(profile_mod.tier_list(p)) do names[#names + 1] = t.name end
  return names
end

function storage.measure(inst, opts)
  local p = get_profile(inst, opts)
  local names = tier_names(p, opts)
  local res = storage.run(inst, storage.measure_script(p, names), {timeout = opts and opts.timeout or 60})
  if res.code ~= 0 then
    error("storage.measure on " .. tostring(inst) .. ": exit " .. tostring(res.code) .. ": " .. (res.stderr or ""), 2)
  end
  return storage.parse_measure(p, names, res.stdout)
end

-- ---------------------------------------------------------------------------
-- hogs: du of each tier's top-level entries plus the profile's hog globs, which
-- may reach the tier through a symlink (~/.cache/huggingface -> the data disk).

function storage.hogs_script(p, opts)
  local names = tier_names(p, opts)
  local lines = {"LC_ALL=C; export LC_ALL",
    "one() { s=$(du -s -B1 -x \"$1\" 2>/dev/null | tail -n 1 | cut -f1); [ -n \"$s\" ] || return 0;",
    "  r=$(readlink -f \"$1\" 2>/dev/null || echo \"$1\"); printf 'hog\\t%s\\t%s\\t%s\\n' \"$s\" \"$r\" \"$1\"; }",
    "real() { printf 'tierreal\\t%s\\t%s\\n' \"$1\" \"$(readlink -f \"$2\" 2>/dev/null || echo \"$2\")\"; }"}
  for _, name in ipairs(names) do
    local t = p.tiers[name]
    lines[#lines + 1] = "real " .. q(name) .. " " .. spath(t.path)
    if t.path ~= "/" then
      lines[#lines + 1] = "for f in " .. spath(t.path) .. "/* " .. spath(t.path) ..
        "/.[!.]*; do [ -e \"$f\" ] && one \"$f\"; done"
    end
  end
  local globs = (opts and opts.paths) or (p.storage and p.storage.hog_globs) or {}
  for _, g in ipairs(globs) do
    -- the glob is the profile's own text: quote everything but the wildcard part
    local dir, pat = g:match("^(.*)/([^/]*)$")
    if dir then
      lines[#lines + 1] = "for f in " .. spath(dir) .. "/" .. pat:gsub("[^%w%*%?%-_.]", "\\%0") ..
        "; do [ -e \"$f\" ] && one \"$f\"; done"
    end
  end
  lines[#lines + 1] = "exit 0"
  return table.concat(lines, "\n")
end

function storage.parse_hogs(stdout, top)
  local tiers, hogs = {}, {}
  for line in stdout:gmatch("[^\n]+") do
    local f = {}
    for field in (line .. "\t"):gmatch("([^\t]*)\t") do f[#f + 1] = field end
    if f[1] == "tierreal" then tiers[#tiers + 1] = {name = f[2], real = f[3]}
    elseif f[1] == "hog" and tonumber(f[2]) then
      hogs[#hogs + 1] = {bytes = tonumber(f[2]), real = f[3], path = f[4]}
    end
  end
  -- Which tier holds each hog physically: the longest real tier path prefixing it.
  for _, h in ipairs(hogs) do
    local best = -1
    for _, t in ipairs(tiers) do
      local r = t.real
      if (h.real == r or h.real:sub(1, #r + 1) == (r == "/" and "/" or r .. "/")) and #r > best then
        best, h.tier = #r, t.name
      end
    end
    h.via_symlink = h.real ~= h.path
  end
  table.sort(hogs, function(a, b)
    if a.bytes ~= b.bytes then return a.bytes > b.bytes end
    return a.path < b.path
  end)
  local out = {}
  for i = 1, math.min(top or 10, #hogs) do out[i] = hogs[i] end
  return out
end

function storage.hogs(inst, opts)
  opts = opts or {}
  local p = get_profile(inst, opts)
  if not opts.tiers then
    local names = {}
    for _, t in ipairs(profile_mod.tier_list(p)) do
      if t.path ~= "/" then names[#names + 1] = t.name end   -- du over / walks the image: on request only
    end
    opts = setmetatable({tiers = names}, {__index = opts})
  end
  local res = storage.run(inst, storage.hogs_script(p, opts), {timeout = opts.timeout or 300})
  return storage.parse_hogs(res.stdout, opts.top)
end

-- ---------------------------------------------------------------------------
-- Budgets: pure functions over a tier reading.

function storage.checkpoint_budget(t, o)
  local size, count = storage.parse_size(o.ckpt_bytes), o.count or 1
  local scratch = o.scratch_bytes and storage.parse_size(o.scratch_bytes) or 0
  local need = size * count + scratch
  local v = {need = need, free = t.bytes_free, tier = t.name, path = t.path}
  if not t.bytes_free then
    v.status, v.text = "n/a", "no free-bytes reading for " .. tostring(t.path)
    return v
  end
  v.headroom = t.bytes_free - need
  v.text = string.format("checkpoints %s x %d + scratch %s = %s; %s free on %s",
    storage.human(size), count, storage.human(scratch), storage.human(need), storage.human(t.bytes_free), t.path)
  if need > t.bytes_free then v.status = "fail"
  elseif need > t.bytes_free * (o.warn_fraction or 0.8) then v.status = "warn"
  else v.status = "ok" end
  return v
end

function storage.inode_budget(t, o)
  local need = o.files or 0
  local v = {need = need, free = t.inodes_free, tier = t.name, path = t.path}
  if not t.inodes_free then
    v.status, v.text = "n/a", "df -i gives no inode count for " .. tostring(t.path)
    return v
  end
  v.headroom = t.inodes_free - need
  v.text = string.format("%d files to write; %d inodes free on %s (df -i: %d/%d used)",
    need, t.inodes_free, t.path, t.inodes_used, t.inodes_total)
  if need > t.inodes_free then v.status = "fail"
  elseif need > t.inodes_free * (o.warn_fraction or 0.8) then v.status = "warn"
  else v.status = "ok" end
  return v
end

-- ---------------------------------------------------------------------------
-- Which tier filled, and in which dimension (AD4: inodes fill independently of bytes).

local function fail_pct(p, dim)
  local th = p and p.storage and p.storage.thresholds or {}
  return (dim == "bytes" and th.bytes_fail_pct or th.inodes_fail_pct) or 99
end

local function dim_of(t, dim)
  if dim == "bytes" then return t.bytes_pct, t.bytes_free, t.bytes_used, t.bytes_total end
  return t.inodes_pct, t.inodes_free, t.inodes_used, t.inodes_total
end

function storage.full(t, p)
  local out = {}
  for _, dim in ipairs({"bytes", "inodes"}) do
    local pc, free, used, total = dim_of(t, dim)
    if free and (free <= 0 or (pc and pc >= fail_pct(p, dim))) then
      out[#out + 1] = {dim = dim, pct = pc, free = free, used = used, total = total}
    end
  end
  return out
end

function storage.dimension_text(t, dim)
  local pc, free, used, total = dim_of(t, dim)
  local other = dim == "bytes" and "inodes" or "bytes"
  local opc = dim_of(t, other)
  if dim == "bytes" then
    return string.format("the %s tier (%s) bytes (df -B1): %s of %s used (%s%%), %s free; inodes %s%% used", tostring(t.name),
      tostring(t.path), storage.human(used), storage.human(total), tostring(pc or "?"), storage.human(free), tostring(opc or "?"))
  end
  return string.format("the %s tier (%s) inodes (df -i): %s/%s used (%s%%), %s free; bytes %s%% used", tostring(t.name),
    tostring(t.path), tostring(used or "?"), tostring(total or "?"), tostring(pc or "?"), tostring(free or "?"), tostring(opc or "?"))
end

function storage.advice(p, t, dim)
  local tier = p and p.tiers and p.tiers[t.name] or {}
  if dim == "inodes" then
    return string.format("free inodes on %s: delete many-file dirs there (per-sample visualisations; `gpurent clean " ..
      "HOST` lists them)%s; more bytes would not add inodes", t.path,
      tier.inode_cap and (" - its inode cap (" .. tier.inode_cap .. ") is fixed") or "")
  end
  local expand = tier.expandable and (p.storage and p.storage.expandable ~= false)
  return string.format("free bytes on %s (prune scratch; the hogs: `gpurent clean HOST`)%s", t.path,
    expand and (", or expand the " .. t.name .. " tier") or "")
end

-- ---------------------------------------------------------------------------
-- free_gate: a refusal, not a printed number.

-- A refusal of the free gate: code "free_gate", so a sweep tells it from other refusals.
local function refuse_free(msg) errors.raise("refusal", msg, 0, {code = "free_gate"}) end

-- One tier, both dimensions: a floor given for it, or "full" without one.
local function gate_tier(p, t, where, floor)
  if t.exists == false then refuse_free("free gate: " .. where .. " does not exist") end
  local min_bytes = floor.min_bytes and storage.parse_size(floor.min_bytes)
  if not t.bytes_free then refuse_free("free gate: cannot read free bytes of " .. where .. " (df -B1)") end
  if not t.inodes_free and (floor.min_inodes or p.tiers[t.name].inode_cap) then
    refuse_free("free gate: cannot read free inodes of " .. where .. " (df -i)")
  end
  local low = {}
  if min_bytes and t.bytes_free < min_bytes then
    low[#low + 1] = {dim = "bytes", text = string.format("%s has %s free, below the floor of %s", where,
      storage.human(t.bytes_free), storage.human(min_bytes))}
  end
  if floor.min_inodes and t.inodes_free and t.inodes_free < floor.min_inodes then
    low[#low + 1] = {dim = "inodes", text = string.format("%s has %d inodes free, below the floor of %d", where,
      t.inodes_free, floor.min_inodes)}
  end
  for _, d in ipairs(storage.full(t, p)) do
    local floored = (d.dim == "bytes" and min_bytes) or (d.dim == "inodes" and floor.min_inodes)
    if not floored then low[#low + 1] = {dim = d.dim, text = where .. " is full in " .. d.dim} end
  end
  if #low == 0 then return end
  local lines = {}
  for _, l in ipairs(low) do
    lines[#lines + 1] = string.format("free gate: %s (%s)\n  %s", l.text, storage.dimension_text(t, l.dim),
      storage.advice(p, t, l.dim))
  end
  refuse_free(table.concat(lines, "\n"))
end

function storage.free_gate(inst, tier, opts)
  opts = opts or {}
  local p = get_profile(inst, opts)
  local names = type(tier) == "table" and tier or {tier}
  for _, name in ipairs(names) do
    if not p.tiers[name] then error("storage.free_gate: profile " .. p.platform .. " has no tier " .. tostring(name), 2) end
  end
  local m = storage.measure(inst, {profile = p, tiers = names})
  for i, name in ipairs(names) do
    local floor = (opts.floors or {})[name] or (i == 1 and type(tier) ~= "table" and opts) or {}
    gate_tier(p, m.tiers[name], tostring(inst) .. ":" .. m.tiers[name].path .. " (" .. name .. " tier)", floor)
  end
  local first = m.tiers[names[1]]
  first.all = m.tiers
  return first
end

-- ---------------------------------------------------------------------------
-- checked_sync: copy on the box, then prove it (exists, size, SHA-256).

local function basename(p) return (p:gsub("/+$", ""):match("([^/]+)$")) end

function storage.checked_sync(inst, src, dst_tier, opts)
  opts = opts or {}
  local p = get_profile(inst, opts)
  local t = p.tiers[dst_tier]
  if not t then error("storage.checked_sync: profile " .. p.platform .. " has no tier " .. tostring(dst_tier), 2) end
  local dir = opts.dir or t.path
  local dst = dir .. "/" .. (opts.name or basename(src))
  local script = remote.script("storage_sync", {SRC = src, DIR = dir, DST = dst, TIER = t.path})
  local res = storage.run(inst, script, {timeout = opts.timeout or 3600})
  local out = {}
  for line in res.stdout:gmatch("[^\n]+") do
    local k, v = line:match("^(%S+)%s?(.*)$")
    if k then out[k] = v end
  end
  local where = tostring(inst)
  if res.code ~= 0 or not out.dst then
    local msg = string.format("checked_sync %s -> %s on %s failed", src, dst, where)
    if out.step then msg = msg .. " at " .. out.step end
    if out.err and out.err ~= "" then msg = msg .. ": " .. out.err end
    local tb = out.df_bytes and {parse_df(out.df_bytes)}
    local ti = out.df_inodes and {parse_df(out.df_inodes)}
    if ti and ti[2] then
      msg = msg .. string.format("\n  df -i %s: %d/%d inodes used (%s%%), %d free", t.path, ti[3], ti[2],
        tostring(pct(ti[3], ti[2])), ti[4])
    end
    if tb and tb[2] then
      msg = msg .. string.format("\n  df -B1 %s: %s of %s used (%s%%), %s free", t.path, storage.human(tb[3]),
        storage.human(tb[2]), tostring(pct(tb[3], tb[2])), storage.human(tb[4]))
    end
    local enospc = (out.err or ""):find("No space left", 1, true)
    if enospc and ti and ti[2] and ti[4] == 0 then
      msg = msg .. "\n  the inode cap is exhausted while bytes remain: free inodes (df -i), not bytes (AD4)"
    elseif enospc then
      msg = msg .. "\n  no space left: check both df -h and df -i on " .. t.path
    else
      msg = msg .. "\n  (check df -i and df -h on " .. t.path .. ")"
    end
    if res.stderr and res.stderr ~= "" then msg = msg .. "\n  stderr: " .. res.stderr:gsub("%s+$", "") end
    error(msg, 0)
  end
  local sbytes, shash = out.src:match("^(%d+)%s+(%x+)$")
  local dbytes, dhash = out.dst:match("^(%d+)%s+(%x+)$")
  if not (sbytes and dbytes and shash == dhash and sbytes == dbytes) then
    error(string.format("checked_sync %s -> %s on %s: the copy does not match its source " ..
      "(source %s bytes sha256 %s, copy %s bytes sha256 %s); df -i and df -h %s",
      src, dst, where, tostring(sbytes), tostring(shash), tostring(dbytes), tostring(dhash), t.path), 0)
  end
  local result = {src = src, dst = dst, bytes = tonumber(dbytes), sha256 = dhash, tier = dst_tier}
  if not opts.quiet then
    local line = string.format("synced %s -> %s (%d bytes, sha256 %s, verified)", src, dst, result.bytes, dhash)
    if opts.say then opts.say(line) else io.stdout:write(line, "\n") end
  end
  return result
end

return storage
