-- gpurent.gotchas.slurm: a Slurm cluster's gotchas (issue 19), probed from the login
-- node in the catalog form of gpurent.gotchas: the storage quota of each tier (bytes
-- and inodes), scratch's purge policy (a profile key), the partition's state, time
-- limit and GRES against the profile's request, the account's fair-share, and what an
-- allocation sees (GPUs, the interpreter, conda, modules) against the login node.
-- Each probe is one round trip (lua/gpurent/remote/gotcha_slurm_*.sh); a command the
-- cluster does not permit is "n/a: not permitted", never an error, and an allocation
-- that does not start in time is inconclusive (n/a), not a failure.
local G = require "gpurent.gotchas"
local storage = require "gpurent.lifecycle.storage"
local remote = require "gpurent.remote"

local ok, warn, fail, na = G.ok, G.warn, G.fail, G.na
local human = storage.human

local function unreadable(r) return na("probe output unreadable (exit " .. tostring(r.code) .. ")") end
local function slurm_of(p) return p.slurm or {} end
local function first_line(s) return (tostring(s or ""):match("[^\n]*")) end

-- Slurm's time forms (MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS) -> seconds; nil
-- for "infinite"/"UNLIMITED" or what does not parse.
local function slurm_seconds(t)
  t = tostring(t or "")
  if t == "" or t:match("^[Ii][Nn][Ff]") or t:match("^UNLIMITED") then return nil end
  local d, rest = t:match("^(%d+)%-(.+)$")
  local parts = {}
  for x in (rest or t):gmatch("[^:]+") do
    if not x:match("^%d+$") then return nil end
    parts[#parts + 1] = tonumber(x)
  end
  if d then   -- D-HH, D-HH:MM, D-HH:MM:SS
    local h, m, s = parts[1] or 0, parts[2] or 0, parts[3] or 0
    return tonumber(d) * 86400 + h * 3600 + m * 60 + s
  end
  if #parts == 1 then return parts[1] * 60 end                               -- MM
  if #parts == 2 then return parts[1] * 60 + parts[2] end                    -- MM:SS
  if #parts == 3 then return parts[1] * 3600 + parts[2] * 60 + parts[3] end  -- HH:MM:SS
end

-- ---------------------------------------------------------------------------
local QUOTA = {
  id = "S-QUOTA", severity = "high",
  title = "home or scratch quota nearly used (bytes or inodes)",
  symptom = "a checkpoint save or the durable sync fails with 'Disk quota exceeded' hours into a job",
  fix = "free space or files in the tier named (old runs' checkpoints, caches: pull them first), or ask the " ..
        "cluster's admins for more quota; keep many small files in one archive (inodes)",
}

local function pct(used, limit) return (used and limit and limit > 0) and math.floor(used * 100 / limit + 0.5) or nil end

function QUOTA.probe(inst, ctx)
  local p = ctx.profile
  local names, lines = {}, {}
  for name in pairs(p.tiers or {}) do names[#names + 1] = name end
  table.sort(names)
  for _, name in ipairs(names) do lines[#lines + 1] = name .. " " .. tostring(p.tiers[name].path) end
  if #lines == 0 then return na("the profile names no storage tier") end
  local r = ctx.sh(remote.script("gotcha_slurm_quota", {TIERS = remote.lines(lines, "S-QUOTA: tiers")}))
  local kv, multi = G.kv(r.stdout)
  if not kv.done then return unreadable(r) end
  local th = (p.storage and p.storage.thresholds) or {}
  local status, notes = "ok", {}
  local function worse(s) if G.STATUS_ORDER[s] > G.STATUS_ORDER[status] then status = s end end
  local absent = {}
  for _, l in ipairs(multi.absent or {}) do
    local name, path, at = l:match("^(%S+) (%S+) (%S+)$")
    if name then absent[name] = path .. " (not created yet; measured at " .. at .. ")" end
  end
  for _, l in ipairs(multi.tier or {}) do
    local name, path, rest = l:match("^(%S+) (%S+) (.*)$")
    path = absent[name] or path
    if rest == "missing" then
      worse("warn")
      notes[#notes + 1] = string.format("%s %s does not exist (set tiers.%s.path in the site overlay)", name, path, name)
    elseif rest then
      local src, bu, bl, iu, il = rest:match("^(%S+) (%S+) (%S+) (%S+) (%S+)$")
      bu, bl, iu, il = tonumber(bu), tonumber(bl), tonumber(iu), tonumber(il)
      local bp, ip = pct(bu, bl), pct(iu, il)
      local what = src == "df" and "file system (no quota reported)" or (src .. " quota")
      notes[#notes + 1] = string.format("%s %s: %s of %s bytes (%s%%), %s of %s inodes (%s%%) [%s]", name, path,
        human(bu), bl and human(bl) or "no limit", tostring(bp or "-"), tostring(iu or "?"),
        tostring(il or "no limit"), tostring(ip or "-"), what)
      if (bp and bp >= (th.bytes_fail_pct or 99)) or (ip and ip >= (th.inodes_fail_pct or 99)) then worse("fail")
      elseif (bp and bp >= (th.bytes_warn_pct or 90)) or (ip and ip >= (th.inodes_warn_pct or 90)) then worse("warn") end
    end
  end
  if #notes == 0 then return unreadable(r) end
  return {status = status, evidence = table.concat(notes, "; ")}
end

-- ---------------------------------------------------------------------------
local PURGE = {
  id = "S-PURGE", severity = "medium",
  title = "scratch is purged",
  symptom = "a run's checkpoints and results vanish from scratch weeks later (the cluster's purge policy)",
  fix = "keep the durable tier (home) for what must survive: gpurent syncs best.pth there and pulls results; " ..
        "state the policy in the site overlay (slurm.scratch_purge_days: N, 0 = never purged)",
}
function PURGE.probe(inst, ctx)
  local p = ctx.profile
  local days = slurm_of(p).scratch_purge_days
  local ck = p.checkpoints or {}
  local live, durable = ck.live_tier, ck.durable_tier
  local where = live and p.tiers[live] and (live .. " (" .. tostring(p.tiers[live].path) .. ")") or "scratch"
  if days == nil then
    return na("the profile does not say whether " .. where .. " is purged: set slurm.scratch_purge_days")
  end
  if days == 0 then return ok(where .. " is never purged (slurm.scratch_purge_days: 0)") end
  local text = string.format("%s purges files untouched for %d days (slurm.scratch_purge_days)", where, days)
  if not durable or durable == live then
    return fail(text .. "; the durable tier is the same tier: best.pth would be purged too")
  end
  return warn(string.format("%s: the live checkpoints (%s) live there; best.pth is synced to %s; pull results within %d days",
    text, table.concat(ck.scratch or {}, ", "), durable, days))
end

-- ---------------------------------------------------------------------------
local PARTITION = {
  id = "S-PARTITION", severity = "high",
  title = "the partition is down or drained, or refuses the job's request",
  symptom = "the job stays PENDING for hours (PartitionDown, ReqNodeNotAvail, PartitionTimeLimit) or sbatch refuses it",
  fix = "pick another partition (slurm.partition), lower slurm.time under the partition's limit, ask for GRES the " ..
        "partition has; a drained partition comes back when the admins resume it",
}

local DOWN_STATES = {drained = true, draining = true, down = true, fail = true, failing = true, maint = true,
                     ["not_responding"] = true, inval = true, unknown = true, reserved = true, planned = true}

-- "gpu:2", "gpu:a100:4(S:0-1)", "gpu:a100:4,shard:8" -> {type=, count=} of the gpu GRES
local function gpu_gres(g)
  for item in tostring(g or ""):gmatch("[^,]+") do
    item = item:gsub("%(.*%)$", "")
    local a, b, c = item:match("^(gpu):?([^:]*):?([^:]*)$")
    if a then
      if c ~= "" then return {type = b, count = tonumber(c)} end
      if tonumber(b) then return {count = tonumber(b)} end
      return {type = b ~= "" and b or nil, count = 1}
    end
  end
end

function PARTITION.probe(inst, ctx)
  local s = slurm_of(ctx.profile)
  local r = ctx.sh(remote.script("gotcha_slurm_partition", {PARTITION = s.partition or ""}))
  local kv, multi = G.kv(r.stdout)
  if not kv.done then return unreadable(r) end
  if kv.sinfo_rc == "127" then return na("sinfo is not installed on the login node") end
  if kv.sinfo_rc ~= "0" then
    return fail(string.format("sinfo -p %s: %s", tostring(s.partition), first_line(kv.sinfo_err)))
  end
  local rows = {}
  for _, l in ipairs(multi.part or {}) do
    local f = {}
    for x in (l .. "|"):gmatch("([^|]*)|") do f[#f + 1] = x end
    local name = f[1]:gsub("%*$", "")
    if (s.partition and name == s.partition) or (not s.partition and f[1]:sub(-1) == "*") then
      rows[#rows + 1] = {name = name, avail = f[2], limit = f[3], gres = f[4], nodes = tonumber(f[5]) or 0,
                         state = (f[6] or ""):gsub("[%*~#!%%$@^-]+$", ""), reason = f[7]}
    end
  end
  if #rows == 0 then
    return fail(s.partition and ("partition " .. s.partition .. " not listed by sinfo")
      or "no default partition (sinfo marks none with *): set slurm.partition")
  end
  local name, problems, total, usable, states = rows[1].name, {}, 0, 0, {}
  for _, x in ipairs(rows) do
    total = total + x.nodes
    if not DOWN_STATES[x.state] then usable = usable + x.nodes end
    states[#states + 1] = string.format("%d %s%s", x.nodes, x.state,
      (x.reason and x.reason ~= "" and x.reason ~= "none") and (" (" .. x.reason .. ")") or "")
  end
  local status = "ok"
  if rows[1].avail ~= "up" then
    status = "fail"
    problems[#problems + 1] = "the partition is " .. rows[1].avail .. ": jobs stay PENDING (PartitionDown)"
  end
  if usable == 0 then
    status = "fail"
    problems[#problems + 1] = "no node can take a job (" .. table.concat(states, ", ") .. "): jobs stay PENDING"
  elseif usable < total and status == "ok" then
    status = "warn"
  end
  local want, limit = slurm_seconds(s.time), slurm_seconds(rows[1].limit)
  if want and limit and want > limit then
    status = "fail"
    problems[#problems + 1] = string.format("slurm.time %s is over the partition's limit %s (PartitionTimeLimit)",
      s.time, rows[1].limit)
  end
  local req, have = gpu_gres(s.gres), gpu_gres(rows[1].gres)
  if req and not have then
    status = "fail"
    problems[#problems + 1] = "slurm.gres " .. s.gres .. " but the partition's nodes have no GPU GRES (" .. rows[1].gres .. ")"
  elseif req and have and ((req.type and have.type and req.type ~= have.type) or (req.count or 1) > (have.count or 0)) then
    status = "fail"
    problems[#problems + 1] = "slurm.gres " .. s.gres .. " does not fit a node's " .. rows[1].gres
  end
  local facts = string.format("partition %s: %s, time limit %s, GRES %s, nodes %s", name, rows[1].avail,
    rows[1].limit, rows[1].gres, table.concat(states, ", "))
  return {status = status, evidence = facts .. (#problems > 0 and ("; " .. table.concat(problems, "; ")) or "")}
end

-- ---------------------------------------------------------------------------
local FAIRSHARE = {
  id = "S-FAIRSHARE", severity = "low",
  title = "low fair-share: the account's jobs wait behind others",
  symptom = "jobs sit PENDING (Priority) while others start; a sweep takes days to drain",
  fix = "run when the account's recent usage has decayed, use a less used account (slurm.account) or a QoS " ..
        "the admins give for it; small jobs backfill sooner (a tight slurm.time)",
}
function FAIRSHARE.probe(inst, ctx)
  local s = slurm_of(ctx.profile)
  local r = ctx.sh(remote.script("gotcha_slurm_share", {ACCOUNT = s.account or ""}))
  local kv, multi = G.kv(r.stdout)
  if not kv.done then return unreadable(r) end
  local assoc = kv.assoc_rc == "0" and multi.assoc and multi.assoc[1]
  local assoc_text = ""
  if assoc then
    local a = {}
    for x in (assoc .. "|"):gmatch("([^|]*)|") do a[#a + 1] = x end
    assoc_text = string.format("; association: account %s, QoS %s, MaxWall %s, GrpTRES %s", a[1] or "?",
      (a[7] ~= "" and a[7]) or "-", (a[6] ~= "" and a[6]) or "-", (a[4] ~= "" and a[4]) or "-")
  elseif kv.assoc_rc and kv.assoc_rc ~= "0" then
    assoc_text = "; sacctmgr show assoc: not permitted (" .. first_line(kv.assoc_err) .. ")"
  end
  if kv.share_rc ~= "0" then
    return na("fair-share not permitted or not kept on this cluster (sshare" ..
      (kv.share_rc == "127" and " is not installed" or (": " .. first_line(kv.share_err))) .. ")" .. assoc_text)
  end
  local line = multi.share and multi.share[1]
  if not line or line == "" then
    return na("no fair-share kept for this user (sshare lists no association: no accounting or not permitted)" .. assoc_text)
  end
  local f = {}
  for x in (line .. "|"):gmatch("([^|]*)|") do f[#f + 1] = x end
  local fs = tonumber(f[7])
  local text = string.format("account %s user %s: fair-share %s (normalised shares %s, effective usage %s)", f[1], f[2],
    tostring(f[7]), tostring(f[4]), tostring(f[6])) .. assoc_text
  if fs and fs < 0.1 then return warn(text .. ": below 0.1, its jobs yield to others") end
  return ok(text)
end

-- ---------------------------------------------------------------------------
local GPU_ALLOC = {
  id = "S-GPU-ALLOC", severity = "high",
  title = "no GPU visible inside an allocation, or a different environment on the compute nodes",
  symptom = "the job trains on CPU (CUDA unavailable) or fails 'command not found' for the python/conda the login node has",
  fix = "ask for GPUs the way the cluster wants (slurm.gres, e.g. gpu:a100:1; some clusters want --gpus); load the " ..
        "same modules / conda env in the job (a proxy_hook-like line) that the login node's shell has",
}
-- how long the allocation may pend before the probe calls it inconclusive: the profile's
-- slurm.probe_wait_seconds (a busy cluster's users give it longer), else this
GPU_ALLOC.wait_seconds = 30

local PENDING_WORDS = {"queued and waiting", "Requested nodes are busy", "Job allocation .- has been revoked",
                       "Unable to allocate resources: Resource temporarily unavailable", "timed out",
                       "Required node not available"}

function GPU_ALLOC.probe(inst, ctx)
  local p = ctx.profile
  local s = slurm_of(p)
  local opts = {}
  for _, k in ipairs{"partition", "account", "qos"} do
    if s[k] then opts[#opts + 1] = "--" .. k .. "=" .. tostring(s[k]) end
  end
  local req = gpu_gres(s.gres)
  opts[#opts + 1] = "--gres=gpu:" .. ((req and req.type) and (req.type .. ":") or "") .. "1"
  local wait = math.tointeger(s.probe_wait_seconds) or GPU_ALLOC.wait_seconds
  local py = (p.env and p.env.python) or "python3"
  local r = ctx.sh(remote.script("gotcha_slurm_gpu", {OPTIONS = remote.lines(opts, "S-GPU-ALLOC: options"),
    WAIT = wait, PYTHON = py}), {timeout = wait + 90})
  local kv, multi = G.kv(r.stdout)
  if not kv.done then return unreadable(r) end
  if kv.srun_rc == "127" then return na("srun is not installed on the login node") end
  local out = multi.out or {}
  local text = table.concat(out, "\n")
  local gpus, cvd, node, tools, module = {}, nil, nil, {}, nil
  for _, l in ipairs(out) do
    local k, v = l:match("^(%S+) ?(.*)$")
    if k == "smi" and v:match("^GPU %d+:") then gpus[#gpus + 1] = v:match("^GPU %d+: ([^%(]-)%s*%(") or v
    elseif k == "cvd" then cvd = v
    elseif k == "node" then node = v
    elseif k == "compute_tool" then local t, w = v:match("^(%S+) (.*)$"); if t then tools[t] = w end
    elseif k == "compute_module" then module = v end
  end
  if kv.srun_rc ~= "0" and not node then
    for _, w in ipairs(PENDING_WORDS) do
      if text:find(w) then
        return na(string.format("inconclusive: the allocation (srun %s) did not start within %d s (slurm.probe_wait_seconds): %s",
          table.concat(opts, " "), wait, (text:gsub("\n", "; "))))
      end
    end
    if kv.srun_rc == "124" then return na("inconclusive: srun did not return within " .. (wait + 60) .. " s") end
    return fail(string.format("srun %s refused or failed (exit %s): %s", table.concat(opts, " "), kv.srun_rc,
      (text:gsub("\n", "; "))))
  end
  if #gpus == 0 then
    return fail(string.format("an allocation on %s with %s sees no GPU (nvidia-smi -L: %s; CUDA_VISIBLE_DEVICES=%s)",
      tostring(node), opts[#opts], first_line((text:match("smi ([^\n]*)"))), tostring(cvd)))
  end
  -- the login node's tools against the compute node's (modules/conda)
  local diffs = {}
  for _, l in ipairs(multi.login_tool or {}) do
    local t, w = l:match("^(%S+) (.*)$")
    if t and w ~= "none" and tools[t] == "none" then
      diffs[#diffs + 1] = t .. " is " .. w .. " on the login node but not found on " .. tostring(node)
    elseif t and tools[t] and w ~= tools[t] and tools[t] ~= "none" then
      diffs[#diffs + 1] = t .. " is " .. w .. " on the login node, " .. tools[t] .. " on " .. tostring(node)
    end
  end
  if kv.login_module == "yes" and module == "no" then diffs[#diffs + 1] = "`module` exists on the login node only" end
  local text2 = string.format("an allocation on %s with %s sees %d GPU(s) (%s; CUDA_VISIBLE_DEVICES=%s)", tostring(node),
    opts[#opts], #gpus, table.concat(gpus, ", "), tostring(cvd))
  if #diffs > 0 then return warn(text2 .. "; " .. table.concat(diffs, "; ")) end
  return ok(text2 .. "; " .. py .. ", conda and modules alike on the login and compute nodes")
end

QUOTA.slurm_seconds = slurm_seconds   -- shared with the tests of the time forms
return {QUOTA, PURGE, PARTITION, FAIRSHARE, GPU_ALLOC}
