-- bench/ssh_bench.lua: the measurements behind bench/ssh_bench.sh. Starts the
-- fixture daemons, times gpurent in-process (exec, transfers) and as a cold
-- process (32-host probe, RSS), and the peer tools as child processes.
local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."
package.path = here .. "/../tests/helpers/?.lua;" .. package.path
local sshd = require "sshd"
local hash = require "gpurent.util.hash"
local now = gpurent.now
local BIN = arg[1] or "./gpurent"

local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end
local function have(cmd) return os.execute("command -v " .. cmd .. " >/dev/null 2>&1") end
local function timed(cmd)
  local t0 = now()
  local ok = os.execute(cmd)
  local t = now() - t0
  if not ok then return nil end
  return t
end
local function best(n, fn) local b; for _ = 1, n do local t = fn(); if t and (not b or t < b) then b = t end end; return b end
local function fmt(v, f) return v and string.format(f or "%.2f", v) or "n/a" end

local a = sshd.start{addrs = 16, first_addr = 1, alias_prefix = "a"}
local b = sshd.start{addrs = 16, first_addr = 17, alias_prefix = "b"}
local work = a.dir .. "/bench"
os.execute("mkdir -p " .. work)
local ok, err = xpcall(function()
  -- one client config/known_hosts/key for all 32
  local cfg = work .. "/ssh_config"
  local text = T and "" or ""
  text = (io.open(a.config):read("a")) .. "\n" .. (io.open(b.config):read("a"))
  os.execute("cat " .. b.known_hosts .. " >> " .. a.known_hosts)
  os.execute("cat " .. a.key .. ".pub >> " .. b.home .. "/.ssh/authorized_keys")
  text = text:gsub("UserKnownHostsFile [^\n]+", "UserKnownHostsFile " .. a.known_hosts)
             :gsub("IdentityFile [^\n]+", "IdentityFile " .. a.key)
  local f = io.open(cfg, "w"); f:write(text, "\nHost *\n  BatchMode yes\n  LogLevel ERROR\n"); f:close()
  local aliases = {}
  for _, x in ipairs(a.aliases) do aliases[#aliases + 1] = x end
  for _, x in ipairs(b.aliases) do aliases[#aliases + 1] = x end
  local S = "ssh -F " .. q(cfg)

  -- 1. exec latency
  local inst = gpurent.connect("a1", {config = cfg})
  inst:sh("true")
  local N = 200
  local t_gr = best(3, function() local t0 = now(); for _ = 1, N do inst:sh("true") end; return (now() - t0) / N end)
  local t_ssh = best(3, function() return timed(S .. " a1 true") end)
  local cp = work .. "/cm-%C"
  os.execute(S .. " -o ControlMaster=yes -o ControlPath=" .. q(cp) .. " -o ControlPersist=120 -N -f a1")
  local t_cm = best(3, function()
    local t0 = now()
    for _ = 1, 50 do os.execute(S .. " -o ControlPath=" .. q(cp) .. " a1 true") end
    return (now() - t0) / 50
  end)
  os.execute(S .. " -o ControlPath=" .. q(cp) .. " -O exit a1 2>/dev/null")

  -- 2. one probe on 32 hosts, cold process
  local probe = work .. "/probe.lua"
  f = io.open(probe, "w")
  f:write(string.format([[
local hosts = {%s}
local res = gpurent.parallel(hosts, function(h)
  local i = gpurent.connect(h, {config = %q}); local r = i:sh("true", {check = true}); i:close(); return r.code
end)
assert(res.failed == 0, "probe failed")
]], "'" .. table.concat(aliases, "','") .. "'", cfg))
  f:close()
  local p_gr = best(3, function() return timed(q(BIN) .. " run " .. q(probe)) end)
  local hostsfile = work .. "/hosts"
  f = io.open(hostsfile, "w"); f:write(table.concat(aliases, "\n"), "\n"); f:close()
  local p_pssh = have("parallel-ssh") and best(3, function()
    return timed("parallel-ssh -p 32 -t 30 -h " .. q(hostsfile) .. " -x " .. q("-F " .. cfg) .. " true >/dev/null")
  end)
  local inv = work .. "/inventory.ini"
  f = io.open(inv, "w")
  f:write("[all]\n", table.concat(aliases, "\n"), "\n[all:vars]\nansible_ssh_common_args='-F ", cfg,
    " -o ControlMaster=no'\nansible_user=root\n")
  f:close()
  local p_ans = have("ansible") and best(2, function()
    return timed("ANSIBLE_HOST_KEY_CHECKING=False ANSIBLE_SSH_PIPELINING=1 ansible all -i " .. q(inv) ..
      " -m raw -a true -f 32 >/dev/null 2>&1")
  end)

  -- 3. 512 MiB upload and download. Every file (source, remote and local
  -- destinations) lives on a tmpfs: on a disk, writeback throttling of the
  -- previous tool's 512 MiB decided who was fastest. The tools take turns in
  -- each round so that drift of the machine hits all of them alike.
  local xfer = (os.execute("test -d /dev/shm -a -w /dev/shm") and "/dev/shm" or work) ..
    "/gpurent-bench." .. require("gpurent.core").sys.getpid()
  os.execute("mkdir -p " .. q(xfer))
  local blob = xfer .. "/blob"
  os.execute("head -c " .. 512 * 1048576 .. " /dev/urandom > " .. q(blob))
  local MiB = 512
  local want = hash.sha256_file(blob)
  local up_dst, down_dst = xfer .. "/blob.up", xfer .. "/blob.down"
  local function rm(...) for _, path in ipairs{...} do os.remove(path) end end
  -- the same transfers in a child gpurent on OpenSSL's own AES-CTR, one
  -- EVP_Cipher call per 16-byte block as libssh2 1.10 makes them
  local plain = work .. "/plain_ctr.lua"
  f = io.open(plain, "w")
  f:write(string.format([[
local inst = gpurent.connect("a1", {config = %q})
local t0 = gpurent.now(); local r = inst:put(%q, %q, {progress = false}); local up = gpurent.now() - t0
assert(r.sha256 == %q)
t0 = gpurent.now(); r = inst:get(%q, %q, {progress = false}); local down = gpurent.now() - t0
assert(r.sha256 == %q)
print(up, down)
]], cfg, blob, up_dst .. ".plain", want, up_dst .. ".plain", down_dst .. ".plain", want))
  f:close()
  local T = {}
  local function keep(name, t) if t and (not T[name] or t < T[name]) then T[name] = t end end
  local sftp = "sftp -q -F " .. q(cfg) .. " -b - a1 >/dev/null"
  for _ = 1, 3 do
    rm(up_dst, down_dst)
    local t0 = now(); local r = inst:put(blob, up_dst, {progress = false}); keep("up_gr", now() - t0)
    assert(r.sha256 == want)
    t0 = now(); r = inst:get(up_dst, down_dst, {progress = false}); keep("down_gr", now() - t0)
    assert(r.sha256 == want)
    rm(up_dst, down_dst)
    keep("up_sftp", timed("echo " .. q("put " .. blob .. " " .. up_dst) .. " | " .. sftp))
    keep("down_sftp", timed("echo " .. q("get " .. up_dst .. " " .. down_dst) .. " | " .. sftp))
    rm(up_dst, down_dst)
    keep("up_scp", timed("scp -q -F " .. q(cfg) .. " " .. q(blob) .. " a1:" .. q(up_dst)))
    keep("down_scp", timed("scp -q -F " .. q(cfg) .. " a1:" .. q(up_dst) .. " " .. q(down_dst)))
    rm(up_dst, down_dst)
    if have("rsync") then
      keep("up_rsync", timed("rsync -q --whole-file -e " .. q(S) .. " " .. q(blob) .. " a1:" .. q(up_dst)))
      keep("down_rsync", timed("rsync -q --whole-file -e " .. q(S) .. " a1:" .. q(up_dst) .. " " .. q(down_dst)))
      rm(up_dst, down_dst)
    end
    local pr = io.popen("GPURENT_SSH_AESCTR=openssl " .. q(BIN) .. " run " .. q(plain))
    local up, down = (pr:read("a") or ""):match("(%S+)%s+(%S+)")
    pr:close()
    keep("up_plain", tonumber(up)); keep("down_plain", tonumber(down))
    rm(up_dst .. ".plain", down_dst .. ".plain")
  end
  os.execute("rm -rf " .. q(xfer))
  inst:close()

  -- 4. peak RSS with 32 sessions open
  local rss = work .. "/rss.lua"
  f = io.open(rss, "w")
  f:write(string.format([[
local hosts = {%s}
local open = gpurent.parallel(hosts, function(h) return gpurent.connect(h, {config = %q}) end)
assert(open.failed == 0 and #open == 32, "sessions failed")
for _, r in ipairs(open) do assert(r.value:sh("true").code == 0) end
for l in io.lines("/proc/self/status") do local k = l:match("^VmHWM:%%s*(%%d+)") if k then print(k) end end
]], "'" .. table.concat(aliases, "','") .. "'", cfg))
  f:close()
  local pr = io.popen(q(BIN) .. " run " .. q(rss))
  local hwm = tonumber(pr:read("l")); pr:close()

  local function rate(t) return t and MiB / t end
  print("SSH: exec latency per command (one session; best of 3)")
  print(string.format("  %-30s %10s", "tool", "ms/cmd"))
  print(string.format("  %-30s %10s", "gpurent inst:sh", fmt(t_gr * 1000)))
  print(string.format("  %-30s %10s", "ssh (new connection)", fmt(t_ssh * 1000)))
  print(string.format("  %-30s %10s", "ssh ControlMaster", fmt(t_cm * 1000)))
  print(string.format("  gpurent / ControlMaster: %.2fx (target <= 0.4x)", t_gr / t_cm))
  print()
  print("SSH: one probe (`true`) on 32 hosts, cold process (wall, best of 3)")
  print(string.format("  %-30s %10s", "tool", "seconds"))
  print(string.format("  %-30s %10s", "gpurent run (parallel)", fmt(p_gr, "%.3f")))
  print(string.format("  %-30s %10s", "parallel-ssh -p 32", fmt(p_pssh, "%.3f")))
  print(string.format("  %-30s %10s", "ansible -m raw -f 32", fmt(p_ans, "%.3f")))
  if p_pssh then print(string.format("  gpurent / parallel-ssh: %.2fx (target <= 0.4x)", p_gr / p_pssh)) end
  print()
  print("SSH: 512 MiB transfer over loopback, files on tmpfs (MiB/s, best of 3 rounds)")
  print(string.format("  %-44s %10s %10s", "tool", "upload", "download"))
  local function row(name, up, down)
    print(string.format("  %-44s %10s %10s", name, fmt(rate(T[up]), "%.0f"), fmt(rate(T[down]), "%.0f")))
  end
  row("gpurent put/get (+SHA-256, batched AES-CTR)", "up_gr", "down_gr")
  row("gpurent, OpenSSL per-block AES-CTR", "up_plain", "down_plain")
  row("sftp", "up_sftp", "down_sftp")
  row("scp", "up_scp", "down_scp")
  row("rsync --whole-file", "up_rsync", "down_rsync")
  print(string.format("  gpurent / sftp: upload %.2fx (target >= 1.2x), download %.2fx (target >= 1.0x)",
    T.up_sftp / T.up_gr, T.down_sftp / T.down_gr))
  print()
  print("SSH: peak RSS of a gpurent process with 32 sessions open")
  print(string.format("  %.1f MiB (target <= 20 MiB)", (hwm or 0) / 1024))
end, debug.traceback)
a:stop()
b:stop()
if not ok then io.stderr:write(tostring(err), "\n"); os.exit(1) end
