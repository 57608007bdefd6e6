-- ssh_exec_spec: inst:sh against a real sshd: results, check=, timeout, streaming,
-- 100 MB of output, stdin, secrets (absent from remote ps, output, errors, JSON),
-- and reconnecting after a killed connection.
local sshd = require "sshd"
local json = require "gpurent.util.json"

describe("inst:sh", function()
  local fx, inst
  setup(function()
    fx = sshd.start{addrs = 1, ssh_options = "ServerAliveInterval 1\n  ServerAliveCountMax 2"}
    inst = fx:connect(1)
  end)
  teardown(function()
    if inst then inst:close() end
    if fx then fx:stop() end
  end)

  it("returns code, signal, stdout, stderr and elapsed", function()
    local r = inst:sh("echo out; echo err >&2; exit 7")
    assert.equal(7, r.code)
    assert.is_nil(r.signal)
    assert.equal("out\n", r.stdout)
    assert.equal("err\n", r.stderr)
    assert.is_true(r.elapsed > 0 and r.elapsed < 5)
    local k = inst:sh("kill -TERM $$")
    assert.equal("TERM", k.signal)
    assert.is_nil(k.code)
  end)

  it("never waits on the socket while output sits in libssh2's buffers (interleaved streams)", function()
    -- Reading stderr can pull the rest of stdout and the EOF into libssh2; a reader
    -- that then waits on the socket hangs until its timeout (seen 2 in 300 before).
    local script = "for i in 1 2 3; do echo out$i; echo err$i >&2; done; df -P -B1 / ; df -P -i / >&2"
    local bad = 0
    for _ = 1, 300 do
      local r = inst:sh(script, {timeout = 5})
      if r.code ~= 0 or not r.stdout:find("out3", 1, true) or not r.stderr:find("err3", 1, true) then bad = bad + 1 end
    end
    assert.equal(0, bad)
  end)

  it("check=true raises with the exit code and the last stderr lines", function()
    local ok, err = pcall(inst.sh, inst, "for i in 1 2 3 4 5 6 7 8 9 10 11 12; do echo line$i >&2; done; exit 3", {check = true})
    assert.is_false(ok)
    local msg = tostring(err)
    assert.matches("exit code 3", msg)
    assert.matches("line12", msg)
    assert.is_nil(msg:find("line1\n", 1, true))   -- only the last lines
    assert.equal(3, err.status)
    assert.equal("command", err.code)
    assert.equal("remote", err.kind)
    assert.equal("0\n", inst:sh("echo 0", {check = true}).stdout)
  end)

  it("a timeout closes that channel, reports it, and the session stays usable", function()
    local t0 = gpurent.now()
    local ok, err = pcall(inst.sh, inst, "sleep 30", {timeout = 0.5})
    assert.is_false(ok)
    assert.matches("timed out after 0.5s", tostring(err))
    assert.equal("timeout", err.code)
    assert.is_true(gpurent.now() - t0 < 3)
    assert.equal("still\n", inst:sh("echo still").stdout)
  end)

  it("a timeout sends TERM to the command's remote process group; kill_on_timeout=false leaves it", function()
    local function alive(pid) return os.execute("kill -0 " .. pid .. " 2>/dev/null") == true end
    local function bg_pid(file)                       -- the remote background child's PID
      for _ = 1, 100 do
        local text = T.read(file)
        if text and text:match("%d+") then return tonumber(text:match("%d+")) end
        require("gpurent.core").sys.sleep(0.02)
      end
    end
    local pidfile = fx.home .. "/bg.pid"
    local ok, err = pcall(inst.sh, inst, "sleep 137 & echo $! > " .. pidfile .. "; wait", {timeout = 0.5})
    assert.is_false(ok)
    assert.equal("timeout", err.code)
    assert.matches("TERM sent to remote process group %d+", tostring(err))
    local pid = bg_pid(pidfile)
    assert.truthy(pid, "the command never started")
    local gone = false
    for _ = 1, 100 do                                 -- bounded: 2 s
      if not alive(pid) then gone = true; break end
      require("gpurent.core").sys.sleep(0.02)
    end
    assert.is_true(gone, "remote sleep " .. pid .. " survived the timeout")
    -- the caller may choose to leave it running
    os.remove(pidfile)
    ok, err = pcall(inst.sh, inst, "sleep 138 & echo $! > " .. pidfile .. "; wait", {timeout = 0.5, kill_on_timeout = false})
    assert.is_false(ok)
    assert.is_nil(tostring(err):find("TERM sent", 1, true))
    pid = bg_pid(pidfile)
    assert.truthy(pid)
    require("gpurent.core").sys.sleep(0.3)
    assert.is_true(alive(pid))
    os.execute("kill " .. pid)                        -- the exact PID this test started
    -- with a timeout, the PID marker never reaches stderr or on_line
    local lines = {}
    local r = inst:sh("echo out; echo err >&2", {timeout = 5, on_line = function(l, st) lines[#lines + 1] = st .. ":" .. l end})
    assert.equal("err\n", r.stderr)
    assert.equal("out\n", r.stdout)
    table.sort(lines)
    assert.same({"stderr:err", "stdout:out"}, lines)
  end)

  it("streams lines of stdout and stderr to on_line as they arrive", function()
    local seen, first_at = {}, nil
    local t0 = gpurent.now()
    local r = inst:sh("echo a; echo b >&2; sleep 1; printf 'c\\nd'", {on_line = function(line, stream)
      seen[#seen + 1] = stream .. ":" .. line
      if line == "a" then first_at = gpurent.now() - t0 end
    end})
    table.sort(seen)
    assert.same({"stderr:b", "stdout:a", "stdout:c", "stdout:d"}, seen)
    assert.is_true(first_at < 0.8, "first line came after " .. tostring(first_at))
    assert.equal("a\nc\nd", r.stdout)
  end)

  it("carries 100 MB of output in linear time", function()
    local t0 = gpurent.now()
    local r = inst:sh("head -c 104857600 /dev/zero", {max_output = "128M"})   -- over the 64 MiB default cap
    assert.equal(104857600, #r.stdout)
    assert.is_true(gpurent.now() - t0 < 30)
    local lines = 0
    inst:sh("seq 1 1000000", {capture = false, on_line = function() lines = lines + 1 end})
    assert.equal(1000000, lines)
  end)

  it("sends stdin, including large stdin while output flows back", function()
    assert.equal("hello", inst:sh("cat", {stdin = "hello"}).stdout)
    local big = string.rep("x", 8 * 1024 * 1024)
    local r = inst:sh("cat", {stdin = big})
    assert.equal(#big, #r.stdout)
  end)

  it("keeps a secret out of the remote argv, the output, errors, print and JSON", function()
    local value = "tok-" .. string.format("%x", math.random(1 << 30)) .. "-zq"
    local s = gpurent.secret(value)
    -- the remote process has it in its environment, and ps shows no trace of it
    local r = inst:sh("echo \"len=${#API_TOKEN}\"; sleep 1 & ps -eo args > /tmp/gr_ps.$$; " ..
      "cat /proc/$$/cmdline | tr '\\0' ' '; echo; cat /tmp/gr_ps.$$; rm -f /tmp/gr_ps.$$",
      {env = {API_TOKEN = s}})
    assert.matches("len=" .. #value, r.stdout)
    assert.is_nil(r.stdout:find(value, 1, true))
    assert.matches("read %-r API_TOKEN", r.stdout)   -- the shell's argv names the variable only
    -- an echoed secret is redacted in returned output
    local e = inst:sh("echo $API_TOKEN", {env = {API_TOKEN = s}})
    assert.equal("***\n", e.stdout)
    -- and it really is the value remotely
    local h = inst:sh("printf %s \"$API_TOKEN\" | sha256sum", {env = {API_TOKEN = s}})
    assert.equal(require("gpurent.util.hash").sha256(value), h.stdout:match("^(%x+)"))
    -- stdin secret
    local c = inst:sh("wc -c", {stdin = s})
    assert.equal(tostring(#value), c.stdout:match("%d+"))
    -- renderings
    assert.equal("***", tostring(s))
    assert.equal("x=***", "x=" .. s)
    assert.equal("***", string.format("%s", s))
    assert.matches('"***"', json.encode_stable({token = s}))
    local ok, err = pcall(inst.sh, inst, "exit 1", {env = {T = s}, check = true})
    assert.is_false(ok)
    assert.is_nil(tostring(err):find(value, 1, true))
    local ok2, err2 = pcall(error, "failed with " .. s)
    assert.is_false(ok2)
    assert.is_nil(tostring(err2):find(value, 1, true))
    -- a recipe printing it and failing with it: stdout/stderr of the process show ***
    local recipe = fx.dir .. "/secret_recipe.lua"
    local f = io.open(recipe, "w")
    f:write("local s = gpurent.secret(" .. string.format("%q", value) .. ")\nprint('token', s)\n" ..
            "io.stderr:write(tostring(s), '\\n')\nerror('bad token ' .. s)\n")
    f:close()
    local code, out, errt = T.run("--verbose run " .. T.q(recipe))
    assert.equal(1, code)
    assert.matches("token%s+%*%*%*", out)
    assert.is_nil((out .. errt):find(value, 1, true))
  end)

  it("reconnects after the connection is killed: idempotent calls re-run, others report", function()
    assert.equal("1\n", inst:sh("echo 1").stdout)
    assert.is_true(fx:kill_connections() > 0)
    local ok, err = pcall(inst.sh, inst, "echo 2")
    assert.is_false(ok)
    assert.matches("not marked idempotent", tostring(err))
    assert.equal("3\n", inst:sh("echo 3").stdout)      -- the next call reconnects
    fx:kill_connections()
    assert.equal("4\n", inst:sh("echo 4", {idempotent = true}).stdout)
    assert.is_true(inst.reconnects >= 2)
  end)

  it("notices a silent dead peer through keepalives (ServerAliveInterval)", function()
    local i2 = fx:connect(1)
    assert.equal("x\n", i2:sh("echo x").stdout)
    local trees = fx:conn_trees()
    local stopped = {}
    for _, t in ipairs(trees) do for _, p in ipairs(t) do os.execute("kill -STOP " .. p); stopped[#stopped + 1] = p end end
    local t0 = gpurent.now()
    local ok, err = pcall(i2.sh, i2, "echo y")
    local took = gpurent.now() - t0
    for _, p in ipairs(stopped) do os.execute("kill -CONT " .. p) end
    assert.is_false(ok)
    assert.matches("keepalive", tostring(err))
    assert.is_true(took < 6, "took " .. took)
    i2:close()
    inst:close()
    inst = fx:connect(1)
  end)
end)
