-- bench/relay.lua: the relay (bench/relay.c, an emulated long link, built by make as
-- build/relay; $GPURENT_RELAY names another build) in front of a loopback sshd fixture
-- (tests/helpers/sshd.lua), for benches and tests:
--   local link = relay.start(fx, rtt_ms [, {rate_mibps = R, count = true}])   -- link.port, link.config (ssh_config: h1 via the relay)
--   link:bytes() (with count): bytes the relay delivered so far, both directions (lags up to 20 ms)
--   fx:connect-like: gpurent.connect("h1", {config = link.config}); link:stop()
--   link:cpu(): the relay's own CPU seconds so far (what the emulation takes from the tools)
--   relay.bin(): the relay binary's path (for a raw relay with no sshd behind it)
-- The relay's known_hosts line is the fixture's key under the relay's port.
local relay = {}
local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."
local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end
local function read(p) local f = io.open(p); if not f then return nil end local s = f:read("a"); f:close(); return s end

function relay.bin()
  local bin = os.getenv("GPURENT_RELAY") or (here .. "/../build/relay")
  local f = io.open(bin)
  if not f then error("relay: no binary at " .. bin .. " (run `make build/relay`, or set GPURENT_RELAY)", 2) end
  f:close()
  return bin
end

local ticks
function relay.clock_ticks()
  if not ticks then
    local p = io.popen("getconf CLK_TCK"); ticks = tonumber(p:read("a")) or 100; p:close()
  end
  return ticks
end

function relay.start(fx, rtt_ms, opts)
  local rate = opts and opts.rate_mibps
  local count = opts and opts.count
  local dir = fx.dir .. "/relay" .. tostring(rtt_ms) .. (rate and ("r" .. rate) or "")
  os.execute("mkdir -p " .. q(dir))
  local portfile = dir .. "/port"
  os.remove(portfile)
  local addr = read(fx.config):match("HostName%s+(%S+)") or "127.0.0.1"
  local countfile = dir .. "/count"
  local p = io.popen(string.format("%s --rtt-ms %s --target %s:%d%s%s > %s 2> %s & echo $!",
    q(relay.bin()), tostring(rtt_ms), addr, fx.port, rate and (" --rate-mibps " .. rate) or "",
    count and (" --count " .. q(countfile)) or "", q(portfile),
    q(dir .. "/err")))
  local pid = tonumber(p:read("l"))
  p:close()
  local port
  for _ = 1, 200 do   -- bounded: 10 s
    port = tonumber((read(portfile) or ""):match("^(%d+)\n"))
    if port then break end
    gpurent.sleep(0.05)
  end
  if not port then
    os.execute("kill " .. pid .. " 2>/dev/null")
    error("relay did not start: " .. tostring(read(dir .. "/err")), 2)
  end
  local config = dir .. "/ssh_config"
  local text = read(fx.config):gsub("Port%s+%d+", "Port " .. port)
  local f = io.open(config, "w"); f:write(text, "\nHost *\n  BatchMode yes\n  LogLevel ERROR\n"); f:close()
  local kh = read(fx.known_hosts)
  local extra = {}
  for line in kh:gmatch("[^\n]+") do
    local l = line:gsub("^%[([^%]]+)%]:" .. fx.port .. " ", "[%1]:" .. port .. " ")
    if l ~= line then extra[#extra + 1] = l end
  end
  f = io.open(fx.known_hosts, "a"); f:write(table.concat(extra, "\n"), "\n"); f:close()
  local link = {pid = pid, port = port, config = config}
  function link:bytes()
    gpurent.sleep(0.1)   -- the relay rewrites the count every 20 ms
    return tonumber((read(countfile) or ""):match("^(%d+)")) or 0
  end
  function link:cpu()   -- the relay's own CPU seconds so far (user + system), nil once stopped
    local stat = self.pid and read("/proc/" .. self.pid .. "/stat")
    local rest = stat and stat:match("%) (.*)")
    if not rest then return nil end
    local f = {}
    for w in rest:gmatch("%S+") do f[#f + 1] = w end
    return (tonumber(f[12]) + tonumber(f[13])) / relay.clock_ticks()
  end
  function link:stop()
    if self.pid then os.execute("kill " .. self.pid .. " 2>/dev/null"); self.pid = nil end
  end
  return link
end

return relay
