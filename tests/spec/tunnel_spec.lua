-- tunnel_spec: local port forwarding (inst:forward, `gpurent tunnel`) against a real
-- sshd. The box-side service is a small threaded HTTP server (Python stdlib) on
-- 127.0.0.1 (the fixture's sshd shares the host's network, so the direct-tcpip
-- channel reaches it there). Clients are scheduler tasks speaking HTTP/1.0 to the
-- tunnel's local port: 50 at once, every body compared byte for byte; then the
-- ssh connection is killed under the tunnel and the next request must work. The
-- CLI prints the URL and exits 130 on Ctrl-C; usage errors exit 2.
local sshd = require "sshd"
local core = require "gpurent.core"
local sched = require "gpurent.transport.sched"

local cssh, now, sleep = core.ssh, core.sys.now, core.sys.sleep
local q = T.q

local PY = (io.open("/usr/bin/python3") and "/usr/bin/python3") or "python3"

-- A threaded HTTP/1.0 file server with a deep accept queue; prints its port.
local SERVER = [[
import http.server, socketserver, sys, os
os.chdir(sys.argv[1])
class H(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *a): pass
class S(http.server.ThreadingHTTPServer):
    request_queue_size = 256
    daemon_threads = True
s = S(("127.0.0.1", 0), H)
print(s.server_address[1], flush=True)
s.serve_forever()
]]

local function start_server(dir)
  T.write(dir .. "/server.py", SERVER)
  local portfile = dir .. "/port"
  local p = io.popen(string.format("%s %s %s >%s 2>%s & echo $!", PY, q(dir .. "/server.py"), q(dir .. "/www"),
    q(portfile), q(dir .. "/server.log")))
  local pid = tonumber(p:read("l"))
  p:close()
  for _ = 1, 100 do
    local port = tonumber((T.read(portfile) or ""):match("%d+"))
    if port and sshd.accepts("127.0.0.1", port) then return pid, port end
    sleep(0.05)
  end
  os.execute("kill " .. pid)
  error("HTTP server did not start: " .. (T.read(dir .. "/server.log") or ""))
end

-- Deterministic bytes of every value 0-255: a pseudo-random block of a prime length,
-- rotated by k and repeated, so a byte out of place anywhere is a difference.
local BASE
local function blob(n, k)
  if not BASE then
    local parts, x = {}, 1
    for i = 1, 65521 do
      x = (x * 1103515245 + 12345) % 2147483648
      parts[i] = string.char((x >> 16) % 256)
    end
    BASE = table.concat(parts)
  end
  local r = k % #BASE + 1
  local block = BASE:sub(r) .. BASE:sub(1, r - 1)
  return string.rep(block, n // #block + 1):sub(1, n)
end

-- One HTTP/1.0 GET through 127.0.0.1:port from a task; -> status, body.
-- slow: read in small bites with pauses, so the tunnel's local writes fill the socket.
local function get(port, path, deadline, slow)
  deadline = deadline or now() + 30
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
    for _ = 1, 100000 do
      if slow then sched.sleep(0.002) end
      local d, why = cssh.sock_read(fd, slow and 16384 or 65536)
      assert(d ~= nil, why)
      if d == "" then break end
      if d then parts[#parts + 1] = d
      else assert(sched.wait(fd, 1, deadline) ~= 0, "read timed out") end
    end
    return table.concat(parts)
  end)
  cssh.close_fd(fd)
  if not ok then error(res, 0) end
  local head, body = res:match("^(.-)\r\n\r\n(.*)$")
  return tonumber((head or ""):match("^HTTP/1%.%d (%d+)")), body
end

describe("tunnel", function()
  local fx, dir, pid, port, files

  setup(function()
    dir = T.tmpdir()
    os.execute("mkdir -p " .. q(dir .. "/www"))
    files = {}
    for i = 1, 50 do
      -- sizes from tiny to past the channel window (4 MiB) for a few
      -- and two of 16 MiB, more than loopback's socket buffers hold for a slow reader
      local size = (i % 25 == 0) and (16 * 1024 * 1024 + i) or (i % 10 == 0) and (5 * 1024 * 1024 + i)
        or (i * 997 % 300000 + i)
      files[i] = blob(size, i)
      T.write(dir .. "/www/f" .. i, files[i])
    end
    pid, port = start_server(dir)
    fx = sshd.start{addrs = 1, log_level = "DEBUG"}   -- DEBUG: sshd logs each channel's window
  end)

  teardown(function()
    if fx then fx:stop() end
    if pid then os.execute("kill " .. pid .. " 2>/dev/null") end
    T.rmtree(dir)
  end)

  it("carries 50 concurrent HTTP requests byte-exact and survives a killed connection", function()
    local inst = fx:connect(1)
    local logs = {}
    local fwd = inst:forward(port, {local_port = 0, log = function(m) logs[#logs + 1] = m end})
    assert.matches("^http://127%.0%.0%.1:%d+$", fwd.url)
    local ok, err = pcall(function()
      local items = {}
      for i = 1, 50 do items[i] = i end
      local t0 = now()
      local res = sched.parallel(items, function(i)
        local status, body = get(fwd.local_port, "/f" .. i, nil, i % 25 == 0)
        assert.are.equal(200, status)
        assert.is_true(body == files[i], "body of f" .. i .. " differs (" .. #body .. " vs " .. #files[i] .. " bytes)")
        return #body
      end, {limit = 50})
      local total = 0
      for i = 1, 50 do
        assert.is_true(res[i].ok, tostring(res[i].error))
        total = total + res[i].value
      end
      assert.is_true(now() - t0 < 60)
      assert.are.equal(50, fwd:stats().connections)
      -- each channel offers the box a 4 MiB window (libssh2's default 2 MiB held the
      -- box-to-laptop direction to 0.8x of ssh -L at 50 ms; bench/tunnel_bench.sh)
      local windows = {}
      for w in T.read(fx.dir .. "/sshd.log"):gmatch("ctype direct%-tcpip rchan %d+ win (%d+)") do windows[w] = true end
      assert.are.same({["4194304"] = true}, windows)
      -- the slow readers made local writes wait (the SSH window held the box back)
      assert.is_true(fwd:stats().backlogged > 0, "no local write ever had to wait")

      -- every connection ends in the tunnel too (channels closed, local sockets shut)
      fwd:serve(1)
      assert.are.equal(0, fwd:stats().active)
      assert.are.equal(0, fwd:stats().reconnects)
      -- kill the ssh connection under the idle tunnel: the next request notices the
      -- dead session when it opens its channel, reconnects and is served
      assert.is_true(fx:kill_connections() > 0)
      sleep(0.2)
      local r2 = sched.parallel({1, 2, 3}, function(i)
        local status, body = get(fwd.local_port, "/f" .. i)
        assert.are.equal(200, status)
        assert.is_true(body == files[i], "after reconnect: body of f" .. i .. " differs")
        return true
      end, {limit = 3})
      for i = 1, 3 do assert.is_true(r2[i].ok, tostring(r2[i].error)) end
      assert.are.equal(1, fwd:stats().reconnects, table.concat(logs, "\n"))

      -- a port where nothing listens on the box: that connection ends, the tunnel stays
      local closed = inst:forward(1, {local_port = 0})
      local bad = sched.parallel({1}, function() return (get(closed.local_port, "/f1", now() + 10)) end)
      assert.is_true(not bad[1].ok or bad[1].value == nil, "a refused remote port answered")
      assert.are.equal(1, closed:stats().refused)
      closed:close()
      local again = sched.parallel({5}, function(i) local s, b = get(fwd.local_port, "/f" .. i); return s == 200 and b == files[i] end)
      assert.is_true(again[1].ok and again[1].value, tostring(again[1].error))
    end)
    fwd:close()
    inst:close()
    assert.is_true(fwd.closed)
    assert.is_false(sshd.accepts("127.0.0.1", fwd.local_port))
    if not ok then error(err, 0) end
  end)

  it("`gpurent tunnel` prints the local URL, serves, and exits 130 on Ctrl-C", function()
    local out, errf, rcf = dir .. "/cli.out", dir .. "/cli.err", dir .. "/cli.rc"
    local pidf = dir .. "/cli.pid"
    os.remove(rcf)
    -- the child's SIGINT disposition is restored (a background job of sh ignores it)
    os.execute(string.format("( trap - INT; %s sh -c 'echo $$ >%s; exec %s tunnel %s 0:%d' >%s 2>%s </dev/null; echo $? >%s ) &",
      fx:env(), q(pidf), q(T.bin), fx.aliases[1], port, q(out), q(errf), q(rcf)))
    local url
    for _ = 1, 200 do
      url = (T.read(out) or ""):match("(http://127%.0%.0%.1:%d+)")
      if url then break end
      sleep(0.05)
    end
    assert.is_truthy(url, "no URL printed: " .. (T.read(out) or "") .. (T.read(errf) or ""))
    local cli_pid = tonumber(T.read(pidf))
    local p = io.popen("curl -s --noproxy '*' --max-time 10 " .. q(url .. "/f3"))
    local body = p:read("a")
    p:close()
    assert.is_true(body == files[3], "curl through `gpurent tunnel` differs: " .. #body .. " bytes")
    os.execute("kill -INT " .. cli_pid)
    local rc
    for _ = 1, 200 do
      rc = tonumber(T.read(rcf) or "")
      if rc then break end
      sleep(0.05)
    end
    if not rc then os.execute("kill -KILL " .. cli_pid .. " 2>/dev/null") end
    assert.are.equal(130, rc, (T.read(errf) or ""))
    assert.is_false(sshd.accepts("127.0.0.1", tonumber(url:match("(%d+)$"))))
  end)

  it("`gpurent tunnel` usage errors exit 2", function()
    for _, args in ipairs({"tunnel", "tunnel h1", "tunnel h1 abc", "tunnel h1 70000", "tunnel h1 5:0",
      "tunnel h1 1:2:3"}) do
      local code, _, err = T.run(args, {env = fx:env()})
      assert.are.equal(2, code, args .. ": " .. err)
      assert.matches("usage: gpurent tunnel", err, 1, true)
    end
  end)
end)
