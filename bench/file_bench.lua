-- bench/file_bench.lua: the measurements behind bench/file_bench.sh. Every file
-- lives under the fixture's directory; each tool moves the same file once per
-- link, its result checked by SHA-256 (a failed or wrong copy prints "failed").
local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."
package.path = here .. "/?.lua;" .. here .. "/../tests/helpers/?.lua;" .. package.path
local sshd = require "sshd"
local relay = require "relay"
local hash = require "gpurent.util.hash"
local now = gpurent.now
local BIN = arg[1] or "./gpurent"
-- GPURENT_BASELINE_BIN: another gpurent build (e.g. the previous commit's) measured
-- in the same run, as the row "baseline": before/after ratios on the same load
local BASE = os.getenv("GPURENT_BASELINE_BIN")
local RTTS = {}
for r in (os.getenv("FILE_RTTS") or "50 200"):gmatch("%d+") do RTTS[#RTTS + 1] = tonumber(r) end
local MIB = {[50] = tonumber(os.getenv("FILE_MIB_50") or "256"), [200] = tonumber(os.getenv("FILE_MIB_200") or "256")}
local LOOP_MIB = tonumber(os.getenv("FILE_LOOPBACK_MIB") or "512")
local TOOLS = os.getenv("FILE_TOOLS") or "gpurent sftp scp rsync"
-- at 200 ms every peer tool runs too, as the issue asks (about 2 minutes more);
-- FILE_TOOLS_200="gpurent sftp" leaves scp and rsync out there
local TOOLS_200 = os.getenv("FILE_TOOLS_200") or TOOLS

local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end
local function have(cmd) return os.execute("command -v " .. cmd .. " >/dev/null 2>&1") end
local function want(tool, rtt)
  return (" " .. (rtt == 200 and TOOLS_200 or TOOLS) .. " "):find(" " .. tool .. " ", 1, true) ~= nil
end

local fx = sshd.start{addrs = 1}
local links = {}
local rows = {}
local ok, err = xpcall(function()
  local work = fx.dir .. "/filebench"
  os.execute("mkdir -p " .. q(work))
  local function blob(mib)
    local p = work .. "/blob" .. mib
    if not io.open(p) then os.execute("head -c " .. mib * 1048576 .. " /dev/urandom > " .. q(p)) end
    return p, hash.sha256_file(p)
  end
  -- one measurement: cmd moves src to dst; nil when it failed or the copy differs
  local function timed(cmd, dst, sha, link)
    os.remove(dst)
    -- every tool starts with nothing left to write back (the copy made for the box,
    -- the last tool's file): else the first one measured pays for the others' writes
    os.execute("sync")
    local cpu0 = link and link:cpu()
    local t0 = now()
    local okc = os.execute(cmd .. " >/dev/null 2>" .. q(work .. "/err"))
    local t = now() - t0
    -- the relay's own CPU for this transfer (on stderr): the emulated link's cost to the tools
    local cpu1 = link and link:cpu()
    if cpu0 and cpu1 then io.stderr:write(string.format("    %.2f s, relay CPU %.2f s\n", t, cpu1 - cpu0)) end
    local good = okc and io.open(dst) and hash.sha256_file(dst) == sha
    os.remove(dst)
    if not good then io.stderr:write("  failed: ", cmd, "\n  ", (io.open(work .. "/err"):read("a"):sub(1, 300)), "\n") end
    return good and t or nil
  end
  local function measure(label, rtt, mib, cfg, link)
    local src, sha = blob(mib)
    local remote, up, down = fx.home .. "/blob" .. mib, fx.home .. "/up.bin", work .. "/down.bin"
    os.execute("cp " .. q(src) .. " " .. q(remote))
    local S = "ssh -F " .. q(cfg)
    local sftp = "sftp -q -F " .. q(cfg) .. " -b - h1"
    local T = {}
    local function put(name, cmd_up, cmd_down)
      io.stderr:write(string.format("  %s, %s: %s\n", label, name, "..."))
      T[name] = {up = cmd_up and timed(cmd_up, up, sha, link), down = cmd_down and timed(cmd_down, down, sha, link)}
    end
    if want("gpurent", rtt) then
      local g = "GPURENT_SSH_CONFIG=" .. q(cfg) .. " " .. q(BIN)
      -- over loopback without --verify's extra passes over the file, as sftp (what ssh_bench's row measures)
      local v = rtt and "" or " --no-verify"
      put("gpurent", g .. " put" .. v .. " h1 " .. q(src) .. " " .. q(up), g .. " get" .. v .. " h1 " .. q(remote) .. " " .. q(down))
      -- the stream counts gpurent chose, for the table
      local p = io.popen(g .. " put --json h1 " .. q(src) .. " " .. q(up) .. " 2>/dev/null")
      local out = p:read("a"); p:close()
      T.gpurent.streams_up = out:match('"streams":(%d+)')
      p = io.popen(g .. " get --json h1 " .. q(remote) .. " " .. q(down) .. " 2>/dev/null")
      out = p:read("a"); p:close()
      T.gpurent.streams_down = out:match('"streams":(%d+)')
      os.remove(up); os.remove(down)
      if BASE then
        local b = "GPURENT_SSH_CONFIG=" .. q(cfg) .. " " .. q(BASE)
        put("baseline", b .. " put" .. v .. " h1 " .. q(src) .. " " .. q(up), b .. " get" .. v .. " h1 " .. q(remote) .. " " .. q(down))
      end
    end
    if want("sftp", rtt) then
      put("sftp", "echo " .. q("put " .. src .. " " .. up) .. " | " .. sftp,
        "echo " .. q("get " .. remote .. " " .. down) .. " | " .. sftp)
    end
    if want("scp", rtt) and rtt then
      put("scp", "scp -q -F " .. q(cfg) .. " " .. q(src) .. " h1:" .. q(up), "scp -q -F " .. q(cfg) .. " h1:" .. q(remote) .. " " .. q(down))
    end
    if want("rsync", rtt) and rtt and have("rsync") then
      put("rsync", "rsync -q --whole-file -e " .. q(S) .. " " .. q(src) .. " h1:" .. q(up),
        "rsync -q --whole-file -e " .. q(S) .. " h1:" .. q(remote) .. " " .. q(down))
    end
    os.remove(remote)
    rows[#rows + 1] = {label = label, mib = mib, T = T}
  end
  for _, rtt in ipairs(RTTS) do
    local link = relay.start(fx, rtt)
    links[#links + 1] = link
    measure(string.format("RTT %d ms", rtt), rtt, MIB[rtt] or 64, link.config, link)
    link:stop()
  end
  if LOOP_MIB > 0 then measure("loopback", nil, LOOP_MIB, fx.config) end

  print("One large file over an emulated long link (bench/relay.c) and over loopback, MiB/s (once each)")
  print(string.format("  %-10s %-9s %-22s %10s %10s %10s %10s", "link", "size", "tool", "upload", "download",
    "up/sftp", "down/sftp"))
  local function rate(mib, t) return t and string.format("%.1f", mib / t) or "n/a" end
  local function ratio(t, base) return (t and base) and string.format("%.2fx", base / t) or "n/a" end
  for _, r in ipairs(rows) do
    local base = r.T.sftp or {}
    for _, name in ipairs({"gpurent", "baseline", "sftp", "scp", "rsync"}) do
      local t = r.T[name]
      if t then
        local label = name
        if name == "gpurent" then
          label = string.format("gpurent (%s/%s streams)", t.streams_up or "?", t.streams_down or "?")
        elseif name == "rsync" then label = "rsync --whole-file"
        elseif name == "baseline" then label = "gpurent baseline" end
        print(string.format("  %-10s %-9s %-22s %10s %10s %10s %10s", r.label, r.mib .. " MiB", label,
          rate(r.mib, t.up), rate(r.mib, t.down), ratio(t.up, base.up), ratio(t.down, base.down)))
      end
    end
  end
  print("  gpurent verifies the whole file's SHA-256 on both ends over the long link (the default); over loopback")
  print("  it runs with --no-verify, as sftp, scp and rsync check nothing")
  print("  targets: gpurent >= 3x sftp both ways over the long link; over loopback >= 0.82x up, 0.92x down")
end, debug.traceback)
for _, l in ipairs(links) do l:stop() end
fx:stop()
if not ok then io.stderr:write(tostring(err), "\n"); os.exit(1) end
