-- bench/compress_bench.lua: the measurements behind bench/compress_bench.sh.
local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."
package.path = here .. "/?.lua;" .. here .. "/../tests/helpers/?.lua;" .. package.path
local sshd = require "sshd"
local relay = require "relay"
local text_tree = require "text_tree"
local now = gpurent.now
local BIN = arg[1] or "./gpurent"
local RTT = tonumber(os.getenv("COMPRESS_RTT_MS") or "50")
local FILES = tonumber(os.getenv("COMPRESS_FILES") or "200")
local MIB = tonumber(os.getenv("COMPRESS_MIB") or "20")
-- a second run paces each direction of each connection to this rate (a public link's
-- bandwidth, where compression pays); "0" skips it
local RATE = tonumber(os.getenv("COMPRESS_RATE_MIBPS") or "4")

local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end
local function have(cmd) return os.execute("command -v " .. cmd .. " >/dev/null 2>&1") end
local function sh(cmd) assert(os.execute(cmd), "bench: failed: " .. cmd) end

local fx = sshd.start{addrs = 1}
local link
local work = fx.dir .. "/compressbench"
local tree = work .. "/texts"
local remote = fx.home .. "/texts"
local size

-- One table: every tool both ways through one relay (rate: MiB/s per direction, or nil).
local function bench(rate)
  link = relay.start(fx, RTT, {count = true, rate_mibps = rate})
  local cfg = link.config
  local bw = rate and string.format("%g MiB/s each way", rate) or "unlimited bandwidth"
  local S = "ssh -F " .. q(cfg)
  local rows = {}
  local function fresh(p) sh("rm -rf " .. q(p) .. " && mkdir -p " .. q(p)) end
  local function same(a, b) return os.execute("diff -r " .. q(a) .. " " .. q(b) .. " >/dev/null") end
  local down, up = work .. "/down", fx.home .. "/up"
  local function time(name, dir, cmd)
    local dest = dir == "down" and down or up
    fresh(dest)
    local b0 = link:bytes()
    local t0 = now()
    local okc = os.execute(cmd .. " >/dev/null 2>" .. q(work .. "/err"))
    local t = now() - t0
    local wire = link:bytes() - b0
    local good = okc and same(tree, dest .. "/texts")
    rows[name .. "/" .. dir] = good and {t = t, wire = wire} or nil
    if not good then
      io.stderr:write(string.format("  %s %s FAILED: %s\n", name, dir, io.open(work .. "/err"):read("a"):sub(1, 200)))
    else
      io.stderr:write(string.format("  %-22s %-4s %.2f s, %.1f MiB on the link\n", name, dir, t, wire / 1048576))
    end
  end
  io.stderr:write(string.format("compress bench: %d text files, %.1f MiB, at RTT %g ms, %s\n", FILES, size / 1048576,
    RTT, bw))
  local G = "GPURENT_SSH_CONFIG=" .. q(cfg) .. " " .. BIN
  time("gpurent get/put", "down", string.format("%s get h1 %s %s", G, q(remote), q(down)))
  time("gpurent get/put", "up", string.format("%s put h1 %s %s", G, q(tree), q(up)))
  time("gpurent --compress", "down", string.format("%s get --compress h1 %s %s", G, q(remote), q(down)))
  time("gpurent --compress", "up", string.format("%s put --compress h1 %s %s", G, q(tree), q(up)))
  if have("rsync") then
    for _, flags in ipairs({"-a", "-az"}) do
      time("rsync " .. flags, "down", string.format("rsync %s -e %s h1:%s %s", flags, q(S), q(remote), q(down .. "/")))
      time("rsync " .. flags, "up", string.format("rsync %s -e %s %s h1:%s", flags, q(S), q(tree), q(up .. "/")))
    end
  end
  print(string.format("Text tree (logs + JSON) of %d files, %.1f MiB, RTT %g ms, %s (bench/relay.c), once each",
    FILES, size / 1048576, RTT, bw))
  print(string.format("  %-20s %10s %10s %16s", "tool", "get/down s", "put/up s", "MiB on link (put)"))
  for _, name in ipairs({"gpurent get/put", "gpurent --compress", "rsync -a", "rsync -az"}) do
    local d, u = rows[name .. "/down"], rows[name .. "/up"]
    if d or u then
      print(string.format("  %-20s %10s %10s %16s", name, d and string.format("%.2f", d.t) or "n/a",
        u and string.format("%.2f", u.t) or "n/a", u and string.format("%.1f", u.wire / 1048576) or "n/a"))
    end
  end
  local function ratio(a, b) return (a and b) and string.format("%.2fx", b.t / a.t) or "n/a" end
  local gz, rz = rows, rows
  print(string.format("  gpurent --compress vs rsync -az: get %s, put %s (>= 1.0x: no slower)",
    ratio(gz["gpurent --compress/down"], rz["rsync -az/down"]), ratio(gz["gpurent --compress/up"], rz["rsync -az/up"])))
  print(string.format("  gpurent --compress vs gpurent: get %s, put %s",
    ratio(gz["gpurent --compress/down"], gz["gpurent get/put/down"]), ratio(gz["gpurent --compress/up"], gz["gpurent get/put/up"])))
  link:stop()
  link = nil
end

local ok, err = xpcall(function()
  size = text_tree.make(tree, FILES, MIB * 1048576)
  sh("cp -a " .. q(tree) .. " " .. q(remote))
  bench(nil)
  if RATE > 0 then print(); bench(RATE) end
end, debug.traceback)
if link then link:stop() end
fx:stop()
if not ok then io.stderr:write(tostring(err), "\n"); os.exit(1) end
