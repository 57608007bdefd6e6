-- gpurent.gotchas.universal: the platform-independent gotchas of LIFECYCLE.md that a
-- probe can see on a live box: cgroup OOM kills, host-wide vs cgroup readings, zombie
-- VRAM, a lost GPU (Xid), throttling, no GPU attached, CUDA/driver/torch mismatch,
-- torch threads vs the CPU quota, CRLF scripts, block-buffered stdout, WANDB offline
-- without a key, code drift from the commit, and a script changed under a live run.
-- Probes read the box with POSIX sh (no python needed) and say n/a when they cannot.
local G = require "gpurent.gotchas"
local storage = require "gpurent.lifecycle.storage"
local hash = require "gpurent.util.hash"
local remote = require "gpurent.remote"

local q, ok, warn, fail, na = G.q, G.ok, G.warn, G.fail, G.na
local human = storage.human
local SSH = {["ssh-rental"] = true, ssh = true}
local ALL = {["ssh-rental"] = true, ssh = true, ["local"] = true}

local function unreadable(r) return na("probe output unreadable (exit " .. tostring(r.code) .. ")") end

local function first_line(s) return ((s or ""):match("[^\n]*") or ""):gsub("%s+$", "") end

-- ---------------------------------------------------------------------------
local OOM = {
  id = "U-OOM", severity = "high", universal = true, kinds = ALL,
  title = "cgroup OOM kill",
  symptom = "a process vanished with a bare \"Killed\" / exit 137; the log just stops",
  fix = "read memory.events oom_kill (v2) or memory.oom_control (v1) before concluding; lower DataLoader " ..
        "workers / batch / cached tensors; enumerate reboot, OOM, SSH hang-up and manual kill before blaming one",
}
function OOM.probe(inst, ctx)
  local m = storage.measure(inst, {profile = ctx.profile, tiers = {}}).mem
  if not m.cgroup then return na("no cgroup memory controller readable") end
  if m.oom_kill == nil then return na("the cgroup (" .. m.cgroup .. ") reports no oom_kill counter") end
  if m.oom_kill > 0 then
    return fail(string.format("oom_kill %d in this cgroup (limit %s, peak %s): a process was OOM-killed",
      m.oom_kill, human(m.limit), human(m.peak)))
  end
  return ok("oom_kill 0 in this cgroup (limit " .. human(m.limit) .. ")")
end

-- ---------------------------------------------------------------------------
local HOSTVIEW = {
  id = "U-HOSTVIEW", severity = "low", universal = true, kinds = SSH,
  title = "host-wide readings differ from the container's cgroup",
  symptom = "free/top/nproc/uptime show the host's RAM and cores; workers and batches sized from them overrun the cgroup",
  fix = "size from the cgroup: memory.max / memory.limit_in_bytes and cpu.max / cfs_quota_us (gpurent storage.measure)",
}
function HOSTVIEW.probe(inst, ctx)
  local r = storage.measure(inst, {profile = ctx.profile, tiers = {}})
  local m, c = r.mem, r.cpu
  if not m.cgroup then return na("no cgroup readable: only host-wide numbers exist here") end
  local diffs = {}
  if m.limit and m.host_total and m.limit < m.host_total * 0.95 then
    diffs[#diffs + 1] = string.format("memory: host %s vs cgroup %s", human(m.host_total), human(m.limit))
  end
  if c.quota_cpus and c.host_cores and c.quota_cpus < c.host_cores then
    diffs[#diffs + 1] = string.format("CPUs: host %d cores vs cgroup quota %.2g", c.host_cores, c.quota_cpus)
  end
  if #diffs > 0 then
    return warn("free/nproc show the host, not this container: " .. table.concat(diffs, "; "))
  end
  return ok(string.format("cgroup limits are not below the host's (memory %s, CPUs %s)",
    m.limit and human(m.limit) or "unlimited", c.quota_cpus and string.format("%.2g", c.quota_cpus) or "unlimited"))
end

-- ---------------------------------------------------------------------------

local ZOMBIE = {
  id = "U-ZOMBIE-VRAM", severity = "high", universal = true, kinds = SSH,
  title = "dead or zombie processes holding VRAM",
  symptom = "CUDA out of memory at start-up although nothing of yours runs; nvidia-smi lists a stale PID",
  fix = "find the holder (nvidia-smi --query-compute-apps=pid,used_memory) and kill that exact PID or its " ..
        "parent (a zombie's memory is released when its parent reaps it); never kill by a name pattern",
}
function ZOMBIE.probe(inst, ctx)
  local r = ctx.sh(remote.script("gotcha_zombie"))
  local kv, multi = G.kv(r.stdout)
  if not kv.done then return unreadable(r) end
  if kv.smi_rc ~= "0" then
    return na("nvidia-smi failed (exit " .. tostring(kv.smi_rc) .. "): " .. first_line(kv.gpu))
  end
  local zombies, gone, live = {}, {}, 0
  for _, a in ipairs(multi.app or {}) do
    local pid, mem, st = a:match("^(%d+) (%S+) (%S+)$")
    if st == "Z" or st == "X" then zombies[#zombies + 1] = "pid " .. pid .. " (" .. mem .. " MiB, zombie)"
    elseif st == "gone" then gone[#gone + 1] = "pid " .. tostring(pid) .. " (" .. tostring(mem) .. " MiB, no such process here)"
    else live = live + 1 end
  end
  if #zombies > 0 then return fail("VRAM held by " .. table.concat(zombies, ", ")) end
  local used = 0
  for _, g in ipairs(multi.gpu or {}) do
    local mem = tonumber(g:match(",%s*(%d+)"))
    if mem then used = used + mem end
  end
  if #gone > 0 then
    return warn("VRAM held by " .. table.concat(gone, ", ") .. ": dead, or in another PID namespace")
  end
  if live == 0 and used > 1024 then
    return warn(used .. " MiB of VRAM in use with no compute process listed")
  end
  return ok(live .. " compute process(es), all alive; " .. used .. " MiB VRAM used")
end

-- ---------------------------------------------------------------------------
local XID = {
  id = "U-XID", severity = "high", universal = true, kinds = SSH,
  title = "lost GPU (Xid 48/79)",
  symptom = "nvidia-smi: \"Unable to determine the device handle\" / \"GPU is lost\"; CUDA errors mid-run",
  fix = "the GPU is gone until the host is fixed: checkpoint what you can, power the box off and ask the " ..
        "platform for another machine; do not blind-retry on this box",
}
function XID.probe(inst, ctx)
  local r = ctx.sh(remote.script("gotcha_xid"))
  local kv, multi = G.kv(r.stdout)
  if not kv.done then return unreadable(r) end
  local smi = table.concat(multi.smi or {}, " / ")
  if kv.smi_rc == "127" then return na("nvidia-smi is not installed (see U-NOGPU)") end
  for _, x in ipairs(multi.xid or {}) do
    local code = tonumber(x:match("Xid[^:]*:%s*(%d+)") or x:match("Xid.-(%d+)"))
    if code == 48 or code == 79 then return fail("kernel log: " .. x) end
  end
  if kv.smi_rc ~= "0" then
    if smi:find("No devices were found", 1, true) then return na("no GPU listed (see U-NOGPU)") end
    return fail("nvidia-smi exits " .. kv.smi_rc .. ": " .. smi)
  end
  return ok("nvidia-smi lists: " .. smi .. (multi.xid and (" (dmesg: " .. multi.xid[1] .. ")") or ""))
end

-- ---------------------------------------------------------------------------
local THROTTLE = {
  id = "U-THROTTLE", severity = "medium", universal = true, kinds = SSH,
  title = "thermal or power throttling",
  symptom = "steps/s drop mid-run with no code change; GPU clocks low at full load",
  fix = "check nvidia-smi -q -d PERFORMANCE; a box that throttles under load is the platform's problem: " ..
        "report it and move the run (checkpoint + resume)",
}
local THROTTLE_BITS = {[0x8] = "HW slowdown", [0x20] = "SW thermal slowdown", [0x40] = "HW thermal slowdown",
                       [0x80] = "HW power brake"}
function THROTTLE.probe(inst, ctx)
  local r = ctx.sh(remote.script("gotcha_throttle"))
  local kv, multi = G.kv(r.stdout)
  if not kv.done then return unreadable(r) end
  if kv.smi_rc ~= "0" then return na("nvidia-smi failed (exit " .. tostring(kv.smi_rc) .. "): " .. first_line(kv.gpu)) end
  local worst, notes = "ok", {}
  for _, g in ipairs(multi.gpu or {}) do
    local f = {}
    for v in (g .. ","):gmatch("%s*([^,]*),") do f[#f + 1] = v end
    local idx, temp, draw, limit, reasons = f[1], tonumber(f[2]), tonumber(f[3]), tonumber(f[4]), f[5]
    local s, why = "ok", {}
    if temp and temp >= 90 then s = "fail"; why[#why + 1] = temp .. " C"
    elseif temp and temp >= 85 then s = "warn"; why[#why + 1] = temp .. " C" end
    if draw and limit and limit > 0 and draw >= limit * 0.98 then
      if s == "ok" then s = "warn" end
      why[#why + 1] = string.format("power %.0f/%.0f W (at the cap)", draw, limit)
    end
    local bits = reasons and tonumber(reasons:match("0x%x+") or "")
    if bits then
      for bit, name in pairs(THROTTLE_BITS) do
        if bits & bit ~= 0 then s = "fail"; why[#why + 1] = name end
      end
    end
    if G.STATUS_ORDER[s] > G.STATUS_ORDER[worst] then worst = s end
    notes[#notes + 1] = "GPU " .. tostring(idx) .. ": " .. (#why > 0 and table.concat(why, ", ") or
      ((temp and (temp .. " C") or "?") .. (draw and string.format(", %.0f W", draw) or "")))
  end
  if #notes == 0 then return na("nvidia-smi listed no GPU") end
  return {status = worst, evidence = table.concat(notes, "; ")}
end

-- ---------------------------------------------------------------------------

local NOGPU = {
  id = "U-NOGPU", severity = "high", universal = true, kinds = SSH,
  title = "GPU never attached",
  symptom = "training runs on CPU (slow, no error); torch.cuda.is_available() is False",
  fix = "check the plan has a GPU (no-GPU mode?), nvidia-smi -L lists it, and torch is the image's CUDA build; " ..
        "make the trainer refuse to start without CUDA",
}
function NOGPU.probe(inst, ctx)
  local py = ctx.profile.env.python
  local r = ctx.sh(remote.script("gotcha_nogpu", {PYTHON = py, TORCH_PY = remote.text("torch_probe", "py")}),
    {timeout = 120})
  local kv, multi = G.kv(r.stdout)
  if not kv.done then return unreadable(r) end
  local listed = 0
  for _, l in ipairs(multi.smi or {}) do if l:match("^GPU %d+:") then listed = listed + 1 end end
  if kv.smi_rc == "127" then return fail("nvidia-smi is not installed: no GPU driver in this box") end
  if kv.smi_rc == "6" or (kv.smi_rc == "0" and listed == 0) then
    return fail("nvidia-smi lists no GPU: " .. first_line(kv.smi))
  end
  if kv.smi_rc ~= "0" then return na("nvidia-smi failed (exit " .. kv.smi_rc .. "; see U-XID)") end
  if kv.torch then
    local ver, cuda, avail, count = kv.torch:match("^(%S+) (%S+) (%S+) (%S+)$")
    if avail ~= "True" then
      return fail(string.format("nvidia-smi lists %d GPU(s) but torch %s sees no CUDA (torch.version.cuda=%s)",
        listed, tostring(ver), tostring(cuda)))
    end
    return ok(string.format("torch %s sees %s CUDA device(s); nvidia-smi lists %d", ver, count, listed))
  end
  return na(string.format("nvidia-smi lists %d GPU(s); torch not importable by %s (%s), so CUDA visibility is unchecked",
    listed, py, kv.torch_err or "no output"))
end

-- ---------------------------------------------------------------------------
local MISMATCH = {
  id = "U-CUDA-MISMATCH", severity = "high", universal = true, kinds = SSH,
  title = "CUDA toolkit vs driver vs torch build mismatch",
  symptom = "CUDA driver version is insufficient / no kernel image is available / nvcc builds extensions torch cannot load",
  fix = "keep the image's torch build (AD9); pick a torch wheel whose CUDA is <= the driver's CUDA version; " ..
        "build extensions with the nvcc matching torch.version.cuda",
}
local function mm(v) local a, b = (v or ""):match("(%d+)%.(%d+)"); return a and {tonumber(a), tonumber(b)} end
local function newer(a, b) return a[1] > b[1] or (a[1] == b[1] and a[2] > b[2]) end
function MISMATCH.probe(inst, ctx)
  local prefix = G.py_prefix(ctx.profile)
  local r = ctx.sh(remote.script("gotcha_cuda", {PREFIX = prefix or ""}))
  local kv = G.kv(r.stdout)
  if not kv.done then return unreadable(r) end
  local driver, torchc, nvcc = mm(kv.driver), mm(kv.torchcuda), mm(kv.nvcc)
  if not driver then return na("nvidia-smi reports no CUDA driver version") end
  if not torchc and not nvcc then
    return na("no torch build (" .. (prefix or "?") .. "/lib/python3*/site-packages/torch/version.py) and no nvcc to compare with driver CUDA " .. kv.driver)
  end
  local notes, status = {}, "ok"
  if torchc then
    if newer(torchc, driver) then
      status = "fail"
      notes[#notes + 1] = "torch " .. (kv.torchver or "?") .. " is built for CUDA " .. kv.torchcuda ..
        ", newer than the driver's CUDA " .. kv.driver
    else
      notes[#notes + 1] = "torch " .. (kv.torchver or "?") .. " CUDA " .. kv.torchcuda .. " <= driver " .. kv.driver
    end
  end
  if nvcc then
    if newer(nvcc, driver) then
      if status == "ok" then status = "warn" end
      notes[#notes + 1] = "nvcc " .. kv.nvcc .. " is newer than the driver's CUDA " .. kv.driver
    elseif torchc and (nvcc[1] ~= torchc[1]) then
      if status == "ok" then status = "warn" end
      notes[#notes + 1] = "nvcc " .. kv.nvcc .. " differs in major version from torch's CUDA " .. kv.torchcuda
    end
  end
  return {status = status, evidence = table.concat(notes, "; ")}
end

-- ---------------------------------------------------------------------------
local THREADS = {
  id = "U-THREADS", severity = "medium", universal = true, kinds = SSH,
  title = "torch threads default to host cores, not the CPU quota",
  symptom = "CPU-side ops (dataloading, metrics) crawl: torch starts one intra-op thread per host core on a small quota",
  fix = "export OMP_NUM_THREADS=<cgroup CPUs> (or torch.set_num_threads) in the wrapper",
}
function THREADS.probe(inst, ctx)
  local p = ctx.profile
  local r = ctx.sh(storage.measure_script(p, {}) .. "\necho \"omp ${OMP_NUM_THREADS:-}\"\n")
  local m = storage.parse_measure(p, {}, r.stdout)
  local omp = tonumber((G.kv(r.stdout).omp or ""):match("%d+"))
  local quota, cores = m.cpu.quota_cpus, m.cpu.host_cores
  if not cores then return na("cannot read the host core count") end
  if not quota then return ok("no cgroup CPU quota: " .. cores .. " host cores are usable") end
  if quota >= cores then return ok(string.format("CPU quota %.2g >= %d host cores", quota, cores)) end
  local want = math.max(1, math.floor(quota))
  if omp and omp <= math.ceil(quota) then
    return ok(string.format("OMP_NUM_THREADS=%d fits the CPU quota %.2g", omp, quota))
  end
  return warn(string.format("CPU quota %.2g CPUs but %d host cores; OMP_NUM_THREADS=%s: torch will start %d threads " ..
    "(want %d)", quota, cores, omp and tostring(omp) or "unset", omp or cores, want))
end
function THREADS.autofix(inst, ctx)
  local m = storage.measure(inst, {profile = ctx.profile, tiers = {}})
  local want = math.max(1, math.floor(m.cpu.quota_cpus or 1))
  return G.bashrc_block(inst, "U-THREADS", {"export OMP_NUM_THREADS=" .. want})
end

-- ---------------------------------------------------------------------------
-- Where to look for scripts: the code dir, else $HOME and the live tier (one a line).
local function search_roots(ctx)
  if ctx.code_dir then return ctx.code_dir end
  local live = ctx.profile.tiers[ctx.profile.checkpoints.live_tier]
  local roots = {"~"}
  if live and live.path ~= "~" and live.path ~= "/" then roots[#roots + 1] = live.path end
  return remote.lines(roots, "U-CRLF: roots")
end

local CRLF = {
  id = "U-CRLF", severity = "medium", universal = true, kinds = ALL,
  title = "CRLF line endings in shell scripts",
  symptom = "$'\\r': command not found / bad interpreter: /bin/bash^M",
  fix = "convert with sed -i 's/\\r$//' FILE (or dos2unix) before the run starts, never under a live run; " ..
        "add `*.sh text eol=lf` to .gitattributes",
}
function CRLF.probe(inst, ctx)
  local r = ctx.sh(remote.script("gotcha_crlf", {ROOTS = search_roots(ctx)}), {timeout = 120})
  local _, multi = G.kv(r.stdout)
  if not multi.done then return unreadable(r) end
  local crlf, lf = multi.crlf or {}, multi.lf or {}
  if #crlf > 0 then return fail("CRLF line endings in " .. table.concat(crlf, ", ")) end
  if #lf == 0 then return na("no *.sh scripts found under " .. (ctx.code_dir or "$HOME") .. " (pass --code DIR)") end
  return ok(#lf .. " shell script(s), all LF")
end

-- ---------------------------------------------------------------------------

local BUFFER = {
  id = "U-BUFFER", severity = "low", universal = true, kinds = ALL,
  title = "stdout block-buffered off a TTY",
  symptom = "the log file stays empty or lags minutes behind a running python; a crash loses the last lines",
  fix = "launch with PYTHONUNBUFFERED=1 (or python -u, or print(..., flush=True))",
}
function BUFFER.probe(inst, ctx)
  local r = ctx.sh(remote.script("gotcha_buffer"))
  local _, multi = G.kv(r.stdout)
  if not multi.done then return unreadable(r) end
  local procs = multi.py or {}
  if #procs == 0 then return na("no running python process to look at") end
  local buffered, fine = {}, 0
  for _, l in ipairs(procs) do
    local pid, out, unb, args = l:match("^(%d+)|([^|]*)|(%d*)|(.*)$")
    if pid then
      local tty = out:match("^/dev/pts/") or out:match("^/dev/tty")
      local u = (tonumber(unb) or 0) > 0 or (" " .. args):find(" %-u ") or (" " .. args):find(" %-%a*u%a* ")
      if tty or u then fine = fine + 1
      else buffered[#buffered + 1] = "pid " .. pid .. " -> " .. (out ~= "" and out or "?") .. " (" .. args:sub(1, 60):gsub("%s+$", "") .. ")" end
    end
  end
  if #buffered > 0 then
    return warn("block-buffered stdout (no PYTHONUNBUFFERED, no -u, not a TTY): " .. table.concat(buffered, "; "))
  end
  return ok(fine .. " python process(es), all unbuffered or on a TTY")
end

-- ---------------------------------------------------------------------------
local WANDB = {
  id = "U-WANDB-OFFLINE", severity = "medium", universal = true, kinds = ALL,
  title = "WANDB_MODE=offline without a key",
  symptom = "the run logs locally only; nothing ever reaches the dashboard and `wandb sync` later fails without a key",
  fix = "put the key in the profile's CRED_FILE (per instance, via stdin) or unset WANDB_MODE=offline; " ..
        "sync offline runs with `wandb sync wandb/offline-run-*` once a key is present",
}
function WANDB.probe(inst, ctx)
  local cred = ctx.profile.overrides and ctx.profile.overrides.CRED_FILE
  local r = ctx.sh(remote.script("gotcha_wandb", {CRED = cred or ""}))
  local kv, multi = G.kv(r.stdout)
  if not multi.done then return unreadable(r) end
  local offline = {}
  if (kv.mode or ""):match("^offline") then offline[#offline + 1] = "login environment" end
  for _, pid in ipairs(multi.offline_pid or {}) do offline[#offline + 1] = "pid " .. pid end
  local keys = multi.key or {}
  if #offline == 0 then return ok("WANDB_MODE is not offline (" .. (kv.mode ~= "" and kv.mode or "unset") .. ")") end
  if #keys == 0 then
    return warn("WANDB_MODE=offline in " .. table.concat(offline, ", ") .. " and no wandb key (env, " ..
      (cred or "cred file") .. ", ~/.netrc): these runs never sync")
  end
  return ok("WANDB_MODE=offline in " .. table.concat(offline, ", ") .. "; a key is present (" .. table.concat(keys, ", ") .. ")")
end

-- ---------------------------------------------------------------------------
local DRIFT = {
  id = "U-CODE-DRIFT", severity = "high", universal = true, kinds = SSH,
  title = "code on the box differs from the committed code",
  symptom = "results cannot be reproduced from the commit they are filed under",
  fix = "push the committed tree (gpurent push) and verify it on the box; never edit code on the box in place",
}
local function local_tracked(dir)
  local function cmd(c)
    local f = io.popen("git -C " .. q(dir) .. " " .. c .. " 2>/dev/null")
    local s = f:read("a"); local okc = f:close()
    return okc and s or nil
  end
  local head = cmd("rev-parse HEAD")
  if not head then return nil end
  local files = {}
  for path in (cmd("ls-files") or ""):gmatch("[^\n]+") do files[#files + 1] = path end
  local dirty = {}
  for line in (cmd("status --porcelain --untracked-files=no") or ""):gmatch("[^\n]+") do
    dirty[line:sub(4)] = true
  end
  local want = {}
  for _, path in ipairs(files) do
    local content
    if dirty[path] then content = cmd("show HEAD:" .. q(path)) end
    if content then want[path] = hash.sha256(content)
    else
      local okh, h = pcall(hash.sha256_file, dir .. "/" .. path)
      if okh then want[path] = h end
    end
  end
  return head:gsub("%s+$", ""), want, files
end
function DRIFT.probe(inst, ctx)
  if not ctx.code_dir then return na("needs the code dir on the box (gpurent check HOST --code DIR [--local DIR])") end
  local ldir = ctx.local_dir or "."
  local head, want, files = local_tracked(ldir)
  if not head then return na(ldir .. " is not a git work tree") end
  if #files == 0 then return na(ldir .. " tracks no files") end
  local r = ctx.sh(remote.script("gotcha_drift", {CODE_DIR = ctx.code_dir}), {timeout = 300})
  if r.code == 3 then return fail(ctx.code_dir .. " does not exist on the box") end
  local _, multi = G.kv(r.stdout)
  if not multi.done then return unreadable(r) end
  local have = {}
  for _, l in ipairs(multi.h or {}) do
    local h, path = l:match("^(%x+) (.+)$")
    if h then have[path] = h end
  end
  local differ, missing = {}, {}
  for _, path in ipairs(files) do
    if want[path] then
      if not have[path] then missing[#missing + 1] = path
      elseif have[path] ~= want[path] then differ[#differ + 1] = path end
    end
  end
  local short = head:sub(1, 12)
  if #differ + #missing > 0 then
    local parts = {}
    if #differ > 0 then parts[#parts + 1] = "differ: " .. table.concat(differ, ", ", 1, math.min(5, #differ)) end
    if #missing > 0 then parts[#parts + 1] = "missing: " .. table.concat(missing, ", ", 1, math.min(5, #missing)) end
    return fail(ctx.code_dir .. " does not match commit " .. short .. " (" .. table.concat(parts, "; ") .. ")")
  end
  return ok(#files .. " tracked file(s) in " .. ctx.code_dir .. " match commit " .. short)
end

-- ---------------------------------------------------------------------------
local CHANGED = {
  id = "U-SCRIPT-CHANGED", severity = "high", universal = true, kinds = ALL,
  title = "a script changed under a live run",
  symptom = "a running queue re-executes or skips blocks after its .sh was edited (bash reads by byte offset)",
  fix = "never overwrite a script a live bash is reading: write a new versioned file name and launch that",
}
function CHANGED.probe(inst, ctx)
  local r = ctx.sh(remote.script("gotcha_changed"))
  local _, multi = G.kv(r.stdout)
  if not multi.done then return unreadable(r) end
  local scripts = multi.sc or {}
  if #scripts == 0 then return na("no running shell script to look at") end
  local changed, fine = {}, {}
  for _, l in ipairs(scripts) do
    local pid, start, mtime, f = l:match("^(%d+) (%d+) (%d+) (.+)$")
    if pid and tonumber(mtime) > tonumber(start) + 1 then
      changed[#changed + 1] = string.format("%s modified %d s after pid %s started reading it", f,
        tonumber(mtime) - tonumber(start), pid)
    elseif pid then fine[#fine + 1] = f end
  end
  if #changed > 0 then return fail(table.concat(changed, "; ")) end
  return ok(#fine .. " running script(s) unchanged since start: " .. table.concat(fine, ", "))
end

return {OOM, HOSTVIEW, ZOMBIE, XID, THROTTLE, NOGPU, MISMATCH, THREADS, CRLF, BUFFER, WANDB, DRIFT, CHANGED}
