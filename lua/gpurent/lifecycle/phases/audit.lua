-- Phase 0, audit (LIFECYCLE.md): bind the run root, read the survival matrix,
-- measure every tier (bytes AND inodes), cgroup memory, GPUs and the real space
-- hogs, compute the checkpoint and inode budgets, run the gotcha probes - and
-- refuse to go on when a budget fails (a gate, not a printed number).
--
--   needs {run, inst} -> produces {audit = report {tiers, mem, gpus, hogs, budgets, gotchas}}
--   audit.measure(inst, r, opts) -> the same report, outside a lifecycle
--   opts: ckpt_bytes ("50M"), ckpt_count (2: latest + best), scratch_bytes ("0"),
--         files (inodes the run writes on the durable tier, 16), live_files (inodes on
--         the live tier, 64), gotchas (true | false | {ids}), hogs (true), timeout
-- Every tier the run writes to is budgeted in both dimensions: the live tier's bytes
-- (checkpoints) and inodes, the durable tier's bytes (the synced best) and inodes; a
-- failing budget names its tier and dimension and advises on that one only.
local storage = require "gpurent.lifecycle.storage"
local profile_mod = require "gpurent.config.profile"
local errors = require "gpurent.util.errors"

local audit = {name = "audit", needs = {"run", "inst"}, produces = {"audit"}}
local q = storage.shell_path

-- mkdir the run root's five directories; prove export/.partial and export share a
-- filesystem (the seal is a rename, which must never become a copy).
function audit.bind_root(inst, r)
  local P = r.paths
  local dirs = {}
  for _, d in ipairs(r.profile.checkpoints.run_dirs or {"cache", "active", "export/.partial", "export", "quarantine"}) do
    dirs[#dirs + 1] = q(P.root .. "/" .. d)
  end
  local res = inst:sh("mkdir -p " .. table.concat(dirs, " ") .. " && stat -c '%d %m' " ..
    q(P.root .. "/export/.partial") .. " " .. q(P.root .. "/export"), {timeout = 60, idempotent = true})
  if res.code ~= 0 then
    error(string.format("audit: cannot create the run root %s on %s: %s", P.root, r.host, res.stderr or ""), 0)
  end
  local devs = {}
  for dev in res.stdout:gmatch("(%S+) [^\n]*") do devs[#devs + 1] = dev end
  if #devs ~= 2 or devs[1] ~= devs[2] then
    errors.refuse(string.format("audit: %s/export/.partial and %s/export are on different filesystems (%s): " ..
      "sealing an export must be a rename", P.root, P.root, res.stdout:gsub("\n", "; ")), 0)
  end
  return P.root
end

local function survival_lines(profile)
  local lines = {"survival matrix (" .. profile.platform .. ", meter-stop verb " .. tostring(profile.facts.meter_stop_verb) .. "):"}
  for _, t in ipairs(profile_mod.tier_list(profile)) do
    local s = t.survives or {}
    local keys = {}
    for k in pairs(s) do keys[#keys + 1] = k end
    table.sort(keys)
    local parts = {}
    for _, k in ipairs(keys) do parts[#parts + 1] = k .. " " .. (s[k] and "yes" or "NO") end
    lines[#lines + 1] = string.format("  %-8s %-20s %s", t.name, t.path, table.concat(parts, ", "))
  end
  return lines
end

local function tier_line(t)
  if t.exists == false then return string.format("  %-8s %s: missing", t.name, t.path) end
  return string.format("  %-8s %-20s bytes %s free of %s (%s%% used); inodes %s free of %s (%s%% used)%s",
    t.name, t.path, storage.human(t.bytes_free), storage.human(t.bytes_total), tostring(t.bytes_pct or "?"),
    tostring(t.inodes_free or "?"), tostring(t.inodes_total or "?"), tostring(t.inodes_pct or "?"),
    t.inode_cap and (" [inode cap " .. t.inode_cap .. "]") or "")
end

local function gpus(inst)
  local res = inst:sh("nvidia-smi --query-gpu=index,name,memory.total,utilization.gpu --format=csv,noheader 2>&1",
    {timeout = 60, idempotent = true})
  local list = {}
  if res.code == 0 then
    for line in res.stdout:gmatch("[^\n]+") do list[#list + 1] = line end
  end
  return list, res.code ~= 0 and (res.stdout:match("[^\n]*")) or nil
end

function audit.measure(inst, r, o)
  o = o or {}
  local profile = r.profile
  local report = {}
  audit.bind_root(inst, r)
  r:say("audit", "run root %s: cache active export/.partial export quarantine (export/.partial and export on one filesystem)",
    r.paths.root)
  r:say("audit", table.concat(survival_lines(profile), "\n"))
  local m = storage.measure(inst, {profile = profile, timeout = o.timeout})
  report.tiers, report.mem = m.tiers, m.mem
  local lines = {"tiers (df -h AND df -i):"}
  for _, t in ipairs(profile_mod.tier_list(profile)) do lines[#lines + 1] = tier_line(m.tiers[t.name]) end
  r:say("audit", table.concat(lines, "\n"))
  r:say("audit", "memory: cgroup %s limit %s, usage %s, peak %s, oom_kill %s (host shows %s: trust the cgroup); cpu quota %s of %s host cores",
    tostring(m.mem.cgroup or "none"), storage.human(m.mem.limit), storage.human(m.mem.usage), storage.human(m.mem.peak),
    tostring(m.mem.oom_kill or "?"), storage.human(m.mem.host_total), tostring(m.cpu.quota_cpus or "none"),
    tostring(m.cpu.host_cores or "?"))
  local g, gerr = gpus(inst)
  report.gpus = g
  r:say("audit", "GPUs: %s", #g > 0 and table.concat(g, "; ") or ("none (" .. tostring(gerr) .. ")"))
  if o.hogs ~= false then
    local ok, hogs = pcall(storage.hogs, inst, {profile = profile, top = 5})
    report.hogs = ok and hogs or nil
    if ok then
      local hl = {"space hogs (du):"}
      for _, h in ipairs(hogs) do
        hl[#hl + 1] = string.format("  %10s  %s%s", storage.human(h.bytes), h.path,
          h.via_symlink and (" -> " .. h.real .. " (on " .. tostring(h.tier) .. ", via a symlink)") or "")
      end
      if #hogs == 0 then hl[#hl + 1] = "  (nothing of note)" end
      r:say("audit", table.concat(hl, "\n"))
    else
      r:say("audit", "space hogs: n/a (%s)", tostring(hogs))
    end
  end
  -- budgets: checkpoints on the live tier, inodes on the durable tier
  local live, durable = profile_mod.live_tier(profile), profile_mod.durable_tier(profile)
  local budgets = {}
  budgets.checkpoint = storage.checkpoint_budget(m.tiers[live.name], {ckpt_bytes = o.ckpt_bytes or "50M",
    count = o.ckpt_count or 2, scratch_bytes = o.scratch_bytes or 0})
  budgets.live_inodes = storage.inode_budget(m.tiers[live.name], {files = o.live_files or 64})
  if durable then
    budgets.inodes = storage.inode_budget(m.tiers[durable.name], {files = o.files or 16})
    if durable.name ~= live.name then
      budgets.durable_bytes = storage.checkpoint_budget(m.tiers[durable.name], {ckpt_bytes = o.ckpt_bytes or "50M", count = 1})
    end
  end
  local DIM = {checkpoint = "bytes", live_inodes = "inodes", inodes = "inodes", durable_bytes = "bytes"}
  report.budgets = budgets
  local order = {"checkpoint", "live_inodes", "durable_bytes", "inodes"}
  for _, name in ipairs(order) do
    local v = budgets[name]
    if v then r:say("audit", "%s budget: %s: %s", name, string.upper(v.status), v.text) end
  end
  -- gotcha probes (gpurent.gotchas); a warning is shown, a budget failure stops
  if o.gotchas ~= false then
    local ok, gotchas = pcall(require, "gpurent.gotchas")
    if ok then
      local gok, results = pcall(gotchas.run, inst, {profile = profile, only = type(o.gotchas) == "table" and o.gotchas or nil,
        code_dir = o.code_dir, timeout = o.timeout or 60})
      if gok then
        report.gotchas = results
        local gl = {"gotcha probes:"}
        for _, x in ipairs(results) do
          gl[#gl + 1] = string.format("  %-5s %-10s %s: %s", x.status, x.id, x.title, x.evidence)
        end
        r:say("audit", table.concat(gl, "\n"))
      else
        r:say("audit", "gotcha probes: could not run (%s)", tostring(gok and "" or results))
      end
    else
      r:say("audit", "gotcha probes: gpurent.gotchas not available")
    end
  end
  for _, name in ipairs(order) do
    local v = budgets[name]
    if v and v.status == "fail" then
      local t = m.tiers[v.tier]
      errors.refuse(string.format("audit: the %s budget fails on %s: the %s tier's %s: %s\n  %s", name, r.host,
        v.tier, DIM[name], v.text, storage.advice(profile, t, DIM[name])), 0)
    end
  end
  return report
end

function audit.run(ctx, o)
  return {audit = audit.measure(ctx.inst, ctx.run, o)}
end

return setmetatable(audit, {__call = function(_, ...) return audit.run(...) end})
