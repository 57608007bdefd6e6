-- autostop_spec.lua: the on-box autostop watchdog (lua/gpurent/billing/autostop.*)
-- against the simulated AutoDL testbed: real sshd per instance, real tmux (and none
-- with --no-tmux), real jobs started by gpurent.detach's wrapper, and the real
-- in-instance `shutdown`, which powers the instance off through the local API.
-- Six instances are armed at once in setup so their windows run concurrently; each
-- `it` then checks one instance: stops only when it should, never on doubt.
local autostop = require "gpurent.billing.autostop"
local profile = require "gpurent.config.profile"
local json = require "gpurent.util.json"
local simbox = require "simbox"

describe("autostop (pure)", function()
  it("parses durations with units and refuses bare or bad numbers", function()
    assert.are.equal(6, autostop.parse_duration("6s"))
    assert.are.equal(1800, autostop.parse_duration("30m"))
    assert.are.equal(6 * 3600, autostop.parse_duration("6h"))
    assert.are.equal(90, autostop.parse_duration("1.5m"))
    for _, bad in ipairs({"30", "30x", "m", "", "-5s", "0s"}) do
      local ok, err = pcall(autostop.parse_duration, bad, "--idle")
      assert.is_false(ok, bad)
      assert.are.equal(2, err.exit, bad)
    end
  end)

  it("takes the verb, the job layout and the durable dir from the profile", function()
    local p = profile.load("autodl")
    local L = autostop.layout(p, "box 1")
    assert.are.equal(p.billing.meter_stop.in_instance_verb, L.verb)
    assert.are.equal("/root/autodl-tmp/*/active/*/.gpurent", L.job_glob)
    assert.are.equal("train.log", L.log_rel)
    assert.are.equal("out", L.out_rel)
    assert.are.equal("gr-", L.session_prefix)
    assert.are.equal(profile.durable_tier(p).path .. "/.gpurent/autostop/box_1", L.durable)
    p.billing.meter_stop.in_instance_verb = nil
    local ok, err = pcall(autostop.layout, p, "x")
    assert.is_false(ok)
    assert.are.equal(3, err.exit)
    assert.matches("no in%-instance power%-off verb", err.msg or tostring(err))
  end)

  it("refuses an arming without a window or with a bare number before connecting (exit 2)", function()
    local env = "GPURENT_SSH_CONFIG=/dev/null"
    local code, _, err = T.run("billing autostop nosuchhost", {env = env})
    assert.are.equal(2, code)
    assert.matches("--idle DURATION and/or --ttl DURATION", err, 1, true)
    code, _, err = T.run("billing autostop nosuchhost --idle 30", {env = env})
    assert.are.equal(2, code)
    assert.matches("with a unit", err, 1, true)
    code = T.run("billing autostop nosuchhost --ttl 1h --mode screen", {env = env})
    assert.are.equal(2, code)
  end)

  it("on an unreachable (powered-off) box, --status and --off say where the watchdog wrote why it stopped", function()
    local env = "GPURENT_SSH_CONFIG=/dev/null"
    for _, verb in ipairs({"--status", "--off"}) do
      local code, _, err = T.run("billing autostop root@127.0.0.1:1 " .. verb, {env = env})
      assert.are.equal(1, code, err)
      assert.matches("A powered-off box has no SSH", err, 1, true)
      assert.matches("/.gpurent/autostop/root_127.0.0.1_1/last-stop", err, 1, true)
      assert.matches("same region", err, 1, true)
    end
  end)

  it("quotes config values for the sourcing shell", function()
    local text = autostop.config_text{INSTANCE = "a'b", IDLE = 6, TTL = 0, INTERVAL = 1, STALL = 6, STOP_STALLED = 0,
      THRESHOLD = 5, STOP_VERB = "shutdown", JOB_GLOB = "/x/*", LOG_REL = "l", OUT_REL = "o", SESSION = "s",
      SESSION_PREFIX = "gr-", DURABLE = "/d"}
    assert.matches("INSTANCE='a'\\''b'", text, 1, true)
    assert.matches("JOB_GLOB='/x/*'", text, 1, true)
  end)
end)

local ok_sim, why = simbox.available()

describe("autostop watchdog on testbed instances", function()
  if not ok_sim then
    pending("testbed unavailable: " .. tostring(why))
    return
  end
  local run = require "gpurent.lifecycle.run"
  local detach = require "gpurent.lifecycle.detach"
  local core = require "gpurent.core"
  local box, env, armed, jobs, ssh_pid = nil, nil, {}, {}, nil
  local outputs, finished = {}, {}

  local function now() return core.sys.now() end
  local function sleep(s) core.sys.sleep(s) end
  local function cli(args)
    local code, out, err = T.run(args, {env = env})
    outputs[#outputs + 1] = args .. "\n" .. out .. err
    return code, out, err
  end
  -- the API's status of NAME; `autodl-sim info` can fail for an instant while an
  -- instance is mid power-off (its launcher exiting), so retry briefly (bounded)
  local function status_of(name)
    local last
    for _ = 1, 20 do
      local ok, info = pcall(box.info, box, name)
      if ok then return info.status end
      last = info
      sleep(0.25)
    end
    error(last, 0)
  end
  -- poll the API's status until it is `want` (bounded in time and count)
  local function wait_status(name, want, seconds)
    local deadline = now() + seconds
    local st
    for _ = 1, 400 do
      st = status_of(name)
      if st == want or now() > deadline then break end
      sleep(0.25)
    end
    return st
  end
  -- the instance's disks as the host sees them (tests/sim/README.md, "Paths")
  local function host_path(name, kind, rel)
    local base = ({root_dir = "/instances/" .. name .. "/root", data_dir = "/instances/" .. name .. "/data",
                   region_dir = "/regions/westDC2"})[kind]
    return box.dir .. base .. "/" .. rel
  end
  local function readings(name)
    local code, out = cli("billing autostop " .. name .. " --status --json")
    assert.are.equal(0, code, out)
    return json.decode(out, "status")
  end
  local function arm(name, args)
    local code, out, err = cli("billing autostop " .. name .. " " .. args)
    assert.are.equal(0, code, out .. err)
    local pid = tonumber(out:match("watchdog PID (%d+)"))
    assert.is_truthy(pid, out)
    armed[name] = {pid = pid, at = os.time(), out = out}
    return pid, out
  end
  -- a real job: gpurent.detach's wrapper (DONE only after the checked durable sync)
  local function start_job(name, id, command)
    local inst = box.insts[name]
    local p = inst.profile
    local r = {id = id, host = name, session = run.session_name(id), paths = run.paths(p, "proj", id)}
    inst:sh("mkdir -p " .. T.q(r.paths.code) .. " " .. T.q(r.paths.out), {check = true})
    local wo = {command = command, sync = {"best.pth"}, scratch = {}, durable_dir = r.paths.durable_ckpt,
                durable_tier = profile.durable_tier(p).path}
    local script = detach.install(inst, r, function(v) wo.version = v; return detach.wrapper(r, wo) end)
    local st = detach.start(inst, r, {script = script})
    jobs[name] = {id = id, r = r, st = st}
    return r
  end
  -- alive and not a zombie, inside the instance's PID namespace
  local function pid_alive(name, pid)
    local code = box:exec(name, "s=$(sed 's/.*) //' /proc/" .. pid .. "/stat 2>/dev/null | cut -d' ' -f1); [ -n \"$s\" ] && [ \"$s\" != Z ]")
    return code == 0
  end

  setup(function()
    box = simbox.new()
    env = box:env() .. " GPURENT_STATE_DIR=" .. T.q(box.dir .. "/state") .. " HOME=" .. T.q(box.dir)
    for _, n in ipairs({"as1", "as2", "as3", "as4", "as6", "as7"}) do box:up(n) end
    box:up("as5", "--no-tmux")
    -- as1: a job that outlives the idle window, then syncs best.pth and writes DONE
    start_job("as1", "proj-long", "sleep 7; echo weights > \"$GPURENT_OUT/best.pth\"")
    -- as2: a job that exits 0 without best.pth: the durable sync fails (FAILED stage=durable-sync)
    start_job("as2", "proj-nosync", "true")
    -- as7: a job that is alive but does nothing (GPU idle, no log line, no artifact)
    start_job("as7", "proj-stuck", "sleep 120")
    box:gpu_state("as3", "gpu 0 util=[N/A]\n")          -- garbage reading
    box:gpu_state("as5", "gpu 0 util=97\n")             -- busy: only the TTL can stop it
    -- as4: a person's interactive shell (a pty), from the system ssh client
    local p = io.popen(string.format("ssh -F %s -o BatchMode=yes -tt as4 'sleep 300' </dev/null >/dev/null 2>&1 & echo $!",
      T.q(box.dir .. "/ssh_config")))
    ssh_pid = tonumber(p:read("a"):match("%d+"))
    p:close()
    for _ = 1, 40 do                                    -- bounded: the pty session is up
      if box:exec("as4", "grep -qa 'sshd: root@pts' /proc/[0-9]*/cmdline") == 0 then break end
      sleep(0.25)
    end
    arm("as1", "--idle 4s --interval 1s")
    arm("as2", "--idle 3s --interval 1s")
    arm("as3", "--idle 3s --interval 1s")
    arm("as4", "--idle 3s --interval 1s")
    arm("as5", "--ttl 4s --idle 1h --interval 1s")
    arm("as7", "--idle 3s --interval 1s")
  end)

  teardown(function()
    -- diagnostics for an instance whose `it` did not finish: what its watchdog saw
    for _, n in ipairs({"as1", "as2", "as3", "as4", "as5", "as6", "as7"}) do
      if box and not finished[n] then
        local d = box.dir .. "/instances/" .. n
        io.stderr:write(string.format("\n--- %s (test did not finish): watchdog.log\n%s\n--- last-stop\n%s\n--- boot.log tail\n%s\n", n,
          T.read(d .. "/root/.gpurent/autostop/watchdog.log") or "(none)",
          T.read(d .. "/root/.gpurent/autostop/last-stop") or "(none)",
          ((T.read(d .. "/boot.log") or ""):sub(-1500))))
      end
    end
    if ssh_pid then
      local c = T.read("/proc/" .. ssh_pid .. "/cmdline") or ""
      if c:match("^ssh%z") then os.execute("kill " .. ssh_pid) end   -- exactly the client we started
    end
    if box then box:down() end
    for _, o in ipairs(outputs) do
      assert.is_nil(o:find("Traceback", 1, true), o)
    end
  end)

  it("powers off after the idle window, only once the job is finished and synced", function()
    assert.are.equal("shutdown", wait_status("as1", "shutdown", 30))
    local r = jobs.as1.r
    local meta = r.paths.meta:gsub("^/root/autodl%-tmp/", "")
    local done = T.read(host_path("as1", "data_dir", meta .. "/a1/DONE"))
    assert.is_truthy(done, "the job never wrote DONE: it was killed by the power-off")
    local done_at = tonumber(done:match("at=(%d+)"))
    assert.matches("exit=0 stage=done", done)
    -- the durable copy exists (the wrapper's checked sync) and the reason is on the durable tier
    assert.are.equal("weights\n", T.read(host_path("as1", "region_dir", "final_ckpts/proj-long/best.pth")))
    local reason = T.read(host_path("as1", "region_dir", ".gpurent/autostop/as1/last-stop"))
    assert.is_truthy(reason, "no reason file on the durable tier")
    assert.matches("reason=idle", reason, 1, true)
    assert.matches("last_job=proj-long DONE exit=0 stage=done", reason, 1, true)
    assert.matches("nothing was released", reason, 1, true)
    local stop_at = tonumber(reason:match("\nat=(%d+)"))
    -- not before the window: the idle clock starts when the job is over
    assert.is_true(stop_at - done_at >= 4, string.format("stopped %ds after DONE (window 4s)", stop_at - done_at))
    local log = T.read(host_path("as1", "root_dir", ".gpurent/autostop/watchdog.log"))
    assert.matches("active: job running: proj-long", log, 1, true)
    assert.matches("stop reason=idle", T.read(host_path("as1", "region_dir", ".gpurent/autostop/as1/events.log")), 1, true)
    finished.as1 = true
  end)

  it("TTL expiry powers off even with a busy GPU (nohup fallback without tmux)", function()
    assert.matches("under nohup", armed.as5.out, 1, true)
    assert.are.equal("shutdown", wait_status("as5", "shutdown", 20))
    local reason = T.read(host_path("as5", "region_dir", ".gpurent/autostop/as5/last-stop"))
    assert.matches("reason=ttl", reason, 1, true)
    assert.matches("gpu=97", reason, 1, true)
    local at, armed_at = tonumber(reason:match("\nat=(%d+)")), tonumber(reason:match("armed_at=(%d+)"))
    assert.is_true(at - armed_at >= 4, "TTL 4s, stopped after " .. (at - armed_at) .. "s")
    finished.as5 = true
  end)

  it("does not power off when the last job's durable sync is not verified", function()
    sleep(math.max(0, armed.as2.at + 7 - os.time()))
    assert.are.equal("running", status_of("as2"))
    local s = readings("as2")
    assert.is_true(s.armed)
    assert.are.equal("blocked", s.readings.verdict)
    assert.matches("durable sync is not verified", s.readings.why, 1, true)
    assert.matches("FAILED exit=0 stage=durable%-sync", s.readings.last_job_state)
    finished.as2 = true
  end)

  it("never stops on a garbage or unreadable GPU reading; stops once it reads idle", function()
    sleep(math.max(0, armed.as3.at + 6 - os.time()))
    assert.are.equal("running", status_of("as3"))
    assert.matches("unreadable: garbage '%[N/A%]'", readings("as3").readings.gpu)
    box:gpu_state("as3", "gpu 0 util=0\nfail Unable to determine the device handle for GPU0000:01:00.0: Unknown Error\n")
    sleep(5)
    assert.are.equal("running", status_of("as3"))
    local s = readings("as3")
    assert.matches("unreadable: nvidia%-smi exit 15", s.readings.gpu)
    assert.are.equal("active", s.readings.verdict)
    box:gpu_state("as3", "gpu 0 util=0\n")
    assert.are.equal("shutdown", wait_status("as3", "shutdown", 15))
    finished.as3 = true
  end)

  it("never stops while an interactive SSH session is open; stops after it closes", function()
    sleep(math.max(0, armed.as4.at + 6 - os.time()))
    assert.are.equal("running", status_of("as4"))
    local s = readings("as4")
    assert.matches("pts/", s.readings.sessions, 1, true)
    assert.matches("interactive SSH session", s.readings.why, 1, true)
    assert.are.equal(0, os.execute("kill " .. ssh_pid) and 0 or 1)
    ssh_pid = nil
    assert.are.equal("shutdown", wait_status("as4", "shutdown", 15))
    assert.matches("reason=idle", T.read(host_path("as4", "region_dir", ".gpurent/autostop/as4/last-stop")), 1, true)
    finished.as4 = true
  end)

  it("reports a stalled job loudly and stops for it only with --stop-stalled", function()
    sleep(math.max(0, armed.as7.at + 6 - os.time()))
    assert.are.equal("running", status_of("as7"))
    local s = readings("as7")
    assert.are.equal("stalled", s.readings.verdict)
    assert.are.equal("proj-stuck", s.readings.stalled)
    local code, text = cli("billing autostop as7 --status")
    assert.are.equal(0, code)
    assert.matches("STALLED: proj-stuck", text, 1, true)
    local events = T.read(host_path("as7", "region_dir", ".gpurent/autostop/as7/events.log")) or ""
    assert.matches("STALLED proj%-stuck .*not stopping", events)
    arm("as7", "--idle 3s --interval 1s --stop-stalled")
    assert.are.equal("shutdown", wait_status("as7", "shutdown", 15))
    local reason = T.read(host_path("as7", "region_dir", ".gpurent/autostop/as7/last-stop"))
    assert.matches("reason=stalled", reason, 1, true)
    assert.matches("stalled=proj-stuck", reason, 1, true)
    finished.as7 = true
  end)

  it("re-arming replaces the watchdog; --off stops the exact PID and removes its files", function()
    box:gpu_state("as6", "gpu 0 util=97\n")           -- busy until --off: no race with the window
    local first = arm("as6", "--idle 6s --interval 1s")
    local second, out = arm("as6", "--idle 5s --interval 1s")
    assert.matches("replaced the earlier watchdog PID " .. first, out, 1, true)
    assert.matches("unchanged", out, 1, true)                -- the same script file, not rewritten
    assert.is_false(pid_alive("as6", first))
    assert.is_true(pid_alive("as6", second))
    local code, off = cli("billing autostop as6 --off")
    assert.are.equal(0, code, off)
    assert.matches("stopped watchdog PID " .. second, off, 1, true)
    assert.is_false(pid_alive("as6", second))
    assert.are_not.equal(0, (box:exec("as6", "tmux has-session -t =gpurent-autostop")))
    assert.are_not.equal(0, (box:exec("as6", "test -e /root/.gpurent/autostop")))
    assert.is_false(readings("as6").armed)
    box:gpu_state("as6", "gpu 0 util=0\n")            -- idle now: a surviving watchdog would stop it
    sleep(8)                                            -- past the 5s window it would have used
    assert.are.equal("running", status_of("as6"))
    finished.as6 = true
  end)
end)
