-- cli_verbs_spec: the verbs people reach for first (issue 17), against the simulated
-- AutoDL's real sshd: `gpurent exec HOST -- CMD` (streams, exits with the remote
-- command's code, TERMs it on --timeout), `gpurent ssh HOST` (an interactive shell
-- with a PTY through OpenSSH and the same ssh_config and known_hosts: a host whose
-- key is unknown is refused by both verbs), and `gpurent logs RUN [-f]`.
local testbed = require "testbed"
local tty = require "tty"

local ok_tb, why = testbed.available()

describe("gpurent exec, ssh and logs", function()
  if not ok_tb then pending("testbed unavailable: " .. why); return end
  local tb
  setup(function()
    tb = testbed.new()
    tb:up("v1", "--region westDC2 --data-size 256M")
  end)
  teardown(function() if tb then tb:down() end end)

  it("exec streams stdout and stderr apart and exits with the remote command's code", function()
    -- through a pipe stdout is byte for byte (no newline added to the last line)
    local errf = tb.dir .. "/exec.err"
    local p = io.popen("bash -c " .. T.q(tb:env() .. " " .. T.q(T.bin) ..
      " exec v1 -- 'echo out; echo err >&2; printf partial; exit 7' 2>" .. T.q(errf) ..
      " </dev/null | cat; echo \"rc=${PIPESTATUS[0]}\""))
    local all = p:read("a")
    p:close()
    local out, rc = all:match("^(.*)rc=(%d+)\n$")
    local code, err = tonumber(rc), T.read(errf)
    assert.are.equal(7, code, err)
    assert.are.equal("out\npartial", out)
    assert.are.equal("err\n", err)
    -- into a file (stdout redirected), line by line
    code, out, err = tb:gpurent("exec v1 -- 'echo out; echo err >&2; exit 7'")
    assert.are.equal(7, code, err)
    assert.are.equal("out\n", out)
    assert.are.equal("err\n", err)
    code, out = tb:gpurent("exec v1 -- uname -s")
    assert.are.equal(0, code)
    assert.are.equal("Linux\n", out)
  end)

  it("exec streams: the first line arrives while the command still runs", function()
    local h = tb:spawn("exec v1 -- 'echo first; sleep 4; echo second'")
    assert.truthy(h:wait_for("first", 3), "the first line was held back: " .. h:output())
    assert.falsy(h:output():find("second", 1, true))
    assert.are.equal(0, h:wait(20))
    assert.matches("first\nsecond\n", h:output())
  end)

  it("exec sends stdin, reports a signal as 128+N and a timeout as 124, and refuses bad usage", function()
    local input = tb.dir .. "/input"
    T.write(input, "line one\nline two\n")
    local code, out = T.run("exec v1 -- wc -l", {env = tb:env(), stdin = input})
    assert.are.equal(0, code)
    assert.matches("^%s*2\n$", out)
    code = tb:gpurent("exec v1 -- 'kill -TERM $$'")
    assert.are.equal(128 + 15, code)
    local t0 = os.time()
    local err
    code, _, err = tb:gpurent("exec v1 --timeout 1 -- 'sleep 30'")
    assert.are.equal(124, code, err)
    assert.matches("timed out after 1s", err)
    assert.truthy(os.time() - t0 < 15)
    local left = tb:exec("v1", "pgrep -f '[s]leep 30' || true")
    assert.are.equal("", left:gsub("%s", ""), "the timed-out command still runs on the box")
    code, _, err = tb:gpurent("exec v1 ls")
    assert.are.equal(2, code)
    assert.matches("put the command after %-%-: gpurent exec v1 %-%- ls", err)
    code, _, err = tb:gpurent("exec v1 --timeout soon -- true")
    assert.are.equal(2, code)
    assert.matches('%-%-timeout "soon"', err)
  end)

  it("exec returns 255 when the host cannot be reached, like ssh", function()
    local code, out, err = tb:gpurent("exec box.internal.invalid -- true")
    assert.are.equal(255, code)
    assert.are.equal("", out)
    assert.matches("^gpurent: exec box%.internal%.invalid: ", err)
    assert.not_matches("%.lua:%d+:", err)
  end)

  it("ssh opens an interactive shell with a PTY through OpenSSH and gpurent's ssh_config", function()
    local term = tty.start("sh -c " .. T.q(T.q(T.bin) .. " ssh v1; echo \"ssh-exit=$?\"; sleep 30"),
      {env = tb:env()})
    local ok, err = pcall(function()
      term:wait_for("#", 20, true)
      term:line("tty; echo MARK-$((6*7)); exit 5")
      local screen = term:wait_for("ssh%-exit=%d+", 20)
      assert.matches("/dev/pts/%d+", screen)
      assert.matches("MARK%-42", screen)
      assert.matches("ssh%-exit=5", screen)
    end)
    term:close()
    assert(ok, err)
  end)

  it("ssh and exec both refuse a host whose key is not in known_hosts", function()
    -- the same alias, with a known_hosts file that does not hold the box's key
    local cfg = T.read(tb.dir .. "/ssh_config"):gsub("UserKnownHostsFile %S+", "UserKnownHostsFile " .. tb.dir .. "/empty_known_hosts")
    T.write(tb.dir .. "/empty_known_hosts", "")
    T.write(tb.dir .. "/strict_config", cfg)
    local env = tb:env("GPURENT_SSH_CONFIG=" .. T.q(tb.dir .. "/strict_config"))
    local code, out, err = T.run("ssh v1 -- echo reached", {env = env})
    assert.are.equal(255, code, out .. err)
    assert.falsy(out:find("reached", 1, true))
    assert.matches("[Hh]ost key", err)
    code, out, err = T.run("exec v1 -- echo reached", {env = env})
    assert.are.equal(3, code, out .. err)
    assert.falsy(out:find("reached", 1, true))
  end)

  it("logs prints a run's log from the box and -f follows it until the run is DONE", function()
    local pulled = tb.dir .. "/pulled"
    local h = tb:spawn(testbed.train_args("v1", {local_dir = pulled, steps = 20, step_seconds = 0.2}))
    local id = h:wait_for("%[run%] run (%S+):", 30)
    assert.truthy(id, h:output())
    assert.truthy(h:wait_for("%[launch%]", 60), h:output())
    local code, out, err = tb:gpurent("logs " .. id .. " -f")
    assert.are.equal(0, code, out .. err)
    assert.matches("step 1/20", out)
    assert.matches("training finished: 20 steps", out)
    assert.matches("%[logs%] run " .. id:gsub("%p", "%%%0") .. " attempt 1 ended DONE", err)
    assert.are.equal(0, h:wait(120), h:output())
    code, out = tb:gpurent("logs " .. id .. " -n 3")
    assert.are.equal(0, code)
    local _, lines = out:gsub("\n", "")
    assert.are.equal(3, lines, out)
    code, out = tb:gpurent("logs " .. id)
    assert.are.equal(0, code)
    assert.matches("step 20/20", out)
    -- watch --json: stdout is one JSON document, the progress lines go to stderr
    code, out, err = tb:gpurent("watch " .. id .. " --once --json")
    assert.are.equal(0, code, err)
    local doc = require("gpurent.util.json").decode(out, "watch --json")
    assert.are.equal(id, doc.run)
    assert.are.equal("finished", doc.state)
    assert.are.equal(0, doc.exit_code)
    assert.matches("%[watch%]", err)
    code, _, err = tb:gpurent("logs no-such-run")
    assert.are.equal(2, code)
    assert.matches("no run no%-such%-run", err)
  end)
end)
