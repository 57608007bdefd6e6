-- bench/tree_bench.lua: the measurements behind bench/tree_bench.sh.
local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."
package.path = here .. "/?.lua;" .. here .. "/../tests/helpers/?.lua;" .. package.path
local sshd = require "sshd"
local relay = require "relay"
local now = gpurent.now
local BIN = arg[1] or "./gpurent"
local BASE = os.getenv("GPURENT_BASELINE_BIN")   -- another build measured in the same run (as in file_bench)
local RTT = tonumber(os.getenv("TREE_RTT_MS") or "50")
local SMALL = tonumber(os.getenv("TREE_SMALL") or "1000")
local BIG = tonumber(os.getenv("TREE_BIG") or "10")
local TOOLS = os.getenv("TREE_TOOLS") or "sftp scp rsync gpurent"

local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end
local function have(cmd) return os.execute("command -v " .. cmd .. " >/dev/null 2>&1") end
local function want(tool) return (" " .. TOOLS .. " "):find(" " .. tool .. " ", 1, true) ~= nil end
local function sh(cmd) assert(os.execute(cmd), "bench: failed: " .. cmd) end

local fx = sshd.start{addrs = 1}
local link
local ok, err = xpcall(function()
  link = relay.start(fx, RTT)
  local cfg = link.config
  local work = fx.dir .. "/treebench"
  local tree = work .. "/results"
  sh("mkdir -p " .. q(tree))
  -- the tree: SMALL files of 4 KiB in 10 directories, BIG files of 8 MiB in ckpt/
  sh(string.format([[cd %s && for d in $(seq 0 9); do mkdir -p logs/run$d; done && ]] ..
    [[for i in $(seq 1 %d); do head -c 4096 /dev/urandom > logs/run$((i %% 10))/m$i.json; done && ]] ..
    [[mkdir -p ckpt && for i in $(seq 1 %d); do head -c 8388608 /dev/urandom > ckpt/s$i.pt; done]], q(tree), SMALL, BIG))
  local remote = fx.home .. "/results"        -- the box's copy (same machine: the sshd's home)
  sh("cp -a " .. q(tree) .. " " .. q(remote))
  local mib = (SMALL * 4096 + BIG * 8388608) / 1048576
  local S = "ssh -F " .. q(cfg)
  local rows = {}
  local function fresh(p) sh("rm -rf " .. q(p)) end
  local function same(a, b) return os.execute("diff -r " .. q(a) .. " " .. q(b) .. " >/dev/null") end
  local function time(name, dir, cmd, check_a, check_b, clean)
    clean()
    local t0 = now()
    local okc = os.execute(cmd .. " >/dev/null 2>" .. q(work .. "/err"))
    local t = now() - t0
    local good = okc and same(check_a, check_b)
    rows[#rows + 1] = {name = name, dir = dir, t = good and t or nil,
      note = good and "" or ("FAILED: " .. (io.open(work .. "/err"):read("a"):sub(1, 120)))}
    io.stderr:write(string.format("  %-16s %-4s %s\n", name, dir, good and string.format("%.2f s", t) or "failed"))
  end
  local down, up = work .. "/down", fx.home .. "/up"
  local function clean_down() fresh(down); sh("mkdir -p " .. q(down)) end
  local function clean_up() fresh(up); sh("mkdir -p " .. q(up)) end
  io.stderr:write(string.format("tree bench: %d x 4 KiB + %d x 8 MiB (%.0f MiB) at RTT %g ms\n", SMALL, BIG, mib, RTT))
  if want("gpurent") then
    time("gpurent get", "down", string.format("GPURENT_SSH_CONFIG=%s %s get h1 %s %s", q(cfg), BIN, q(remote), q(down)),
      tree, down .. "/results", clean_down)
    time("gpurent put", "up", string.format("GPURENT_SSH_CONFIG=%s %s put h1 %s %s", q(cfg), BIN, q(tree), q(up)),
      tree, up .. "/results", clean_up)
    -- the same tree again, unchanged: nothing is sent (sizes and SHA-256 compared on both ends)
    time("gpurent put", "again", string.format("GPURENT_SSH_CONFIG=%s %s put h1 %s %s", q(cfg), BIN, q(tree), q(up)),
      tree, up .. "/results", function() end)
    time("gpurent get", "again", string.format("GPURENT_SSH_CONFIG=%s %s get h1 %s %s", q(cfg), BIN, q(remote), q(down)),
      tree, down .. "/results", function() sh("mkdir -p " .. q(down) .. " && cp -a " .. q(tree) .. " " .. q(down)) end)
  end
  if BASE and want("gpurent") then
    time("baseline get", "down", string.format("GPURENT_SSH_CONFIG=%s %s get h1 %s %s", q(cfg), BASE, q(remote), q(down)),
      tree, down .. "/results", clean_down)
    time("baseline put", "up", string.format("GPURENT_SSH_CONFIG=%s %s put h1 %s %s", q(cfg), BASE, q(tree), q(up)),
      tree, up .. "/results", clean_up)
    time("baseline put", "again", string.format("GPURENT_SSH_CONFIG=%s %s put h1 %s %s", q(cfg), BASE, q(tree), q(up)),
      tree, up .. "/results", function() end)
    time("baseline get", "again", string.format("GPURENT_SSH_CONFIG=%s %s get h1 %s %s", q(cfg), BASE, q(remote), q(down)),
      tree, down .. "/results", function() sh("mkdir -p " .. q(down) .. " && cp -a " .. q(tree) .. " " .. q(down)) end)
  end
  if want("rsync") and have("rsync") then
    time("rsync -a", "down", string.format("rsync -a -e %s h1:%s %s", q(S), q(remote), q(down .. "/")),
      tree, down .. "/results", clean_down)
    time("rsync -a", "up", string.format("rsync -a -e %s %s h1:%s", q(S), q(tree), q(up .. "/")),
      tree, up .. "/results", clean_up)
    time("rsync -a", "again", string.format("rsync -a -e %s %s h1:%s", q(S), q(tree), q(up .. "/")),
      tree, up .. "/results", function() end)
  end
  if want("sftp") then
    local batch = work .. "/batch"
    local f = io.open(batch, "w"); f:write("get -r ", remote, " ", down, "/results\n"); f:close()
    time("sftp -r", "down", string.format("sftp -F %s -q -b %s h1", q(cfg), q(batch)), tree, down .. "/results", clean_down)
    f = io.open(batch, "w"); f:write("put -r ", tree, " ", up, "/results\n"); f:close()
    time("sftp -r", "up", string.format("sftp -F %s -q -b %s h1", q(cfg), q(batch)), tree, up .. "/results", clean_up)
  end
  if want("scp") then
    time("scp -r", "down", string.format("scp -F %s -q -r h1:%s %s", q(cfg), q(remote), q(down .. "/")),
      tree, down .. "/results", clean_down)
    time("scp -r", "up", string.format("scp -F %s -q -r %s h1:%s", q(cfg), q(tree), q(up .. "/")),
      tree, up .. "/results", clean_up)
  end
  local by = {}
  for _, r in ipairs(rows) do by[r.name .. "/" .. r.dir] = r.t end
  print(string.format("Tree of %d x 4 KiB + %d x 8 MiB (%.0f MiB), RTT %g ms (bench/relay.c), seconds (once each)",
    SMALL, BIG, mib, RTT))
  print(string.format("  %-14s %10s %10s", "tool", "get/down", "put/up"))
  for _, name in ipairs({"gpurent", "baseline", "rsync -a", "sftp -r", "scp -r"}) do
    local label = (name == "gpurent" or name == "baseline") and (name .. " get/put") or name
    local g = name == "gpurent" or name == "baseline"
    local d = by[(g and (name .. " get") or name) .. "/down"]
    local u = by[(g and (name .. " put") or name) .. "/up"]
    if d or u then
      print(string.format("  %-14s %10s %10s", label, d and string.format("%.2f", d) or "n/a", u and string.format("%.2f", u) or "n/a"))
    end
  end
  print(string.format("  unchanged re-send: gpurent put %s s, gpurent get %s s, rsync -a (up) %s s",
    by["gpurent put/again"] and string.format("%.2f", by["gpurent put/again"]) or "n/a",
    by["gpurent get/again"] and string.format("%.2f", by["gpurent get/again"]) or "n/a",
    by["rsync -a/again"] and string.format("%.2f", by["rsync -a/again"]) or "n/a"))
  if BASE then
    print(string.format("  unchanged re-send, baseline: put %s s, get %s s",
      by["baseline put/again"] and string.format("%.2f", by["baseline put/again"]) or "n/a",
      by["baseline get/again"] and string.format("%.2f", by["baseline get/again"]) or "n/a"))
  end
  for _, r in ipairs(rows) do if not r.t then print("  " .. r.name .. " " .. r.dir .. ": " .. r.note) end end
  local function ratio(a, b) return (a and b) and string.format("%.2fx", b / a) or "n/a" end
  local gd, gu = by["gpurent get/down"], by["gpurent put/up"]
  print(string.format("  gpurent vs rsync -a: get %s, put %s (target >= 1.0x: no slower)",
    ratio(gd, by["rsync -a/down"]), ratio(gu, by["rsync -a/up"])))
  print(string.format("  gpurent vs sftp -r: get %s, put %s (target >= 20x)", ratio(gd, by["sftp -r/down"]), ratio(gu, by["sftp -r/up"])))
  print(string.format("  gpurent vs scp -r: get %s, put %s", ratio(gd, by["scp -r/down"]), ratio(gu, by["scp -r/up"])))
end, debug.traceback)
if link then link:stop() end
fx:stop()
if not ok then io.stderr:write(tostring(err), "\n"); os.exit(1) end
