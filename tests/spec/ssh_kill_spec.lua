-- ssh_kill_spec: the remote process-group kill against a real sshd whose login
-- shell is bash with a chatty ~/.bashrc (it prints on stdout and on stderr, the
-- stderr part without a newline, before every command). A timeout from inst:sh,
-- SIGINT to a `gpurent -e` chunk, and Ctrl-C on the REPL's `sh "..."` and `!cmd`
-- must each leave no remote process behind (counted in /proc: the daemon runs on
-- this machine), return promptly and say what was signalled.
local sshd = require "sshd"
local tty = require "tty"
local core = require "gpurent.core"

local now, sleep = core.sys.now, core.sys.sleep

local BASHRC = table.concat({
  "echo 'rc-out: hello from bashrc'",
  "echo 'rc-err: hello from bashrc' >&2",
  "printf 'rc-err-without-newline' >&2",
  "",
}, "\n")

-- The fixture's root logs in with /bin/sh (dash reads no rc file). Give it bash:
-- the daemon's namespace bind-mounts fx.dir/passwd over /etc/passwd, so the file
-- is rewritten in place (same inode) and sshd reads it at the next login.
-- How many processes run exactly this argv (e.g. {"sleep", "333"})?
local function count_procs(argv)
  local want, n = table.concat(argv, "\0") .. "\0", 0
  for name in require("lfs").dir("/proc") do
    if name:match("^%d+$") and T.read("/proc/" .. name .. "/cmdline") == want then n = n + 1 end
  end
  return n
end

-- A sleep of its own for each test run, e.g. {"sleep", "333.4711"}: processes a
-- failed run left behind cannot be counted by the next run, and cleanup can kill
-- exactly the processes this run started.
local started = {}
local function unique_sleep(seconds)
  local argv = {"sleep", string.format("%d.%04d", seconds, math.random(1, 9999))}
  started[#started + 1] = argv
  return argv
end

-- Kill (exact PIDs) whatever of this run's sleeps survived a failed test.
local function kill_leftovers()
  for _, argv in ipairs(started) do
    local want = table.concat(argv, "\0") .. "\0"
    for name in require("lfs").dir("/proc") do
      if name:match("^%d+$") and T.read("/proc/" .. name .. "/cmdline") == want then os.execute("kill " .. name) end
    end
  end
end

-- Poll (bounded) until count_procs(argv) == n; returns the last count.
local function settle(argv, n, seconds)
  local deadline, c = now() + seconds, nil
  repeat
    c = count_procs(argv)
    if c == n then return c end
    sleep(0.05)
  until now() > deadline
  return c
end

describe("the remote kill with a chatty login shell", function()
  local fx, inst
  setup(function()
    fx = sshd.start{addrs = 1, shell = "/bin/bash"}
    T.write(fx.home .. "/.bashrc", BASHRC)
    inst = fx:connect(1)
  end)
  teardown(function()
    if inst then inst:close() end
    if fx then fx:stop() end
    kill_leftovers()
  end)

  it("the login shell really prints on both streams, and the PID marker is cut out exactly", function()
    local r = inst:sh("echo out; echo err >&2")
    assert.equal("rc-out: hello from bashrc\nout\n", r.stdout)
    assert.equal("rc-err: hello from bashrc\nrc-err-without-newlineerr\n", r.stderr)
    local lines = {}
    inst:sh("echo err2 >&2", {on_line = function(l, s) if s == "stderr" then lines[#lines + 1] = l end end})
    assert.same({"rc-err: hello from bashrc", "rc-err-without-newlineerr2"}, lines)
  end)

  it("the marker is cut out however the stream is split; only a possible marker start waits", function()
    local grabber = require("gpurent.transport.instance")._pid_grabber
    local stream = "rc\1noise\n" .. "rc-no-newline" .. "\1gpurent-pid-abc 4242\n" .. "err \1gpurent-pid-abc 7\n"
    local want = "rc\1noise\nrc-no-newline" .. "err \1gpurent-pid-abc 7\n"   -- only the first marker is ours
    for size = 1, #stream do
      local g, out = grabber("abc"), {}
      for i = 1, #stream, size do out[#out + 1] = g.take(stream:sub(i, i + size - 1)) end
      out[#out + 1] = g.flush()
      assert.equal(want, table.concat(out), "split every " .. size .. " bytes")
      assert.equal(4242, g.pid)
    end
    local g = grabber("abc")
    assert.equal("x", g.take("x\1gpu"))                -- may be the marker: held
    assert.equal("\1gpunk\n", g.take("nk\n"))          -- is not: released at once
    assert.equal("", g.take("\1gpurent-pid-abc 12"))   -- the PID may go on
    assert.equal("\1gpurent-pid-abc 12", g.flush())    -- the stream ended without the newline
    assert.is_nil(g.pid)
    g = grabber("abc")
    assert.equal("\1gpurent-pid-xyz 9\n", g.take("\1gpurent-pid-xyz 9\n"))   -- another nonce is not ours
    assert.is_nil(g.pid)
  end)

  it("a timeout TERMs the command's process group and the session stays usable", function()
    local argv = unique_sleep(333)
    local t0 = now()
    local ok, err = pcall(inst.sh, inst, table.concat(argv, " ") .. "; echo never", {timeout = 2})
    assert.is_false(ok)
    assert.equal("timeout", err.code)
    assert.matches("TERM sent to remote process group %d+", tostring(err))
    assert.is_true(now() - t0 < 6, "the timeout took " .. (now() - t0) .. " s")
    assert.equal(0, settle(argv, 0, 5), "remote sleep survived the timeout")
    assert.is_true(inst.conn.sess:alive())
    assert.is_nil(inst.reconnects, "the session was lost and reopened")
    assert.matches("still\n$", inst:sh("echo still").stdout)
  end)

  it("SIGINT to a `gpurent -e` chunk TERMs the remote group, says so, and exits 130 within a second", function()
    local dir, argv = T.tmpdir(), unique_sleep(334)
    local cmd = table.concat(argv, " ")
    local script = string.format('local i = gpurent.connect("h1", {config = %q}); i:sh(%q)', fx.config, cmd)
    local pidfile, codefile = dir .. "/pid", dir .. "/code"
    os.execute(string.format("(%s -e %s >%s 2>&1 & echo $! > %s; wait $!; echo $? > %s) &",
      T.q(T.bin), T.q(script), T.q(dir .. "/out"), T.q(pidfile), T.q(codefile)))
    assert.equal(1, settle(argv, 1, 10), "the remote sleep never started")
    local pid = tonumber((T.read(pidfile) or ""):match("%d+"))
    assert.truthy(pid)
    local t0 = now()
    os.execute("kill -INT " .. pid)
    local code
    for _ = 1, 500 do                                  -- bounded: 10 s (the old code took 6)
      code = tonumber(T.read(codefile) or "")
      if code then break end
      sleep(0.02)
    end
    local took, out = now() - t0, T.read(dir .. "/out")
    if code then T.rmtree(dir) end                     -- else the shell still writes there
    assert.equal(130, code, out)
    assert.is_true(took < 2, "exit took " .. took .. " s")
    assert.truthy(out:find("interrupted (TERM sent to remote process group ", 1, true), out)
    assert.truthy(out:find("): " .. cmd, 1, true), out)
    assert.is_nil(out:find("connection lost", 1, true), out)
    assert.equal(0, settle(argv, 0, 5), "remote sleep survived SIGINT")
  end)

  describe("in the REPL (tmux)", function()
    local term, state
    before_each(function()
      state = T.tmpdir()
      term = tty.start(T.q(T.bin) .. " repl " .. fx.aliases[1],
        {env = "GPURENT_STATE_DIR=" .. T.q(state) .. " GPURENT_SSH_CONFIG=" .. T.q(fx.config)})
      term:wait_for(fx.aliases[1] .. " [meter manual]>", 10, true)  -- generic-ssh: billed by hand
    end)
    after_each(function()
      term:close()
      T.rmtree(state)
    end)

    -- Type line, wait for argv to run remotely, Ctrl-C; returns the seconds until
    -- `awaited` showed, after checking that nothing of argv is left.
    local function interrupt(line, argv, awaited)
      term:line(line)
      assert.equal(1, settle(argv, 1, 10), "never started remotely: " .. line)
      local t0 = now()
      term:keys("C-c")
      term:wait_for(awaited, 5, true)
      local took = now() - t0
      assert.equal(0, settle(argv, 0, 5), table.concat(argv, " ") .. " survived Ctrl-C:\n" .. term:screen())
      return took
    end

    it("Ctrl-C on sh \"sleep ...\" returns at once, names the signalled group and keeps the session", function()
      local argv = unique_sleep(335)
      local took = interrupt('sh "' .. table.concat(argv, " ") .. '"', argv, "TERM sent to remote process group")
      assert.is_true(took < 2, "Ctrl-C took " .. took .. " s")
      local screen = term:screen()
      assert.is_nil(screen:find("sched.lua", 1, true), screen)
      assert.is_nil(screen:find("connection", 1, true), screen)
      term:line("!echo after-$((20+1))")
      term:wait_for("after-21", 5, true)
    end)

    it("Ctrl-C on !sleep returns at once and leaves nothing running", function()
      local argv = unique_sleep(336)
      local took = interrupt("!" .. table.concat(argv, " "), argv, "[interrupted; sent TERM to remote process group")
      assert.is_true(took < 2, "Ctrl-C took " .. took .. " s")
      term:line("!echo after-$((30+1))")
      term:wait_for("after-31", 5, true)
      assert.is_nil(term:screen():find("re-established", 1, true))
    end)
  end)
end)
