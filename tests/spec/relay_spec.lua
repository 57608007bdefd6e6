-- relay_spec: the emulated long link the benches and the transfer specs rely on
-- (bench/relay.c, the binary bench/relay.lua finds): each direction is delayed by
-- RTT/2 and its EOF crosses after the same delay, --count's file holds the bytes
-- delivered both ways, --rate-mibps paces a direction, SIGTERM exits 0, and a target
-- off loopback is refused by name. Plain TCP through core.ssh's sockets; a few seconds.
package.path = T.root .. "/bench/?.lua;" .. package.path
local relay = require "relay"
local net = require("gpurent.core").ssh

local function sh(cmd) assert(os.execute(cmd), cmd) end
local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

-- poll(fn, what): fn() until it returns a value (bounded: 10 s)
local function poll(fn, what)
  local deadline = gpurent.now() + 10
  while gpurent.now() < deadline do
    local v = fn()
    if v ~= nil and v ~= false then return v end
    gpurent.sleep(0.001)
  end
  error("timed out waiting for " .. what, 2)
end

-- The number a shell's "echo N > file" wrote, once the whole line is there (the
-- redirection creates the file empty before echo writes it) -> number or nil
local function number_in(path)
  return tonumber((T.read(path) or ""):match("^(%d+)\n"))
end

-- A relay in front of a fresh listening socket -> {pid, port, lfd, dir}
local function start(dir, args)
  local lfd, lport = net.listen("127.0.0.1", 0)
  sh(string.format("(%s %s --target 127.0.0.1:%d > %s 2> %s & echo $! > %s; wait $!; echo $? > %s) &",
    q(relay.bin()), args, lport, q(dir .. "/port"), q(dir .. "/err"), q(dir .. "/pid"), q(dir .. "/rc")))
  local port = poll(function() return number_in(dir .. "/port") end, "the relay's port")
  local pid = poll(function() return number_in(dir .. "/pid") end, "the relay's pid")
  return {pid = pid, port = port, lfd = lfd, dir = dir}
end

-- The client's socket through the relay and the server's accepted one.
local function connect(r)
  local cfd = net.tcp_connect("127.0.0.1", r.port)
  local sfd = poll(function() return net.accept(r.lfd) end, "the relay's connection to the target")
  assert(net.connect_result(cfd))
  return cfd, sfd
end

local function send(fd, data)
  local from = 1
  while from <= #data do
    local n = poll(function() return net.sock_write(fd, data, from) end, "room to write")
    from = from + n
  end
end

-- n bytes (or up to EOF with n = nil) -> data, time the last piece arrived
local function recv(fd, n)
  local parts, got = {}, 0
  while not n or got < n do
    local d = poll(function() return net.sock_read(fd, 1048576) end, "bytes through the relay")
    if d == "" then break end
    parts[#parts + 1] = d
    got = got + #d
  end
  return table.concat(parts), gpurent.now()
end

-- Kill the relay and wait (bounded) for its wrapper to write rc: the directory is
-- removed next, and the wrapper's late write would land on a missing directory.
local function stop(r)
  if r.pid then os.execute("kill " .. r.pid .. " 2>/dev/null") end
  net.close_fd(r.lfd)
  pcall(poll, function() return number_in(r.dir .. "/rc") end, "the relay's exit")
end

describe("bench/relay.c (the emulated long link)", function()
  local dir, r
  before_each(function() dir = T.tmpdir() end)
  after_each(function()
    if r then stop(r); r = nil end
    T.rmtree(dir)
  end)

  it("delays each direction by RTT/2 and forwards EOF after the same delay", function()
    r = start(dir, "--rtt-ms 200")
    local cfd, sfd = connect(r)
    local t0 = gpurent.now()
    send(cfd, "ping")
    local got, t1 = recv(sfd, 4)
    assert.equal("ping", got)
    send(sfd, "pong")
    net.sock_shutdown(sfd, "w")
    local back, t2 = recv(cfd)         -- "pong", then EOF
    assert.equal("pong", back)
    assert.is_true(t1 - t0 >= 0.1, "client -> target took " .. (t1 - t0) .. " s, under RTT/2")
    assert.is_true(t2 - t0 >= 0.2, "the round trip took " .. (t2 - t0) .. " s, under the RTT")
    net.sock_shutdown(cfd, "w")
    assert.equal("", (recv(sfd)))      -- the client's EOF reaches the target too
    net.close_fd(cfd); net.close_fd(sfd)
  end)

  it("counts the bytes delivered both ways in --count's file, paces with --rate-mibps, exits 0 on SIGTERM", function()
    local count = dir .. "/count"
    r = start(dir, "--rtt-ms 2 --rate-mibps 4 --count " .. q(count))
    local cfd, sfd = connect(r)
    local up, down = string.rep("u", 2 * 1048576), string.rep("d", 5000)
    local t0 = gpurent.now()
    send(cfd, up)
    net.sock_shutdown(cfd, "w")
    local got, t1 = recv(sfd)
    assert.equal(#up, #got)
    -- 2 MiB at 4 MiB/s: the first read goes out at once, the rest at the rate
    assert.is_true(t1 - t0 >= 0.3, "2 MiB at 4 MiB/s took " .. (t1 - t0) .. " s")
    send(sfd, down)
    net.sock_shutdown(sfd, "w")
    assert.equal(down, (recv(cfd)))
    local want = tostring(#up + #down) .. "\n"
    poll(function() return T.read(count) == want end, "the count " .. want)
    net.close_fd(cfd); net.close_fd(sfd)
    sh("kill -TERM " .. r.pid)
    r.pid = nil
    assert.equal(0, poll(function() return number_in(dir .. "/rc") end, "the relay's exit"))
  end)

  it("refuses a target off loopback, naming it", function()
    -- bounded: a relay that took it would run until killed
    local p = io.popen("timeout 5 " .. q(relay.bin()) .. " --rtt-ms 5 --target 10.1.2.3:22 2>&1; echo rc=$?")
    local out = p:read("a"); p:close()
    assert.matches("loopback only, not '10.1.2.3'", out, 1, true)
    assert.matches("rc=1\n$", out)
  end)
end)
