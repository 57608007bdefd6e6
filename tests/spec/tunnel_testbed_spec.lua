-- tunnel_testbed_spec: the pinned-TensorBoard path of issue 16 on the simulated AutoDL
-- testbed. The box runs the testbed's TensorBoard stand-in (autodl-sim up
-- --tensorboard-port P: tests/sim/image/tensorboard, /data/runs lists the runs under
-- /root/tf-logs, reloaded every --tensorboard-reload s, never evicting). Boxes share
-- the host's network, so each stand-in gets its own free port P, and the profile
-- handed to the AD7 probe carries it (network.tensorboard.port).
--   * `gpurent tunnel a1 0:P` and inst:forward(P): curl / GET through the tunnel
--     return /data/runs, the same answer curl gives on the box;
--   * AD7: ok when every run is listed, warn on a dangling symlink in /root/tf-logs
--     and on a TensorBoard that does not pick a run up (never reloads), ok with a
--     note when nothing answers on the port.
local simbox = require "simbox"
local gotchas = require "gpurent.gotchas"
local json = require "gpurent.util.json"
local core = require "gpurent.core"
local sched = require "gpurent.transport.sched"

local cssh, now, sleep = core.ssh, core.sys.now, core.sys.sleep
local q = T.q

local function free_port()
  local p = io.popen("/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind((\"127.0.0.1\", 0)); " ..
    "print(s.getsockname()[1])'")
  local port = tonumber(p:read("a"):match("%d+"))
  p:close()
  return port
end

local function deepcopy(t)
  if type(t) ~= "table" then return t end
  local c = {}
  for k, v in pairs(t) do c[k] = deepcopy(v) end
  return setmetatable(c, getmetatable(t))
end

-- One HTTP/1.0 GET to 127.0.0.1:port from a scheduler task; -> status, body.
local function get(port, path)
  local deadline = now() + 20
  local fd = cssh.tcp_connect("127.0.0.1", port)
  local ok, res = pcall(function()
    assert(sched.wait(fd, 2, deadline) ~= 0, "connect timed out")
    assert(cssh.connect_result(fd))
    local req, from = "GET " .. path .. " HTTP/1.0\r\nHost: x\r\n\r\n", 1
    while from <= #req do
      local n = cssh.sock_write(fd, req, from)
      if n then from = from + n else assert(sched.wait(fd, 2, deadline) ~= 0, "write timed out") end
    end
    local parts = {}
    while true do
      local d, why = cssh.sock_read(fd, 65536)
      assert(d ~= nil, why)
      if d == "" then break end
      if d then parts[#parts + 1] = d else assert(sched.wait(fd, 1, deadline) ~= 0, "read timed out") end
    end
    return table.concat(parts)
  end)
  cssh.close_fd(fd)
  if not ok then error(res, 0) end
  local head, body = res:match("^(.-)\r\n\r\n(.*)$")
  return tonumber((head or ""):match("^HTTP/1%.%d (%d+)")), body
end

local ok_sim, why = simbox.available()
local desc = ok_sim and describe or function(name) describe(name, function() pending(why) end) end

desc("the pinned TensorBoard on the testbed", function()
  local box, a1, b1, port, stuck_port, prof

  local function sh(inst, cmd)
    local r = inst:sh(cmd, {timeout = 60})
    assert.are.equal(0, r.code, cmd .. ": " .. r.stderr)
    return r.stdout
  end
  local function ad7(inst, p)
    local r = gotchas.run(inst, {only = {"AD7"}, profile = p or prof})[1]
    assert.are.equal("AD7", r.id)
    return r
  end
  local function flagged(r, status, pattern)
    assert.are.equal(status, r.status, r.evidence)
    if pattern then assert.matches(pattern, r.evidence) end
  end
  local function profile_for(p)
    local c = deepcopy(prof)
    c.network.tensorboard.port = p
    return c
  end

  setup(function()
    box = simbox.new()
    port, stuck_port = free_port(), free_port()
    a1 = box:up("a1", "--region rT --data-size 32M --fs-size 16M --tensorboard-port " .. port ..
      " --tensorboard-reload 0.2")
    -- a TensorBoard that loads once at boot and never again (a wedged loader)
    b1 = box:up("b1", "--region rT --data-size 32M --tensorboard-port " .. stuck_port ..
      " --tensorboard-reload 3600")
    prof = deepcopy(a1.profile)
    prof.network.tensorboard.port = port
    prof.network.tensorboard.reload_s = 0.2
  end)
  teardown(function()
    if box then
      box:down()
      -- nothing the boxes started outlives them: the stand-ins' ports are free again
      assert.is_false(require("sshd").accepts("127.0.0.1", port))
      assert.is_false(require("sshd").accepts("127.0.0.1", stuck_port))
    end
  end)

  it("serves /data/runs on the box, and through `gpurent tunnel` and inst:forward", function()
    sh(a1, "mkdir -p /root/tf-logs/run1 /root/tf-logs/empty && : > /root/tf-logs/run1/events.out.tfevents.1.box")
    sleep(0.5)
    assert.are.equal('["run1"]', sh(a1, "curl -s --noproxy '*' --max-time 5 http://127.0.0.1:" .. port .. "/data/runs"))
    assert.is_truthy(box:info("a1").tensorboard_url:match(":" .. port .. "$"))

    -- the CLI: prints the local URL, curl through it, Ctrl-C ends it (130)
    local dir = T.tmpdir()
    local out, errf, rcf, pidf = dir .. "/out", dir .. "/err", dir .. "/rc", dir .. "/pid"
    os.execute(string.format("( trap - INT; %s sh -c 'echo $$ >%s; exec %s tunnel a1 0:%d' >%s 2>%s </dev/null; " ..
      "echo $? >%s ) &", box:env(), q(pidf), q(T.bin), port, q(out), q(errf), q(rcf)))
    local url
    for _ = 1, 300 do
      url = (T.read(out) or ""):match("(http://127%.0%.0%.1:%d+) %-> a1 127%.0%.0%.1:" .. port)
      if url then break end
      sleep(0.05)
    end
    local cli_pid = tonumber(T.read(pidf) or "")
    local ok, err = pcall(function()
      assert.is_truthy(url, "no URL printed: " .. (T.read(out) or "") .. (T.read(errf) or ""))
      local p = io.popen("curl -s --noproxy '*' --max-time 10 " .. q(url .. "/data/runs"))
      local body = p:read("a")
      p:close()
      assert.are.equal('["run1"]', body)
    end)
    if cli_pid then os.execute("kill -INT " .. cli_pid .. " 2>/dev/null") end
    local rc
    for _ = 1, 200 do
      rc = tonumber(T.read(rcf) or "")
      if rc then break end
      sleep(0.05)
    end
    if not rc and cli_pid then os.execute("kill -KILL " .. cli_pid .. " 2>/dev/null") end
    T.rmtree(dir)
    if not ok then error(err, 0) end
    assert.are.equal(130, rc, T.read(errf) or "")

    -- Lua: inst:forward, a GET from a task
    local fwd = a1:forward(port, {local_port = 0})
    local res = sched.parallel({"/data/runs", "/data/logdir"}, function(path) return {get(fwd.local_port, path)} end)
    fwd:close()
    assert.is_true(res[1].ok, tostring(res[1].error))
    assert.are.same({200, '["run1"]'}, res[1].value)
    assert.are.same({logdir = "/root/tf-logs"}, json.decode(res[2].value[2]))
  end)

  it("AD7 passes when the pinned TensorBoard lists every run, warns on a dangling link, passes once fixed", function()
    sh(a1, "mkdir -p /root/tf-logs/run1 && : > /root/tf-logs/run1/events.out.tfevents.1.box")
    sleep(0.5)
    flagged(ad7(a1), "ok", "lists 1 run%(s%)")

    -- a symlink to a run that moved away: TensorBoard shows nothing for it
    sh(a1, "mkdir -p /root/autodl-tmp/exp2/tb && : > /root/autodl-tmp/exp2/tb/events.out.tfevents.2.box && " ..
      "ln -sfn /root/autodl-tmp/exp2/tb-old /root/tf-logs/exp2")
    local r = ad7(a1)
    flagged(r, "warn", "1 run%(s%) in /root/tf%-logs missing from the pinned TensorBoard's /data/runs on 127%.0%.0%.1:" ..
      port)
    assert.matches("exp2 %(dangling symlink %-> /root/autodl%-tmp/exp2/tb%-old%)", r.evidence)
    assert.matches("ln %-sfn <existing dir> /root/tf%-logs/<run>", r.evidence)
    -- (the event file outside the logdir is AD7's other half)
    assert.matches("event file%(s%) outside /root/tf%-logs", r.evidence)

    -- the fix: link the existing dir; the next reload lists it
    sh(a1, "ln -sfn /root/autodl-tmp/exp2/tb /root/tf-logs/exp2")
    sleep(0.5)
    r = ad7(a1)
    flagged(r, "ok", "lists 2 run%(s%)")
    assert.are.equal('["exp2", "run1"]', sh(a1, "curl -s --noproxy '*' http://127.0.0.1:" .. port .. "/data/runs"))

    -- a deleted run stays listed (stale tags) until the server restarts: said, not warned
    sh(a1, "rm -rf /root/tf-logs/run1")
    sleep(0.5)
    flagged(ad7(a1), "ok", "1 of them gone from /root/tf%-logs %(stale until it restarts%): run1")
  end)

  it("AD7 warns when a run stays missing across a reload (a TensorBoard that never reloads)", function()
    sh(b1, "mkdir -p /root/tf-logs/late && : > /root/tf-logs/late/events.out.tfevents.3.box")
    local r = ad7(b1, profile_for(stuck_port))
    flagged(r, "warn", "1 run%(s%) in /root/tf%-logs missing from the pinned TensorBoard's /data/runs on 127%.0%.0%.1:" ..
      stuck_port .. " %(it lists 0%): late")
    assert.matches("needs the pinned TensorBoard restarted", r.evidence)
    -- a power cycle restarts it (the image autostarts it at boot): the run is listed
    local code, outp = box:sim("poweroff b1")
    assert.are.equal(0, code, outp)
    assert.is_false(require("sshd").accepts("127.0.0.1", stuck_port), "the stand-in outlived its box")
    code, outp = box:sim("poweron b1")
    assert.are.equal(0, code, outp)
    b1:close()
    flagged(ad7(b1, profile_for(stuck_port)), "ok", "lists 1 run%(s%)")
  end)

  it("AD7 only notes it when nothing answers on the port", function()
    local r = ad7(a1, profile_for(free_port()))
    flagged(r, "ok", "note: nothing answers on 127%.0%.0%.1:%d+/data/runs %(curl exit 7%)")
  end)

  it("a second box cannot take a port another box's TensorBoard holds", function()
    local code, out = box:sim("up c1 --region rT --tensorboard-port " .. port)
    assert.are.equal(1, code)
    assert.matches("127%.0%.0%.1:" .. port .. " is already taken", out)
  end)
end)
