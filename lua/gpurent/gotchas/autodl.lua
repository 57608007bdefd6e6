-- gpurent.gotchas.autodl: AutoDL's platform gotchas AD1-AD9 and the 15-day danger
-- clock (../shared/seed/autodl-profile.md §7, §5). Each probe reads paths and
-- thresholds from the profile, runs one POSIX sh round trip (lua/gpurent/remote/gotcha_*.sh;
-- AD3's write/read/remove one-liners stay here: one per peer),
-- and answers ok/warn/fail with evidence, or n/a saying why it could not look.
local G = require "gpurent.gotchas"
local storage = require "gpurent.lifecycle.storage"
local P = require "gpurent.config.profile"
local remote = require "gpurent.remote"

local q, ok, warn, fail, na = G.q, G.ok, G.warn, G.fail, G.na
local human = storage.human

local function is_true(v) return v == "1" or v == "true" or v == "True" or v == "yes" end

-- ---------------------------------------------------------------------------
local AD1 = {
  id = "AD1", severity = "high",
  title = "no proxy in the login environment",
  symptom = "wandb.init times out, dashboard shows 0 runs; HF downloads stall; pip/git glacial",
  fix = "source /etc/network_turbo 2>/dev/null || true at the top of every shell and wrapper " ..
        "before wandb/HF/pip/git; recover an empty wandb project with " ..
        "`for d in wandb/run-*; do timeout 120 wandb sync \"$d\"; done`",
}
function AD1.probe(inst, ctx)
  local net = ctx.profile.network
  if not net.proxy_file then return na("the profile names no proxy file") end
  local r = ctx.sh(remote.script("gotcha_proxy", {PROXY_FILE = net.proxy_file}))
  local kv = G.kv(r.stdout)
  if kv.turbo == nil then return na("probe output unreadable (exit " .. tostring(r.code) .. ")") end
  if kv.turbo == "no" then
    return (net.proxy_mandatory and fail or warn)(net.proxy_file .. " is missing: no academic proxy, " ..
      "direct egress to wandb/HF/PyPI/GitHub is unreliable or blocked")
  end
  local after = (kv.after or ""):match("%S+")
  if not after then
    return fail("sourcing " .. net.proxy_file .. " sets no http_proxy: the proxy hook is broken")
  end
  local login = (kv.login or ""):match("%S+")
  if login then return ok("login environment has http_proxy=" .. login .. " (" .. net.proxy_file .. " sourced)") end
  return warn("login environment has no http_proxy while " .. net.proxy_file .. " exists (it would set " ..
    after .. "): every shell calling wandb/HF/pip/git must run `" .. net.proxy_hook .. "` first")
end
function AD1.autofix(inst, ctx)
  return G.bashrc_block(inst, "AD1", {ctx.profile.network.proxy_hook})
end

-- ---------------------------------------------------------------------------
local AD2 = {
  id = "AD2", severity = "medium",
  title = "HF mirror settings missing or hf_xet bypassing the mirror",
  symptom = "from_pretrained / snapshot_download hangs or ConnectTimeout on big .safetensors shards",
  fix = "export HF_ENDPOINT=https://hf-mirror.com HF_HUB_DISABLE_XET=1 (or pip uninstall -y hf_xet); " ..
        "or pull from ModelScope to a plain dir; wrap downloads in a `timeout ... && break` resume loop",
}
function AD2.probe(inst, ctx)
  local net = ctx.profile.network
  if not net.hf_endpoint then return na("the profile sets no HF mirror") end
  local prefix = G.py_prefix(ctx.profile)
  local r = ctx.sh(remote.script("gotcha_hf_mirror", {PREFIX = prefix or "",
    XET_PACKAGE = net.hf_xet_package or "hf_xet", PROXY_FILE = net.proxy_file or ""}))
  local kv, multi = G.kv(r.stdout)
  if kv.endpoint == nil then return na("probe output unreadable (exit " .. tostring(r.code) .. ")") end
  local endpoint = kv.endpoint:match("%S+")
  local disabled = is_true(kv.xet_disable or "")
  local xet = multi.dist and multi.dist[1]
  local notes = {}
  local status = "ok"
  if xet and not disabled then
    status = "fail"
    notes[#notes + 1] = xet .. " is installed and HF_HUB_DISABLE_XET is unset: big shards bypass the mirror"
  elseif not disabled then
    status = "warn"
    notes[#notes + 1] = "HF_HUB_DISABLE_XET is unset"
  end
  if not endpoint then
    if status == "ok" then status = "warn" end
    notes[#notes + 1] = "HF_ENDPOINT is unset (want " .. net.hf_endpoint .. ")"
  elseif endpoint ~= net.hf_endpoint then
    notes[#notes + 1] = "HF_ENDPOINT=" .. endpoint
  end
  local trap = net.no_proxy_trap
  if trap and kv.no_proxy then
    local np = "," .. kv.no_proxy .. ","
    if np:find("," .. trap.listed .. ",", 1, true) and not np:find("," .. trap.missing .. ",", 1, true) then
      notes[#notes + 1] = "note: no_proxy lists " .. trap.listed .. " but not " .. trap.missing
    end
  end
  if status == "ok" then
    table.insert(notes, 1, "HF_ENDPOINT=" .. endpoint .. ", HF_HUB_DISABLE_XET=" .. kv.xet_disable ..
      (xet and (", " .. xet .. " installed but disabled") or ""))
  end
  return {status = status, evidence = table.concat(notes, "; ")}
end
function AD2.autofix(inst, ctx)
  local net = ctx.profile.network
  return G.bashrc_block(inst, "AD2", {"export HF_ENDPOINT=" .. net.hf_endpoint,
    "export HF_HUB_DISABLE_XET=" .. (net.hf_hub_disable_xet or "1")})
end

-- ---------------------------------------------------------------------------
local AD3 = {
  id = "AD3", severity = "high",
  title = "shared FS not shared across regions",
  symptom = "two instances see identical /root/autodl-fs paths but files written from one are invisible to the other",
  fix = "create the FS quota in the same region as the instances; bridge regions with scp from a chosen " ..
        "primary; verify with a write-one / read-other probe before relying on sharing",
}
function AD3.probe(inst, ctx)
  local dt = P.durable_tier(ctx.profile)
  if not dt or not dt.region_locked then return na("the profile has no region-locked shared tier") end
  local peers = ctx.peers or {}
  if #peers == 0 then return na("needs a second instance to read back from (gpurent check HOST --peer OTHER)") end
  local token = string.format("gpurent-ad3-%d-%06d", os.time(), math.random(0, 999999))
  local file = dt.path .. "/." .. token
  local w = ctx.sh("printf '%s\\n' " .. q(token) .. " > " .. q(file) .. " && cat " .. q(file))
  if w.code ~= 0 or not w.stdout:find(token, 1, true) then
    return na("cannot write a probe file on " .. dt.path .. ": " .. (w.stderr or ""):gsub("%s+$", ""))
  end
  local seen, unseen = {}, {}
  local okp, err = pcall(function()
    for _, peer in ipairs(peers) do
      local r = peer:sh("cat " .. q(file) .. " 2>/dev/null", {timeout = 60})
      if r.code == 0 and r.stdout:find(token, 1, true) then seen[#seen + 1] = tostring(peer)
      else unseen[#unseen + 1] = tostring(peer) end
    end
  end)
  ctx.sh("rm -f " .. q(file))
  if not okp then return na("a peer could not be asked: " .. tostring(err)) end
  if #unseen > 0 then
    return fail("a file written on " .. dt.path .. " from " .. tostring(inst) .. " is invisible from " ..
      table.concat(unseen, ", ") .. ": different regions' FS behind the same path")
  end
  return ok("a file written on " .. dt.path .. " from " .. tostring(inst) .. " is visible from " ..
    table.concat(seen, ", "))
end

-- ---------------------------------------------------------------------------
local AD4 = {
  id = "AD4", severity = "high",
  title = "inodes near the cap while bytes look fine",
  symptom = "cp/mkdir on /root/autodl-fs fails \"No space left on device\" while df -h shows ~34%; df -i shows 100%",
  fix = "monitor df -i, not only df -h; cap per-sample eval visualisation; prune verified per-sample image " ..
        "dirs from the FS (find /root/autodl-fs -type d -name '<vis-dir>' -exec rm -rf {} + after approval)",
}
function AD4.probe(inst, ctx)
  local p = ctx.profile
  local th = p.storage.thresholds
  local r = storage.measure(inst, {profile = p})
  local worst, notes, any = "ok", {}, false
  for _, t in ipairs(P.tier_list(p)) do
    local m = r.tiers[t.name]
    if m.inodes_total then
      any = true
      local s = (m.inodes_pct >= th.inodes_fail_pct or m.inodes_free == 0) and "fail"
        or (m.inodes_pct >= th.inodes_warn_pct and "warn") or "ok"
      if s ~= "ok" or t.inode_cap then
        notes[#notes + 1] = string.format("%s: df -i %d/%d used (%.1f%%), %d free; bytes %.1f%% used",
          t.path, m.inodes_used, m.inodes_total, m.inodes_pct, m.inodes_free, m.bytes_pct or -1)
      end
      if G.STATUS_ORDER[s] > G.STATUS_ORDER[worst] then worst = s end
    end
  end
  if not any then return na("df -i gave no inode counts for any tier") end
  if #notes == 0 then notes[1] = "every tier below " .. th.inodes_warn_pct .. "% of its inodes" end
  return {status = worst, evidence = table.concat(notes, "; ")}
end

-- ---------------------------------------------------------------------------
local AD5 = {
  id = "AD5", severity = "medium",
  title = "the HF cache is the hidden hog of the data disk",
  symptom = "/root/autodl-tmp at 100% though runs/ looks small",
  fix = "audit `du -sh ~/.cache/huggingface/hub/models--* | sort -rh`; set HF_HOME to a chosen data-disk dir; " ..
        "present exact deletion targets and sizes for explicit approval, or expand the disk",
}
function AD5.probe(inst, ctx)
  local p = ctx.profile
  local link = p.storage.hf_cache_link
  local live = P.live_tier(p)
  if not link then return na("the profile names no HF cache link") end
  local names = {live.name}
  local script = remote.script("gotcha_hf_cache", {LINK = link, TIERS = storage.tier_lines(p, names)}) .. "\n" ..
    storage.hogs_script(p, {tiers = names})
  local r = ctx.sh(script, {timeout = 300})
  local m = storage.parse_measure(p, names, r.stdout).tiers[live.name]
  if not m.bytes_total then return na("df gave no reading for " .. live.path) end
  local hogs = storage.parse_hogs(r.stdout, 50)
  local kv = G.kv(r.stdout)
  local hfreal = (kv.hflink or ""):match("%S+")
  local hf_bytes, parts = 0, 0
  for _, h in ipairs(hogs) do
    if hfreal and h.real == hfreal then hf_bytes = math.max(hf_bytes, h.bytes)
    elseif hfreal and h.real:sub(1, #hfreal + 1) == hfreal .. "/" and h.via_symlink then parts = parts + h.bytes end
  end
  hf_bytes = math.max(hf_bytes, parts)
  local th = p.storage.thresholds
  local top = hogs[1]
  local hf_is_top = top and hfreal and (top.real == hfreal or top.real:sub(1, #hfreal + 1) == hfreal .. "/")
  local ev = string.format("%s %.1f%% used (%s of %s); HF cache %s (%s)%s", live.path, m.bytes_pct,
    human(m.bytes_used), human(m.bytes_total), human(hf_bytes), link .. (hfreal and (" -> " .. hfreal) or ""),
    top and (", top hog " .. top.path .. " " .. human(top.bytes)) or "")
  if (kv.hf_home or "") == "" then ev = ev .. "; HF_HOME unset" end
  if m.bytes_pct >= th.bytes_fail_pct then
    return fail(ev .. (hf_is_top and ": the HF cache is the real hog" or ""))
  elseif m.bytes_pct >= th.bytes_warn_pct then
    return warn(ev .. (hf_is_top and ": the HF cache is the real hog" or ""))
  end
  return ok(ev)
end

-- ---------------------------------------------------------------------------
local AD6 = {
  id = "AD6", severity = "medium",
  title = "python3 missing / base is the env",
  symptom = "poll scripts calling python3 exit 127; a local \"never use conda base\" guard blocks every remote command",
  fix = "train with the profile's interpreter (/root/miniconda3/bin/python); in remote scripts use it or pure " ..
        "shell, never bare python3; exempt remote-ssh + instance base from local env guards; never " ..
        "conda create / clone base on the rental",
}
function AD6.probe(inst, ctx)
  local env = ctx.profile.env
  local r = ctx.sh(remote.script("gotcha_python", {PYTHON = env.python, ENVS_DIR = env.envs_dir or ""}))
  local kv, multi = G.kv(r.stdout)
  if kv.py == nil then return na("probe output unreadable (exit " .. tostring(r.code) .. ")") end
  if kv.py == "no" then return fail(env.python .. " is missing: the image's base interpreter is not there") end
  local envs = multi.env or {}
  if env.base_is_env and #envs > 0 then
    return warn("conda envs exist (" .. table.concat(envs, ", ") .. "): base IS the env on this image; " ..
      "a cloned env wastes ~16 GB")
  end
  if kv.python3 == "none" then
    return warn("python3 is absent (bare python3 exits 127); " .. env.python .. " exists: use it or pure shell")
  end
  return ok(env.python .. " exists; python3 is " .. kv.python3)
end

-- ---------------------------------------------------------------------------
local AD7 = {
  id = "AD7", severity = "medium",
  title = "TensorBoard event files outside the pinned logdir",
  symptom = "the events file is non-empty but the AutoPanel TB tile shows zero runs; /data/runs returns []",
  fix = "SummaryWriter(log_dir=\"/root/tf-logs/<run>\") or `ln -sfn <your-tb> /root/tf-logs/<run>` " ..
        "(reload=5 picks it up); verify with curl -s http://127.0.0.1:6007/data/runs, not ss; a dangling " ..
        "link shows nothing (point it at the existing dir); runs deleted or renamed stay listed (stale) " ..
        "until the pinned TensorBoard restarts",
}
-- The pinned TensorBoard's own answer (seed: `curl -s http://127.0.0.1:6007/data/runs`):
-- tb_runs in remote/tb_lib.sh, used by gotcha_tb_scan.sh and gotcha_tb_runs.sh.
local function ad7_answer(kv)
  local rc = tonumber(kv.tbrc)
  if rc == nil then return nil, "its answer was not read" end
  if rc == 127 then return nil, "curl is not installed on the box" end
  if rc ~= 0 then return nil, "nothing answers on 127.0.0.1:%d/data/runs (curl exit " .. rc .. ")" end
  local okj, runs = pcall(require("gpurent.util.json").decode, kv.tbbody or "", "/data/runs")
  if not okj or type(runs) ~= "table" then return nil, "127.0.0.1:%d/data/runs answered no JSON list" end
  local set = {}
  for _, r in ipairs(runs) do if type(r) == "string" then set[#set + 1] = r end end
  return set
end
local function ad7_listed(runs, name)
  for _, r in ipairs(runs) do
    if r == name or (name ~= "." and r:sub(1, #name + 1) == name .. "/") then return true end
  end
  return false
end
local function ad7_scan(ctx)
  local tb = ctx.profile.network.tensorboard
  local port = math.tointeger(tb.port) or 6007
  local r = ctx.sh(remote.script("gotcha_tb_scan", {LOGDIR = tb.logdir, PORT = port}), {timeout = 120})
  local kv, multi = G.kv(r.stdout)
  if not multi.done then return nil, "probe output unreadable (exit " .. tostring(r.code) .. ")" end
  local outside = {}
  for _, f in ipairs(multi.ev or {}) do
    local linked = false
    for _, target in ipairs(multi.link or {}) do
      if f:sub(1, #target + 1) == target .. "/" then linked = true end
    end
    if not linked then outside[#outside + 1] = f end
  end
  local dangling = {}
  for _, d in ipairs(multi.dangling or {}) do
    local n, target = d:match("^(.-)\t(.*)$")
    dangling[#dangling + 1] = {name = n or d, target = target or "?"}
  end
  local runs, why = ad7_answer(kv)
  return {outside = outside, inside = #(multi["in"] or {}) + #(multi.link or {}), logdir = tb.logdir,
          port = port, disk_runs = multi.run or {}, dangling = dangling, runs = runs,
          tb_note = why and why:format(port)}
end
-- Runs on disk that the pinned TensorBoard does not list. A run created since its
-- last reload is not listed yet: anything missing is asked for again one reload later.
local function ad7_missing(ctx, s)
  local missing = {}
  for _, n in ipairs(s.disk_runs) do
    if not ad7_listed(s.runs, n) then missing[#missing + 1] = n end
  end
  if #missing > 0 then
    local reload = tonumber(ctx.profile.network.tensorboard.reload_s) or 5
    local r = ctx.sh(remote.script("gotcha_tb_runs", {WAIT = string.format("%.1f", math.min(reload, 30) + 0.5),
      PORT = s.port}), {timeout = 60})
    local again = ad7_answer(G.kv(r.stdout))
    if again then
      local still = {}
      for _, n in ipairs(missing) do if not ad7_listed(again, n) then still[#still + 1] = n end end
      missing = still
    end
  end
  for _, d in ipairs(s.dangling) do
    missing[#missing + 1] = d.name .. " (dangling symlink -> " .. d.target .. ")"
  end
  return missing
end
function AD7.probe(inst, ctx)
  local tb = ctx.profile.network.tensorboard
  if not tb or not tb.pinned then return na("the profile pins no TensorBoard logdir") end
  local s, why = ad7_scan(ctx)
  if not s then return na(why) end
  local problems = {}
  if #s.outside > 0 then
    local shown = {}
    for i = 1, math.min(3, #s.outside) do shown[i] = s.outside[i] end
    problems[#problems + 1] = #s.outside .. " event file(s) outside " .. tb.logdir .. ", invisible in the TB tile: " ..
      table.concat(shown, ", ") .. (#s.outside > 3 and ", ..." or "")
  end
  local listed
  if s.runs then
    local missing = ad7_missing(ctx, s)
    if #missing > 0 then
      local shown = {}
      for i = 1, math.min(5, #missing) do shown[i] = missing[i] end
      problems[#problems + 1] = #missing .. " run(s) in " .. tb.logdir .. " missing from the pinned TensorBoard's " ..
        "/data/runs on 127.0.0.1:" .. s.port .. " (it lists " .. #s.runs .. "): " .. table.concat(shown, ", ") ..
        (#missing > 5 and ", ..." or "") .. "; log to " .. tb.logdir .. "/<run> or `ln -sfn <existing dir> " ..
        tb.logdir .. "/<run>`; a run still missing after a reload needs the pinned TensorBoard restarted"
    end
    listed = "the pinned TensorBoard on 127.0.0.1:" .. s.port .. " lists " .. #s.runs .. " run(s)"
    local on_disk, stale = {}, {}
    for _, n in ipairs(s.disk_runs) do on_disk[n] = true end
    for _, r in ipairs(s.runs) do
      if not on_disk[r] and not on_disk[r:match("^[^/]+")] then stale[#stale + 1] = r end
    end
    if #stale > 0 then
      listed = listed .. ", " .. #stale .. " of them gone from " .. tb.logdir .. " (stale until it restarts): " ..
        table.concat(stale, ", ", 1, math.min(5, #stale)) .. (#stale > 5 and ", ..." or "")
    end
  end
  local note = listed or ("note: " .. s.tb_note .. ", so the tile's answer was not checked")
  if #problems > 0 then return warn(table.concat(problems, "; ") .. (listed and "" or ("; " .. note))) end
  return ok("no event files outside " .. tb.logdir .. " (" .. s.inside .. " run(s) visible there); " .. note)
end
function AD7.autofix(inst, ctx)
  local s = ad7_scan(ctx)
  local dirs, done = {}, {}
  for _, f in ipairs(s and s.outside or {}) do
    local d = f:match("^(.*)/[^/]+$")
    if d and not dirs[d] then dirs[d] = true; done[#done + 1] = d end
  end
  if #done == 0 then return "nothing to link" end
  local r = inst:sh(remote.script("gotcha_tb_link", {LOGDIR = s.logdir, DIRS = remote.lines(done, "AD7: dirs")}),
    {timeout = 30})
  if r.code ~= 0 then error("linking into " .. s.logdir .. " failed: " .. r.stderr) end
  return "linked " .. table.concat(done, ", ") .. " into " .. s.logdir
end

-- ---------------------------------------------------------------------------
local AD8 = {
  id = "AD8", severity = "medium",
  title = "val-phase memory spike near the cgroup limit",
  symptom = "at the end of epoch 1 (validation) cgroup memory jumps from ~8 GB to 30+ GB, sometimes wedging the box",
  fix = "cap the val-time per-sample accumulator (e.g. -o training.val_metric_sample_cap=256; check the " ..
        "trainer for its equivalent); distinct from a DataLoader-worker OOM",
}
function AD8.probe(inst, ctx)
  local r = storage.measure(inst, {profile = ctx.profile, tiers = {}})
  local m = r.mem
  if not m.cgroup then return na("no cgroup memory controller readable") end
  if not m.limit then return na("the cgroup sets no memory limit") end
  if not m.peak then return na("the cgroup reports no peak usage (memory.peak / max_usage_in_bytes)") end
  local frac = m.peak / m.limit
  local ev = string.format("cgroup peak %s of limit %s (%.0f%%), now %s", human(m.peak), human(m.limit),
    frac * 100, human(m.usage))
  if frac >= 0.9 then return fail(ev .. ": a spike reached the limit") end
  if frac >= 0.7 then return warn(ev .. ": a transient spike well above current usage") end
  return ok(ev)
end

-- ---------------------------------------------------------------------------
local AD9 = {
  id = "AD9", severity = "high",
  title = "requirements pin would replace the image's torch build",
  symptom = "after pip install -r requirements.txt: `no kernel image is available` at the first forward",
  fix = "filter framework pins (torch, torchvision, torchaudio, nvidia-*) out of the remote install - gpurent's " ..
        "install phase does (env.install_filter): grep -ivE '^(torch|torchvision|torchaudio|nvidia-)' " ..
        "requirements.txt > /root/req_remote.txt && pip install -r /root/req_remote.txt; smoke " ..
        "torch.cuda.get_device_capability() before launch",
}

-- Version comparison for the pin check: release numbers only ("2.5.1+cu124" -> {2,5,1}).
local function vparse(v)
  local t = {}
  for n in (v:match("^[%d.]+") or ""):gmatch("%d+") do t[#t + 1] = tonumber(n) end
  return t
end
local function vcmp(a, b)
  for i = 1, math.max(#a, #b) do
    local x, y = a[i] or 0, b[i] or 0
    if x ~= y then return x < y and -1 or 1 end
  end
  return 0
end
local function satisfies(installed, specs)
  local iv = vparse(installed)
  for op, ver in specs:gmatch("([=<>!~]=?=?)%s*([%w.*+]+)") do
    local wild = ver:find("*", 1, true)
    local sv = vparse(ver:gsub("%.%*$", ""))
    local c = vcmp(iv, sv)
    if wild and (op == "==" or op == "!=") then
      local prefix_eq = true
      for i = 1, #sv do if iv[i] ~= sv[i] then prefix_eq = false end end
      if (op == "==") ~= prefix_eq then return false end
    elseif op == "==" or op == "===" then if c ~= 0 then return false end
    elseif op == "!=" then if c == 0 then return false end
    elseif op == "<" then if c >= 0 then return false end
    elseif op == "<=" then if c > 0 then return false end
    elseif op == ">" then if c <= 0 then return false end
    elseif op == ">=" then if c < 0 then return false end
    elseif op == "~=" then
      if c < 0 then return false end
      local upper = {}
      for i = 1, math.max(#sv - 1, 1) do upper[i] = sv[i] end
      upper[#upper] = upper[#upper] + 1
      if vcmp(iv, upper) >= 0 then return false end
    end
  end
  return true
end
AD9.satisfies = satisfies

function AD9.probe(inst, ctx)
  local p = ctx.profile
  local pins = p.env.framework_pins
  local script = remote.script("gotcha_pins", {PREFIX = G.py_prefix(p) or "", PINS = remote.lines(pins, "AD9: pins"),
    ROOT = ctx.code_dir or "~"})
  local r = ctx.sh(script, {timeout = 120})
  local _, multi = G.kv(r.stdout)
  if not multi.done then return na("probe output unreadable (exit " .. tostring(r.code) .. ")") end
  local files = multi.file or {}
  if #files == 0 then
    return na("no requirements*.txt found under " .. (ctx.code_dir or "$HOME") .. " (pass --code DIR)")
  end
  local installed = {}
  for _, d in ipairs(multi.dist or {}) do
    local name, ver = d:match("^(.-)%-(%d.*)$")
    if name then installed[name:lower()] = ver end
  end
  local bad, unknown, fine = {}, {}, {}
  for _, line in ipairs(multi.pin or {}) do
    local where, text = line:match("^(.-:%d+):(.*)$")
    local pkg, spec = (text or ""):match("^%s*([%w_%-]+)%s*%[?[^%]=<>!~]*%]?%s*(.-)%s*$")
    if pkg then
      spec = spec:gsub("%s*[#;].*$", "")
      local have = installed[pkg:lower()]
      local desc = where .. " " .. pkg .. spec
      if not have then unknown[#unknown + 1] = desc
      elseif satisfies(have, spec) then fine[#fine + 1] = desc .. " (image has " .. have .. ")"
      else bad[#bad + 1] = desc .. " would replace the image's " .. pkg .. " " .. have end
    end
  end
  if #bad > 0 then return fail(table.concat(bad, "; ")) end
  if #unknown > 0 then
    return warn("framework pins with no installed build to compare: " .. table.concat(unknown, "; ") ..
      " (pip would install them)")
  end
  if #fine > 0 then return ok("pins satisfied by the image's build: " .. table.concat(fine, "; ")) end
  return ok("no " .. table.concat(pins, "/") .. " pins in " .. table.concat(files, ", "))
end

-- ---------------------------------------------------------------------------
local DANGER = {
  id = "AD-DANGER", severity = "high",
  title = "15-day auto-release of a powered-off box",
  symptom = "a 关机 instance left more than 15 days is released: / and the data disk are deleted",
  fix = "checked-sync best.pth to /root/autodl-fs (survives 释放) before a long pause, or expect to re-download; " ..
        "power off only within the window",
}
function DANGER.probe(inst, ctx)
  local p = ctx.profile
  local ar = p.billing.auto_release
  if not ar then return na("the profile has no auto-release clock") end
  local clock = string.format("%s auto-releases after %d days, deleting %s", p.billing.meter_stop and
    p.billing.meter_stop.verb or ar.after, ar.after_days, table.concat(ar.deletes, " + "))
  local cp = p.checkpoints
  local live_root = cp.live_dir:match("^(.*)/{name}$")
  local dur_root = cp.durable_dir and cp.durable_dir:match("^(.*)/{name}$")
  if not live_root then return na(clock .. "; live_dir has no {name} leaf to scan") end
  if not dur_root then return warn(clock .. "; the profile has no durable tier to sync to") end
  -- gpurent's own runs keep checkpoints in <run_root>/active/<id>/out (and sealed
  -- exports in <run_root>/export/<id>): every project's run root is scanned too
  local run_parent, run_suffix = (cp.run_root or ""):match("^(.-)/{project}(.*)$")
  local r = ctx.sh(remote.script("gotcha_danger", {LIVE_ROOT = live_root, DURABLE_ROOT = dur_root,
    SYNC = remote.lines(cp.sync, "AD-DANGER: sync"), RUN_PARENT = run_parent or "", RUN_SUFFIX = run_suffix or ""}))
  local _, multi = G.kv(r.stdout)
  if not multi.done then return na("probe output unreadable (exit " .. tostring(r.code) .. ")") end
  local missing, synced = {}, 0
  for _, l in ipairs(multi.ck or {}) do
    local path, s, ds = l:match("^(.+) (%d+) (%S+)$")
    if path and ds ~= s then missing[#missing + 1] = path .. (ds == "none" and " (no durable copy)" or " (durable copy differs in size)")
    elseif path then synced = synced + 1 end
  end
  local where = live_root .. (run_parent and (" and the runs under " .. cp.run_root:gsub("{project}", "*")) or "")
  if #missing > 0 then
    return warn(clock .. "; not on the durable tier (" .. dur_root .. "): " .. table.concat(missing, ", "))
  end
  if synced > 0 then return ok(clock .. "; all " .. synced .. " checkpoint(s) under " .. where .. " have a durable copy") end
  return ok(clock .. "; no checkpoints under " .. where .. " to lose")
end

return {AD1, AD2, AD3, AD4, AD5, AD6, AD7, AD8, AD9, DANGER}
