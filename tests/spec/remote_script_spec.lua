-- remote_script_spec.lua: the on-box scripts (lua/gpurent/remote/*.sh) and their one
-- filler, gpurent.remote.script. Every value is quoted (a hostile value stays data
-- under dash and bash), a placeholder without a value, a value without a placeholder
-- and a value of the wrong type are refused naming the script and the placeholder;
-- every script parses under dash and bash; the run wrapper, the detach starter, the
-- run probe and the autostop watchdog behave the same under both shells, run locally.
local remote = require "gpurent.remote"
local autostop = require "gpurent.billing.autostop"
local q = T.q

local SHELLS = {"dash", "bash"}

-- run TEXT as a script file under SHELL; returns exit code, stdout, stderr
local function run_sh(shell, text, o)
  o = o or {}
  local dir = T.tmpdir()
  local file = T.write(dir .. "/script.sh", text)
  local out, err = dir .. "/out", dir .. "/err"
  local cmd = string.format("%s%s %s%s >%s 2>%s <%s", o.env and (o.env .. " ") or "", shell, q(file),
    o.args and (" " .. o.args) or "", q(out), q(err), o.stdin and q(T.write(dir .. "/in", o.stdin)) or "/dev/null")
  if o.cwd then cmd = "cd " .. q(o.cwd) .. " && " .. cmd end
  local _, _, code = os.execute(cmd)
  local so, se = T.read(out), T.read(err)
  T.rmtree(dir)
  return code, so, se
end

local function wait_for(path, seconds)
  for _ = 1, seconds * 10 do
    if T.read(path) then return true end
    os.execute("sleep 0.1")
  end
  return false
end

local function scripts()
  local names = {}
  for f in require("lfs").dir(T.root .. "/lua/gpurent/remote") do
    local n = f:match("^([%w_]+)%.sh$")
    if n then names[#names + 1] = n end
  end
  table.sort(names)
  return names
end

-- a value for every placeholder of a script
local function dummies(name)
  local vars = {}
  for k in remote.text(name):gmatch("@([%u_][%u%d_]*)@") do vars[k] = "x" end
  return vars
end

describe("gpurent.remote.script", function()
  it("reads the scripts from gpurent's installed tree", function()
    assert.are.equal(require("gpurent.core").host.share_dir .. "/lua/gpurent/remote/run_stop.sh", remote.path("run_stop"))
  end)

  it("quotes every value: $(touch X), quotes, backticks and newlines stay data under dash and bash", function()
    for _, sh in ipairs(SHELLS) do
      local dir = T.tmpdir()
      local hostile = dir .. "/m $(touch " .. dir .. "/X1) `touch " .. dir .. "/X2` ' \" ; touch " .. dir ..
        "/X3\nnext line $HOME *"
      -- run_versions.sh makes the directory META: it must be created with exactly that name
      local code = run_sh(sh, remote.script("run_versions", {META = hostile}))
      assert.are.equal(0, code, sh)
      assert.is_nil(T.read(dir .. "/X1"), sh)
      assert.is_nil(T.read(dir .. "/X2"), sh)
      assert.is_nil(T.read(dir .. "/X3"), sh)
      assert.are.equal("directory", require("lfs").attributes(hostile, "mode"), sh)
      T.rmtree(dir)
    end
  end)

  it("quotes numbers too", function()
    assert.truthy(remote.script("run_wrapper", (function()
      local v = dummies("run_wrapper"); v.VERSION = 3; return v end)()):find("VERSION='3';", 1, true))
  end)

  it("refuses a placeholder without a value, naming the script and the placeholder", function()
    local v = dummies("run_stop"); v.SESSION = nil
    local ok, err = pcall(remote.script, "run_stop", v)
    assert.is_false(ok)
    assert.truthy(tostring(err):find("run_stop.sh", 1, true), err)
    assert.truthy(tostring(err):find("@SESSION@", 1, true), err)
  end)

  it("refuses a value without a placeholder", function()
    local v = dummies("run_stop"); v.SESION = "typo"
    local ok, err = pcall(remote.script, "run_stop", v)
    assert.is_false(ok)
    assert.truthy(tostring(err):find("run_stop.sh has no placeholder @SESION@", 1, true), err)
  end)

  it("refuses a value of the wrong type", function()
    for _, bad in ipairs({true, {}, function() end}) do
      local v = dummies("run_stop"); v.META = bad
      local ok, err = pcall(remote.script, "run_stop", v)
      assert.is_false(ok)
      assert.truthy(tostring(err):find("run_stop.sh: @META@ wants a string or a number, got a " .. type(bad), 1, true), err)
    end
  end)

  it("refuses an unknown script and a list item holding a newline", function()
    assert.is_false(pcall(remote.script, "no_such_script", {}))
    assert.is_false(pcall(remote.script, "../x", {}))
    assert.is_false(pcall(remote.lines, {"a", "b\nc"}, "sync"))
  end)
end)

describe("the on-box scripts", function()
  it("all parse under dash and bash (sh -n), filled", function()
    local names = scripts()
    assert.truthy(#names >= 20, #names)
    for _, name in ipairs(names) do
      local text = remote.script(name, dummies(name))
      for _, sh in ipairs(SHELLS) do
        local code, _, err = run_sh(sh .. " -n", text)
        assert.are.equal(0, code, sh .. " -n " .. name .. ".sh: " .. tostring(err))
      end
    end
  end)

  it("hold no AutoDL literal: the watchdog and the others are generic", function()
    for _, name in ipairs(scripts()) do
      local text = remote.text(name):lower()
      for _, lit in ipairs({"autodl", "seetacloud", "network_turbo", "关机"}) do
        assert.is_nil(text:find(lit, 1, true), name .. ".sh holds " .. lit)
      end
    end
  end)
end)

-- A run laid out as gpurent.run lays it out, in a local temp dir.
local function run_dirs()
  local d = T.tmpdir()
  local p = {root = d, meta = d .. "/active/r 1/.gpurent", log = d .. "/active/r 1/train.log",
    out = d .. "/active/r 1/out", code = d .. "/code", durable = d .. "/durable dir"}
  assert(os.execute("mkdir -p " .. q(p.code) .. " " .. q(p.out) .. " " .. q(p.meta)))
  return p
end

local function wrapper(p, command, o)
  o = o or {}
  return remote.script("run_wrapper", {VERSION = 1, RUN_ID = "r 1", META = p.meta, LOG = p.log, OUT = p.out,
    CODE = p.code, HOOK = o.hook or "", CRED_FILE = "", ENV = "export GR_SPEC='a b'", COMMAND = command,
    DURABLE_DIR = p.durable, DURABLE_TIER = p.root, SYNC = "best.pth", SCRATCH = "latest.pth",
    LOAD_CHECK = o.load_check or ""})
end

describe("the run wrapper under dash and bash", function()
  for _, sh in ipairs(SHELLS) do
    it(sh .. ": DONE only after exit 0 and the re-hashed durable copy; scratch pruned", function()
      local p = run_dirs()
      local code = run_sh(sh, wrapper(p, 'echo "hi $GR_SPEC"; printf best > "$GPURENT_OUT/best.pth"; ' ..
        'printf s > "$GPURENT_OUT/latest.pth"', {hook = "GR_HOOKED=yes"}), {args = "1"})
      assert.are.equal(0, code)
      assert.truthy(T.read(p.meta .. "/a1/DONE"):match("^exit=0 stage=done at=%d+\n$"))
      assert.is_nil(T.read(p.meta .. "/a1/FAILED"))
      assert.are.equal("best", T.read(p.durable .. "/best.pth"))
      assert.is_nil(T.read(p.out .. "/latest.pth"))
      local log = T.read(p.log)
      assert.truthy(log:find("hi a b\n", 1, true), log)
      assert.truthy(log:find("[gpurent] synced best.pth", 1, true), log)
      T.rmtree(p.root)
    end)
    it(sh .. ": a failing command writes FAILED with its exit code and stage train", function()
      local p = run_dirs()
      local code = run_sh(sh, wrapper(p, "exit 7"), {args = "1"})
      assert.are.equal(7, code)
      assert.truthy(T.read(p.meta .. "/a1/FAILED"):match("^exit=7 stage=train "))
      T.rmtree(p.root)
    end)
    it(sh .. ": a best.pth its load check refuses is FAILED stage load-check and never synced", function()
      local p = run_dirs()
      local code = run_sh(sh, wrapper(p, 'printf junk > "$GPURENT_OUT/best.pth"',
        {load_check = 'grep -q "^ckpt" "$CKPT"'}), {args = "1"})
      assert.are.equal(1, code)
      assert.truthy(T.read(p.meta .. "/a1/FAILED"):match("^exit=0 stage=load%-check "))
      assert.is_nil(T.read(p.durable .. "/best.pth"))
      assert.truthy(T.read(p.log):find("load check FAILED: best.pth does not load", 1, true))
      T.rmtree(p.root)
      p = run_dirs()
      code = run_sh(sh, wrapper(p, 'printf ckpt > "$GPURENT_OUT/best.pth"', {load_check = 'grep -q "^ckpt" "$CKPT"'}),
        {args = "1"})
      assert.are.equal(0, code)
      assert.are.equal("ckpt", T.read(p.durable .. "/best.pth"))
      T.rmtree(p.root)
    end)
    it(sh .. ": exit 0 without the file to sync is FAILED stage durable-sync, exit 1", function()
      local p = run_dirs()
      local code = run_sh(sh, wrapper(p, "true"), {args = "1"})
      assert.are.equal(1, code)
      assert.truthy(T.read(p.meta .. "/a1/FAILED"):match("^exit=0 stage=durable%-sync "))
      T.rmtree(p.root)
    end)
  end
end)

describe("the detach starter and the run probe under dash and bash", function()
  for _, sh in ipairs(SHELLS) do
    for _, mode in ipairs({"nohup", "tmux"}) do
      it(sh .. ": starts the wrapper under " .. mode .. ", refuses a second copy, the probe reads DONE", function()
        local p = run_dirs()
        local tmuxdir = T.tmpdir()
        local env = "TMUX_TMPDIR=" .. q(tmuxdir)
        local w = p.meta .. "/run-v1.sh"
        T.write(w, wrapper(p, 'sleep 1; printf best > "$GPURENT_OUT/best.pth"'))
        local start = remote.script("run_start", {META = p.meta, SESSION = "gr-spec", SCRIPT = w, LOG = p.log, MODE = mode})
        local code, out = run_sh(sh, start, {env = env})
        assert.are.equal(0, code, out)
        assert.truthy(out:find("mode " .. mode .. "\nattempt 1\npid %d+\n"), out)
        -- alive: a second start is refused (exit 3), never a second copy
        local code2, out2 = run_sh(sh, start, {env = env})
        assert.are.equal(3, code2, out2)
        assert.truthy(out2:match("^refuse "), out2)
        assert.is_true(wait_for(p.meta .. "/a1/DONE", 20))
        os.execute("sleep 0.3")
        local probe = remote.script("run_probe", {META = p.meta, SESSION = "gr-spec", LOG = p.log, OUT = p.out,
          TIERS = "live\t" .. p.root})
        local pc, facts = run_sh(sh, probe, {env = env})
        assert.are.equal(0, pc)
        assert.truthy(facts:find("\ngr_attempt 1\n", 1, true), facts)
        assert.truthy(facts:find("\ngr_proc 0 %d+\n"), facts)
        assert.truthy(facts:find("\ngr_done exit=0 stage=done at=%d+\n"), facts)
        assert.truthy(facts:find("^tier live bytes "), facts)
        assert.truthy(facts:find("\ngr_artifact [%d.]+ best.pth\n"), facts)
        os.execute("TMUX_TMPDIR=" .. q(tmuxdir) .. " tmux kill-server 2>/dev/null")
        T.rmtree(tmuxdir)
        T.rmtree(p.root)
      end)
    end
  end
end)

describe("the autostop watchdog under dash and bash", function()
  -- a local box: HOME is a temp dir (the state dir is $HOME/.gpurent/autostop), no tmux server
  local function box(verdict_case)
    local home = T.tmpdir()
    local st = home .. "/.gpurent/autostop"
    assert(os.execute("mkdir -p " .. q(st) .. " " .. q(home .. "/runs/r1/.gpurent/a1")))
    if verdict_case == "unsynced" then
      T.write(home .. "/runs/r1/.gpurent/current", "1\n")
      T.write(home .. "/runs/r1/.gpurent/a1/started", "100\n")
      T.write(home .. "/runs/r1/.gpurent/a1/FAILED", "exit=0 stage=durable-sync at=200\n")
    end
    local cfg = autostop.config_text{INSTANCE = "spec", IDLE = 0, TTL = 1, INTERVAL = 1, STALL = 60, STOP_STALLED = 0,
      THRESHOLD = 5, STOP_VERB = "echo verb > " .. q(st .. "/powered") .. "; kill -TERM \"$(cut -d' ' -f1 " ..
        q(st .. "/pid") .. ")\"",
      JOB_GLOB = home .. "/runs/*/.gpurent", LOG_REL = "train.log", OUT_REL = "out", SESSION = "gpurent-autostop",
      SESSION_PREFIX = "gr-", DURABLE = home .. "/durable"}
    T.write(st .. "/config", cfg .. "ARMED_AT=" .. (os.time() - 100) .. "\n")
    return home, st
  end

  for _, sh in ipairs(SHELLS) do
    it(sh .. ": TTL expired, no job, nothing unsynced: powers off with the verb and says why", function()
      local home, st = box("none")
      local env = "HOME=" .. q(home) .. " TMUX_TMPDIR=" .. q(home)
      local code = run_sh(sh, remote.text("autostop"), {env = env, args = q(st .. "/config")})
      assert.are.equal(0, code)   -- the verb's TERM ends it
      assert.are.equal("verb\n", T.read(st .. "/powered"))
      local why = T.read(home .. "/durable/last-stop")
      assert.truthy(why and why:find("\nreason=ttl\n", 1, true), why)
      T.rmtree(home)
    end)
    it(sh .. ": TTL expired but the last job's sync is unverified: blocked, never powered off", function()
      local home, st = box("unsynced")
      local env = "HOME=" .. q(home) .. " TMUX_TMPDIR=" .. q(home)
      local dir = T.tmpdir()
      local file = T.write(dir .. "/autostop.sh", remote.text("autostop"))
      os.execute(string.format("%s %s %s %s >/dev/null 2>&1 </dev/null &", env, sh, q(file), q(st .. "/config")))
      assert.is_true(wait_for(st .. "/readings", 10))
      os.execute("sleep 1.5")
      local readings = T.read(st .. "/readings")
      assert.truthy(readings:find("\nverdict=blocked\n", 1, true), readings)
      assert.truthy(readings:find("\nlast_job_state=FAILED exit=0 stage=durable-sync", 1, true), readings)
      assert.is_nil(T.read(st .. "/powered"))
      local pid = T.read(st .. "/pid"):match("^(%d+) ")
      os.execute("kill -TERM " .. pid)
      T.rmtree(dir)
      T.rmtree(home)
    end)
  end
end)
