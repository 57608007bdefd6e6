-- bench/tunnel_bench.lua: the measurements behind bench/tunnel_bench.sh.
local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."
package.path = here .. "/?.lua;" .. here .. "/../tests/helpers/?.lua;" .. package.path
local sshd = require "sshd"
local relay = require "relay"
local BIN = arg[1] or "./gpurent"
local RTT = tonumber(os.getenv("TUNNEL_RTT_MS") or "50")
local MIB = tonumber(os.getenv("TUNNEL_MIB") or "64")
local REPS = tonumber(os.getenv("TUNNEL_REPS") or "1")
local PY = io.open("/usr/bin/python3") and "/usr/bin/python3" or "python3"

local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end
local function read(p) local f = io.open(p); if not f then return nil end local s = f:read("a"); f:close(); return s end
local function write(p, s) local f = assert(io.open(p, "w")); f:write(s); f:close() end
local function sh(cmd) assert(os.execute(cmd), "bench: failed: " .. cmd) end

-- The box-side service: "GET N\n" -> N bytes then close; "PUT N\n" + N bytes -> "OK\n".
local SERVER = [[
import socket, socketserver, sys
BLOCK = bytes(range(256)) * 1024
class H(socketserver.BaseRequestHandler):
    def handle(self):
        s = self.request
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        line = b""
        while not line.endswith(b"\n"):
            d = s.recv(1)
            if not d: return
            line += d
        verb, n = line.split()
        n = int(n)
        if verb == b"GET":
            left = n
            while left > 0:
                left -= s.send(BLOCK[:min(left, len(BLOCK))])
        else:
            left = n
            while left > 0:
                d = s.recv(min(left, 1 << 20))
                if not d: return
                left -= len(d)
            s.sendall(b"OK\n")
class S(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64
srv = S(("127.0.0.1", 0), H)
print(srv.server_address[1], flush=True)
srv.serve_forever()
]]

-- The client: MODE get|put|rtt PORT N -> seconds (rtt: median of 20 GET 1).
local CLIENT = [[
import socket, sys, time, statistics
mode, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def one(verb, n):
    t0 = time.monotonic()
    s = socket.create_connection(("127.0.0.1", port), timeout=120)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if verb == "GET":
        s.sendall(b"GET %d\n" % n)
        got = 0
        while True:
            d = s.recv(1 << 20)
            if not d: break
            got += len(d)
        if got != n: sys.exit("short read: %d of %d" % (got, n))
    else:
        s.sendall(b"PUT %d\n" % n)
        block = b"\x5a" * (1 << 20)
        left = n
        while left > 0:
            k = min(left, len(block)); s.sendall(block[:k]); left -= k
        if s.recv(16) != b"OK\n": sys.exit("no OK")
    s.close()
    return time.monotonic() - t0
if mode == "get": print(one("GET", n))
elif mode == "put": print(one("PUT", n))
else: print(statistics.median(one("GET", 1) for _ in range(20)))
]]

local fx = sshd.start{addrs = 1}
local work = fx.dir .. "/tunnelbench"
sh("mkdir -p " .. q(work))
local pids = {}       -- every process this bench started, killed by its exact PID

local function spawn(name, cmd)
  -- sh -c 'echo $$; exec CMD': the recorded PID is CMD's own
  local out, err, pidf = work .. "/" .. name .. ".out", work .. "/" .. name .. ".err", work .. "/" .. name .. ".pid"
  sh(string.format("sh -c %s >%s 2>%s </dev/null &", q("echo $$ >" .. q(pidf) .. "; exec " .. cmd), q(out), q(err)))
  local pid
  for _ = 1, 200 do
    pid = tonumber(read(pidf) or "")
    if pid then break end
    gpurent.sleep(0.02)
  end
  assert(pid, name .. " did not start")
  pids[#pids + 1] = pid
  return pid, out, err
end
local function wait_for(what, fn, seconds)
  local deadline = gpurent.now() + (seconds or 15)
  while gpurent.now() < deadline do
    local v = fn()
    if v then return v end
    gpurent.sleep(0.05)
  end
  error(what .. " did not come up")
end
local function free_port()
  local p = io.popen(PY .. " -c 'import socket; s=socket.socket(); s.bind((\"127.0.0.1\", 0)); print(s.getsockname()[1])'")
  local port = tonumber(p:read("a"):match("%d+")); p:close()
  return port
end
local function client(mode, port, n)
  local p = io.popen(string.format("%s %s %s %d %d 2>&1", PY, q(work .. "/client.py"), mode, port, n))
  local s = p:read("a")
  local okc = p:close()
  local t = tonumber(s:match("^%s*([%d.e-]+)%s*$"))
  if not okc or not t then return nil, s end
  return t
end

local link
local ok, err = xpcall(function()
  write(work .. "/server.py", SERVER)
  write(work .. "/client.py", CLIENT)
  local _, sout, serr = spawn("server", PY .. " " .. q(work .. "/server.py"))
  local dport = wait_for("the data server", function() return tonumber((read(sout) or ""):match("^(%d+)\n")) end)
  link = relay.start(fx, RTT)                       -- ssh_config h1 via the emulated link
  local cfg = link.config
  local _ = serr

  -- the link alone: the relay straight to the data server (TCP, no SSH)
  local _, rout = spawn("rawrelay", string.format("%s --rtt-ms %s --target 127.0.0.1:%d",
    q(relay.bin()), tostring(RTT), dport))
  local raw_port = wait_for("the raw relay", function() return tonumber((read(rout) or ""):match("^(%d+)\n")) end)

  -- gpurent tunnel h1 0:DPORT
  local _, gout, gerr = spawn("gpurent", string.format("env GPURENT_SSH_CONFIG=%s %s tunnel h1 0:%d", q(cfg), q(BIN), dport))
  local gport = tonumber(wait_for("gpurent tunnel", function()
    local e = read(gerr) or ""
    if e:match("gpurent: ") then error("gpurent tunnel: " .. e) end
    return (read(gout) or ""):match("^http://127%.0%.0%.1:(%d+) ")
  end, 30))

  -- ssh -L LPORT:127.0.0.1:DPORT h1
  local lport = free_port()
  spawn("ssh", string.format("ssh -F %s -N -o ExitOnForwardFailure=yes -L %d:127.0.0.1:%d h1", q(cfg), lport, dport))
  wait_for("ssh -L", function() return sshd.accepts("127.0.0.1", lport) end, 30)

  local n = math.floor(MIB * 1048576)
  local rows = {}
  local order = {{"gpurent tunnel", gport}, {"ssh -L", lport}, {"raw TCP (link only)", raw_port}}
  io.stderr:write(string.format("tunnel bench: %g MiB per connection at RTT %g ms, best of %d\n", MIB, RTT, REPS))
  for _, row in ipairs(order) do
    local name, port = row[1], row[2]
    local r = {name = name}
    for _, mode in ipairs({"get", "put", "rtt"}) do
      local best, why
      for _ = 1, REPS do
        local t, e = client(mode, port, n)
        if t and (not best or t < best) then best = t end
        why = why or e
      end
      r[mode] = best
      r[mode .. "_err"] = not best and why or nil
      io.stderr:write(string.format("  %-20s %-3s %s\n", name, mode, best and string.format("%.3f s", best) or ("failed: " .. tostring(why))))
    end
    rows[#rows + 1] = r
  end

  local function rate(t) return t and string.format("%.1f MiB/s", MIB / t) or "n/a" end
  local function bps(t) return t and string.format("%.0f", n / t) or "n/a" end
  print(string.format("Tunnel: one connection of %g MiB each way, RTT %g ms (bench/relay.c), best of %d", MIB, RTT, REPS))
  print(string.format("  %-20s %14s %14s %14s %14s %12s", "path", "down B/s", "down", "up B/s", "up", "1-byte req"))
  for _, r in ipairs(rows) do
    print(string.format("  %-20s %14s %14s %14s %14s %12s", r.name, bps(r.get), rate(r.get), bps(r.put), rate(r.put),
      r.rtt and string.format("%.0f ms", r.rtt * 1000) or "n/a"))
  end
  local g, s = rows[1], rows[2]
  local function ratio(a, b) return (a and b) and string.format("%.2fx", b / a) or "n/a" end
  print(string.format("  gpurent tunnel vs ssh -L: down %s, up %s, 1-byte request %s (time ratio; > 1: gpurent faster)",
    ratio(g.get, s.get), ratio(g.put, s.put), ratio(g.rtt, s.rtt)))
  for _, r in ipairs(rows) do
    for _, m in ipairs({"get", "put", "rtt"}) do
      if r[m .. "_err"] then print("  " .. r.name .. " " .. m .. ": " .. r[m .. "_err"]:sub(1, 160)) end
    end
  end
end, debug.traceback)
for i = #pids, 1, -1 do os.execute("kill " .. pids[i] .. " 2>/dev/null") end
if link then link:stop() end
fx:stop()
if not ok then io.stderr:write(tostring(err), "\n"); os.exit(1) end
