-- gotchas_spec: every gotcha probe on the simulated AutoDL testbed, once provoked
-- (the probe must flag it) and once clean (the probe must pass), plus the runner's
-- rule that a probe which cannot run says n/a with the reason, never ok.
-- Instances: clean + peerA share region rA; peerB is in rB; tight is small, capped
-- and without /etc/network_turbo; nogpu has no GPU.
local gotchas = require "gpurent.gotchas"
local profile = require "gpurent.config.profile"
local simbox = require "simbox"

describe("the catalog", function()
  it("has every AutoDL gotcha and the universal ones, each with the required fields", function()
    local ids = {}
    for _, e in ipairs(gotchas.all()) do
      ids[e.id] = true
      for _, k in ipairs({"title", "severity", "symptom", "fix"}) do
        assert.is_true(type(e[k]) == "string" and e[k] ~= "", e.id .. " lacks " .. k)
      end
      assert.are.equal("function", type(e.probe))
    end
    for _, id in ipairs({"AD1", "AD2", "AD3", "AD4", "AD5", "AD6", "AD7", "AD8", "AD9", "AD-DANGER",
      "U-OOM", "U-HOSTVIEW", "U-ZOMBIE-VRAM", "U-XID", "U-THROTTLE", "U-NOGPU", "U-CUDA-MISMATCH",
      "U-THREADS", "U-CRLF", "U-BUFFER", "U-WANDB-OFFLINE", "U-CODE-DRIFT", "U-SCRIPT-CHANGED"}) do
      assert.is_true(ids[id], id)
    end
    local n = 0
    for _, e in ipairs(gotchas.for_profile(profile.load("autodl"))) do n = n + 1; assert.is_truthy(e.id) end
    assert.are.equal(23, n)
    for _, e in ipairs(gotchas.for_profile(profile.load("generic-ssh"))) do
      assert.is_nil(e.id:match("^AD"), "generic-ssh runs no AutoDL gotcha")
    end
  end)

  it("AD9's version check follows pip's specifiers", function()
    local sat = require("gpurent.gotchas.autodl")[9].satisfies
    assert.is_true(sat("2.8.0+cu128", "<2.9"))
    assert.is_false(sat("2.8.0+cu128", "<2.5"))
    assert.is_true(sat("2.5.1+cu124", "==2.5.1"))
    assert.is_false(sat("2.5.1", "==2.4.*"))
    assert.is_true(sat("2.4.1", "==2.4.*"))
    assert.is_true(sat("2.5.1", ">=2.0,<3"))
    assert.is_false(sat("2.5.1", "~=2.3.0"))
    assert.is_true(sat("2.3.4", "~=2.3.0"))
  end)
end)

local ok_sim, why = simbox.available()
local desc = ok_sim and describe or function(name) describe(name, function() pending(why) end) end

desc("gotcha probes on the testbed", function()
  local box, I, gitdir = nil, {}, nil

  local function probe(name, id, opts)
    opts = opts or {}
    opts.only = {id}
    local r = gotchas.run(I[name], opts)[1]
    assert.are.equal(id, r.id)
    return r
  end
  local function sh(name, cmd)
    local r = I[name]:sh(cmd, {timeout = 60})
    assert.are.equal(0, r.code, cmd .. ": " .. r.stderr)
    return r.stdout
  end
  local function flagged(r, status, pattern)
    assert.are.equal(status, r.status, r.id .. ": " .. r.evidence)
    if pattern then assert.matches(pattern, r.evidence) end
  end

  setup(function()
    box = simbox.new()
    I.clean = box:up("clean", "--region rA --data-size 64M --fs-size 32M --fs-inodes 5000 --mem 4T --cpus 16")
    I.peerA = box:up("peerA", "--region rA")
    I.peerB = box:up("peerB", "--region rB --data-size 32M --fs-size 16M")
    I.tight = box:up("tight", "--region rC --data-size 32M --fs-size 16M --fs-inodes 300 --mem 128M " ..
      "--cpus 0.5 --no-turbo")
    I.nogpu = box:up("nogpu", "--region rD --gpus 0 --data-size 16M --fs-size 8M")
  end)
  teardown(function()
    if box then box:down() end
    if gitdir then T.rmtree(gitdir) end
  end)

  -- AD1 ---------------------------------------------------------------------
  it("AD1 fails without /etc/network_turbo, warns on a bare login env, passes once the hook is in", function()
    flagged(probe("tight", "AD1"), "fail", "/etc/network_turbo is missing")
    flagged(probe("clean", "AD1"), "warn", "login environment has no http_proxy")
    local r = probe("clean", "AD1", {fix = true})
    flagged(r, "ok", "http_proxy=http://127%.0%.0%.1:12798")
    assert.are.equal("warn", r.before)
    assert.matches("network_turbo", r.fixed)
  end)

  -- AD2 ---------------------------------------------------------------------
  it("AD2 fails when hf_xet is installed with Xet enabled; passes with mirror + Xet off", function()
    sh("tight", "d=$(ls -d /root/miniconda3/lib/python3*)/site-packages/hf_xet-1.1.0.dist-info && mkdir -p \"$d\"")
    flagged(probe("tight", "AD2"), "fail", "hf_xet%-1%.1%.0 is installed")
    flagged(probe("clean", "AD2"), "warn", "HF_ENDPOINT is unset")
    local r = probe("clean", "AD2", {fix = true})
    flagged(r, "ok", "HF_ENDPOINT=https://hf%-mirror%.com, HF_HUB_DISABLE_XET=1")
    assert.matches("no_proxy lists modelscope%.com but not modelscope%.cn", r.evidence)
  end)

  -- AD3 ---------------------------------------------------------------------
  it("AD3 sees a cross-region FS as unshared and a same-region one as shared", function()
    flagged(probe("clean", "AD3", {peers = {I.peerB}}), "fail", "invisible from instance peerB")
    flagged(probe("clean", "AD3", {peers = {I.peerA}}), "ok", "visible from instance peerA")
    flagged(probe("clean", "AD3"), "n/a", "needs a second instance")
    assert.are.equal("", sh("clean", "ls -A /root/autodl-fs | grep gpurent-ad3 || true"), "probe file removed")
  end)

  -- AD4 ---------------------------------------------------------------------
  it("AD4 fails when the FS inode cap is reached while bytes look fine", function()
    flagged(probe("tight", "AD4"), "ok")
    sh("tight", "mkdir -p /root/autodl-fs/vis && cd /root/autodl-fs/vis && i=0; " ..
      "while [ $i -lt 400 ]; do : > f$i 2>/dev/null || break; i=$((i+1)); done; true")
    flagged(probe("tight", "AD4"), "fail", "/root/autodl%-fs: df %-i 300/300 used %(100%.0%%%), 0 free; bytes 0%.%d%% used")
    sh("tight", "rm -rf /root/autodl-fs/vis")
    flagged(probe("clean", "AD4"), "ok", "/root/autodl%-fs: df %-i")
  end)

  -- AD5 ---------------------------------------------------------------------
  it("AD5 flags a nearly full data disk whose hog is the symlinked HF cache", function()
    sh("tight", "mkdir -p ~/.cache/huggingface/hub/models--org--llm/blobs && " ..
      "head -c 31000000 /dev/zero > ~/.cache/huggingface/hub/models--org--llm/blobs/shard1")
    local r = probe("tight", "AD5")
    assert.is_true(r.status == "warn" or r.status == "fail", r.evidence)
    assert.matches("the HF cache is the real hog", r.evidence)
    assert.matches("top hog /root/.cache/huggingface", r.evidence)
    sh("tight", "rm -rf /root/autodl-tmp/huggingface_cache/hub/models--org--llm")
    flagged(probe("clean", "AD5"), "ok", "HF cache")
  end)

  -- AD6 ---------------------------------------------------------------------
  it("AD6 warns that python3 is absent and passes when it exists", function()
    flagged(probe("tight", "AD6"), "warn", "python3 is absent")
    sh("clean", "ln -s /root/miniconda3/bin/python /usr/local/bin/python3")
    flagged(probe("clean", "AD6"), "ok", "python3 is /usr/local/bin/python3")
    sh("peerA", "mkdir -p /root/miniconda3/envs/myenv")
    flagged(probe("peerA", "AD6"), "warn", "conda envs exist")
  end)

  -- AD7 ---------------------------------------------------------------------
  it("AD7 flags event files outside /root/tf-logs and --fix links them in", function()
    sh("tight", "mkdir -p /root/autodl-tmp/runs/exp1/tb && : > /root/autodl-tmp/runs/exp1/tb/events.out.tfevents.1.box")
    flagged(probe("tight", "AD7"), "warn", "outside /root/tf%-logs.*/root/autodl%-tmp/runs/exp1/tb/events")
    local r = probe("tight", "AD7", {fix = true})
    flagged(r, "ok")
    assert.matches("linked /root/autodl%-tmp/runs/exp1/tb", r.fixed)
    assert.are.equal("/root/autodl-tmp/runs/exp1/tb\n", sh("tight", "readlink /root/tf-logs/tb"))
    sh("clean", "mkdir -p /root/tf-logs/run1 && : > /root/tf-logs/run1/events.out.tfevents.1.box")
    flagged(probe("clean", "AD7"), "ok", "no event files outside")
    -- no pinned TensorBoard runs on these boxes (tunnel_testbed_spec runs one): only a note
    if not require("sshd").accepts("127.0.0.1", 6007) then
      assert.matches("note: nothing answers on 127%.0%.0%.1:6007/data/runs", probe("clean", "AD7").evidence)
    end
  end)

  -- AD8 ---------------------------------------------------------------------
  it("AD8 flags a memory spike recorded in the cgroup peak", function()
    flagged(probe("tight", "AD8"), "ok")
    I.tight:sh("dd if=/dev/zero of=/dev/null bs=100M count=1 2>/dev/null")
    local r = probe("tight", "AD8")
    assert.is_true(r.status == "warn" or r.status == "fail", r.evidence)
    assert.matches("cgroup peak .* of limit 128%.0 MiB", r.evidence)
    flagged(probe("clean", "AD8"), "ok", "limit 4%.0 TiB")
  end)

  -- AD9 ---------------------------------------------------------------------
  it("AD9 fails when a requirements pin would replace the image's torch", function()
    sh("tight", "d=$(ls -d /root/miniconda3/lib/python3*)/site-packages && mkdir -p \"$d/torch-2.8.0+cu128.dist-info\" && " ..
      "mkdir -p /root/autodl-tmp/proj && printf 'numpy\\ntorch<2.5  # old\\ntorchvision\\n' > /root/autodl-tmp/proj/requirements.txt")
    flagged(probe("tight", "AD9"), "fail", "requirements%.txt:2 torch<2%.5 would replace the image's torch 2%.8%.0%+cu128")
    flagged(probe("peerB", "AD9"), "n/a", "no requirements")
    sh("clean", "mkdir -p /root/autodl-tmp/proj && printf 'numpy==1.26\\n' > /root/autodl-tmp/proj/requirements.txt")
    flagged(probe("clean", "AD9"), "ok", "no torch/torchvision/torchaudio pins")
  end)

  -- AD-DANGER -----------------------------------------------------------------
  it("AD-DANGER warns about live checkpoints with no durable copy, passes once synced", function()
    sh("tight", "mkdir -p /root/autodl-tmp/checkpoints/exp1 && echo weights > /root/autodl-tmp/checkpoints/exp1/best.pth")
    flagged(probe("tight", "AD-DANGER"), "warn", "auto%-releases after 15 days.*exp1/best%.pth %(no durable copy%)")
    sh("clean", "mkdir -p /root/autodl-tmp/checkpoints/exp1 && echo weights > /root/autodl-tmp/checkpoints/exp1/best.pth")
    require("gpurent.lifecycle.storage").checked_sync(I.clean, "/root/autodl-tmp/checkpoints/exp1/best.pth", "fs",
      {dir = "/root/autodl-fs/final_ckpts/exp1", quiet = true})
    flagged(probe("clean", "AD-DANGER"), "ok", "all 1 checkpoint%(s%) under .* have a durable copy")
  end)

  it("AD-DANGER looks where gpurent's runs keep checkpoints: run_root/active/<id>/out and export/<id>", function()
    sh("peerA", "mkdir -p /root/autodl-tmp/proj/active/run-x/out && echo weights > /root/autodl-tmp/proj/active/run-x/out/best.pth")
    flagged(probe("peerA", "AD-DANGER"), "warn",
      "not on the durable tier %(/root/autodl%-fs/final_ckpts%): /root/autodl%-tmp/proj/active/run%-x/out/best%.pth %(no durable copy%)")
    require("gpurent.lifecycle.storage").checked_sync(I.peerA, "/root/autodl-tmp/proj/active/run-x/out/best.pth", "fs",
      {dir = "/root/autodl-fs/final_ckpts/run-x", quiet = true})
    sh("peerA", "mkdir -p /root/autodl-tmp/proj/export/run-y && echo other > /root/autodl-tmp/proj/export/run-y/best.pth")
    flagged(probe("peerA", "AD-DANGER"), "warn", "proj/export/run%-y/best%.pth %(no durable copy%)$")
    sh("peerA", "rm -rf /root/autodl-tmp/proj/export/run-y")
    flagged(probe("peerA", "AD-DANGER"), "ok", "all 1 checkpoint%(s%) under /root/autodl%-tmp/checkpoints and the runs under " ..
      "/root/autodl%-tmp/%* have a durable copy")
  end)

  -- universal -----------------------------------------------------------------
  it("U-HOSTVIEW warns when the cgroup is smaller than the host; passes when not", function()
    flagged(probe("tight", "U-HOSTVIEW"), "warn", "memory: host .* vs cgroup 128%.0 MiB")
    flagged(probe("clean", "U-HOSTVIEW"), "ok")
  end)

  it("U-THREADS warns when the CPU quota is below the host cores; --fix sets OMP_NUM_THREADS", function()
    flagged(probe("tight", "U-THREADS"), "warn", "CPU quota 0%.5 CPUs")
    flagged(probe("clean", "U-THREADS"), "ok", "CPU quota 16")
    local r = probe("tight", "U-THREADS", {fix = true})
    flagged(r, "ok", "OMP_NUM_THREADS=1 fits")
  end)

  it("U-ZOMBIE-VRAM fails on a zombie holding VRAM, warns on a vanished PID", function()
    -- The child outlives the shell's exec (sleep 1): a child that ended first could
    -- be reaped by the shell itself, and then there is no zombie to find.
    sh("tight", "rm -f /tmp/zpid; nohup sh -c 'sleep 1 & echo $! > /tmp/zpid; exec sleep 120' </dev/null >/dev/null 2>&1 &")
    local zpid, zombie
    for _ = 1, 100 do
      zpid = I.tight:sh("cat /tmp/zpid 2>/dev/null").stdout:match("%d+")
      zombie = zpid and I.tight:sh("sed 's/^.*) //' /proc/" .. zpid .. "/stat | cut -d' ' -f1").stdout:match("Z")
      if zombie then break end
      gpurent.sleep(0.1)
    end
    assert.is_truthy(zombie, "no zombie appeared (pid " .. tostring(zpid) .. ")")
    box:gpu_state("tight", "gpu 0 mem=20000\napp 0 " .. zpid .. " 20000 /root/miniconda3/bin/python\n")
    flagged(probe("tight", "U-ZOMBIE-VRAM"), "fail", "pid " .. zpid .. " %(20000 MiB, zombie%)")
    box:gpu_state("peerA", "gpu 0 mem=9000\napp 0 999999 9000 python\n")
    flagged(probe("peerA", "U-ZOMBIE-VRAM"), "warn", "pid 999999")
    flagged(probe("clean", "U-ZOMBIE-VRAM"), "ok")
  end)

  it("U-XID fails when the GPU is lost", function()
    box:gpu_state("peerB", "fail Unable to determine the device handle for GPU0000:01:00.0: Unknown Error\n")
    flagged(probe("peerB", "U-XID"), "fail", "Unable to determine the device handle")
    flagged(probe("clean", "U-XID"), "ok", "GPU 0: NVIDIA GeForce RTX 4090")
  end)

  it("U-THROTTLE fails on a GPU at 92 C", function()
    box:gpu_state("peerA", "gpu 0 util=100 temp=92 power=300\n")
    flagged(probe("peerA", "U-THROTTLE"), "fail", "GPU 0: 92 C")
    flagged(probe("clean", "U-THROTTLE"), "ok")
  end)

  it("U-NOGPU fails with no GPU; says n/a (not ok) when torch cannot confirm CUDA", function()
    flagged(probe("nogpu", "U-NOGPU"), "fail", "No devices were found")
    flagged(probe("clean", "U-NOGPU"), "n/a", "torch not importable")
  end)

  it("U-CUDA-MISMATCH fails when torch's CUDA is newer than the driver's", function()
    local vp = "$(ls -d /root/miniconda3/lib/python3*)/site-packages/torch/version.py"
    sh("tight", "mkdir -p \"$(dirname " .. vp .. ")\" && printf \"__version__ = '2.8.0+cu126'\\ncuda: Optional[str] = '12.6'\\n\" > " .. vp)
    flagged(probe("tight", "U-CUDA-MISMATCH"), "fail", "built for CUDA 12%.6, newer than the driver's CUDA 12%.4")
    sh("clean", "mkdir -p \"$(dirname " .. vp .. ")\" && printf \"__version__ = '2.5.1+cu121'\\ncuda = '12.1'\\n\" > " .. vp)
    -- the host's own nvcc shows through the instance's /usr overlay: hide it there (copy-on-write)
    assert.are.equal("overlay\n", sh("clean", "findmnt -n -o FSTYPE /usr"))
    sh("clean", "n=$(command -v nvcc) && rm -f \"$n\" || true")
    flagged(probe("clean", "U-CUDA-MISMATCH"), "ok", "torch 2%.5%.1%+cu121 CUDA 12%.1 <= driver 12%.4")
  end)

  it("U-CRLF fails on a CRLF script, passes on LF, n/a with no scripts", function()
    sh("tight", "mkdir -p /root/autodl-tmp/proj && printf 'echo hi\\r\\n' > /root/autodl-tmp/proj/train.sh")
    flagged(probe("tight", "U-CRLF"), "fail", "CRLF line endings in /root/autodl%-tmp/proj/train%.sh")
    sh("clean", "printf 'echo hi\\n' > /root/autodl-tmp/proj/train.sh")
    flagged(probe("clean", "U-CRLF"), "ok", "all LF")
    flagged(probe("nogpu", "U-CRLF"), "n/a", "no %*%.sh scripts")
  end)

  it("U-BUFFER warns on a python writing to a file without PYTHONUNBUFFERED", function()
    flagged(probe("tight", "U-BUFFER"), "n/a", "no running python")
    sh("tight", "nohup /root/miniconda3/bin/python -c 'import time; time.sleep(120)' </dev/null > /root/autodl-tmp/py.log 2>&1 &")
    sh("clean", "PYTHONUNBUFFERED=1 nohup /root/miniconda3/bin/python -c 'import time; time.sleep(120)' </dev/null > /root/autodl-tmp/py.log 2>&1 &")
    gpurent.sleep(0.3)
    flagged(probe("tight", "U-BUFFER"), "warn", "/root/autodl%-tmp/py%.log")
    flagged(probe("clean", "U-BUFFER"), "ok", "1 python process")
  end)

  it("U-WANDB-OFFLINE warns on offline mode without a key, passes with the per-instance key", function()
    flagged(probe("tight", "U-WANDB-OFFLINE"), "ok", "not offline")
    sh("tight", "echo 'export WANDB_MODE=offline' >> ~/.bashrc")
    flagged(probe("tight", "U-WANDB-OFFLINE"), "warn", "WANDB_MODE=offline in login environment and no wandb key")
    sh("tight", "umask 077 && echo 0123456789abcdef > /root/.wandb_key")
    flagged(probe("tight", "U-WANDB-OFFLINE"), "ok", "a key is present %(credfile%)")
  end)

  it("U-SCRIPT-CHANGED fails when a running script is modified, passes when it is not", function()
    for _, name in ipairs({"tight", "clean"}) do
      sh(name, "printf 'sleep 120\\n' > /root/autodl-tmp/q.sh; nohup bash /root/autodl-tmp/q.sh </dev/null >/dev/null 2>&1 &")
    end
    gpurent.sleep(2.2)
    sh("tight", "echo '# edited' >> /root/autodl-tmp/q.sh")
    flagged(probe("tight", "U-SCRIPT-CHANGED"), "fail", "/root/autodl%-tmp/q%.sh modified %d+ s after pid")
    flagged(probe("clean", "U-SCRIPT-CHANGED"), "ok", "unchanged since start: /root/autodl%-tmp/q%.sh")
  end)

  it("U-CODE-DRIFT compares the box's code with the local commit", function()
    gitdir = T.tmpdir()
    T.write(gitdir .. "/train.py", "print('v1')\n")
    T.write(gitdir .. "/run.sh", "python train.py\n")
    assert.is_true(os.execute("cd " .. T.q(gitdir) .. " && git init -q && git add . && " ..
      "git -c user.name=t -c user.email=t@t commit -qm init"))
    sh("clean", "mkdir -p /root/autodl-tmp/code")
    for _, f in ipairs({"train.py", "run.sh"}) do
      assert.are.equal(0, I.clean:sh("cat > /root/autodl-tmp/code/" .. f, {stdin = T.read(gitdir .. "/" .. f)}).code)
    end
    flagged(probe("clean", "U-CODE-DRIFT", {code_dir = "/root/autodl-tmp/code", local_dir = gitdir}), "ok",
      "2 tracked file%(s%) .* match commit")
    sh("clean", "echo \"print('hotfix')\" > /root/autodl-tmp/code/train.py")
    flagged(probe("clean", "U-CODE-DRIFT", {code_dir = "/root/autodl-tmp/code", local_dir = gitdir}), "fail",
      "differ: train%.py")
    flagged(probe("clean", "U-CODE-DRIFT"), "n/a", "needs the code dir")
  end)

  it("U-OOM fails after a real cgroup OOM kill", function()
    flagged(probe("tight", "U-OOM"), "ok", "oom_kill 0")
    local r = I.tight:sh("dd if=/dev/zero of=/dev/null bs=300M count=1 2>/dev/null; echo rc=$?")
    assert.matches("rc=137", r.stdout)
    flagged(probe("tight", "U-OOM"), "fail", "oom_kill [1-9]")
    flagged(probe("clean", "U-OOM"), "ok")
  end)

  it("a probe that raises or returns no verdict is n/a with the reason, never ok", function()
    local raising = {id = "X1", title = "t", severity = "low", symptom = "s", fix = "f",
      probe = function(inst, ctx) ctx.sh("exit 0"); error("cannot parse the widget") end}
    local r = gotchas.run_one(raising, I.clean, {profile = I.clean.profile, sh = function(s) return I.clean:sh(s) end})
    flagged(r, "n/a", "probe could not run: .*cannot parse the widget")
    local silent = setmetatable({probe = function() return {status = "fine"} end}, {__index = raising})
    flagged(gotchas.run_one(silent, I.clean, {profile = I.clean.profile}), "n/a", "no verdict")
  end)

  it("probes of several hosts run concurrently, and a powered-off host is n/a throughout", function()
    local hosts = {I.clean, I.peerA, I.peerB}
    local t0 = gpurent.now()
    local res = gpurent.parallel(hosts, function(inst) return gotchas.run(inst, {only = {"AD4", "U-OOM", "AD6"}}) end)
    assert.are.equal(0, res.failed)
    for i = 1, 3 do
      for _, r in ipairs(res[i].value) do assert.are_not.equal("n/a", r.status, r.id .. " " .. r.evidence) end
    end
    assert.is_true(gpurent.now() - t0 < 20)
    local code, out = box:sim("poweroff nogpu")
    assert.are.equal(0, code, out)
    for _, r in ipairs(gotchas.run(I.nogpu, {only = {"AD4", "U-OOM", "AD1"}})) do
      flagged(r, "n/a", "probe could not run")
    end
  end)
end)
