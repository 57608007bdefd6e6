-- ssh_capture_spec: captured output is bounded, against a real sshd. 1 GiB of
-- output stops at the cap (the remote command is stopped, gpurent's peak RSS stays
-- near the cap: VmHWM, read by a child gpurent about itself), the error names the
-- cap and the ways out, the cap is set per call, per instance, per module and by
-- GPURENT_MAX_OUTPUT, and to=FILE streams stdout to a local file byte for byte.
local sshd = require "sshd"
local hash = require "gpurent.util.hash"
local instance = require "gpurent.transport.instance"
local core = require "gpurent.core"

local MiB = 1024 * 1024

-- How many processes run exactly this argv?
local function count_procs(argv)
  local want, n = table.concat(argv, "\0") .. "\0", 0
  for name in require("lfs").dir("/proc") do
    if name:match("^%d+$") and T.read("/proc/" .. name .. "/cmdline") == want then n = n + 1 end
  end
  return n
end

local function settle(argv, n, seconds)
  local deadline, c = core.sys.now() + seconds, nil
  repeat
    c = count_procs(argv)
    if c == n then return c end
    core.sys.sleep(0.05)
  until core.sys.now() > deadline
  return c
end

-- Run a chunk in a child gpurent connected to h1 as `i`; it may call hwm() (its
-- own peak RSS in KiB). Returns exit code, stdout, stderr.
local function child(fx, body, env)
  local script = string.format([[
    local function hwm()
      local f = io.open("/proc/self/status"); local s = f:read("a"); f:close()
      return tonumber(s:match("VmHWM:%%s*(%%d+) kB"))
    end
    local i = gpurent.connect("h1", {config = %q})
    %s]], fx.config, body)
  return T.run("-e " .. T.q(script), {env = env})
end

describe("captured output", function()
  local fx, inst, dir
  setup(function()
    fx = sshd.start{addrs = 1}
    inst = fx:connect(1)
    dir = T.tmpdir()
  end)
  teardown(function()
    if inst then inst:close() end
    if fx then fx:stop() end
    T.rmtree(dir)
  end)

  it("stops 1 GiB of output at the 64 MiB default cap: group signalled, memory near the cap", function()
    -- an argv of this run's own, so the count sees no other run's process
    local n = 1073741824 - math.random(1, 9999)
    local argv = {"head", "-c", tostring(n), "/dev/zero"}
    local code, out, err = child(fx, string.format([[
      local before = hwm()
      local ok, e = pcall(i.sh, i, %q)
      print("ok=" .. tostring(ok) .. " kind=" .. tostring(type(e) == "table" and e.code))
      print("peak_growth_kib=" .. (hwm() - before))
      print("still=" .. i:sh("echo usable").stdout)
      print("msg=" .. tostring(e))]], table.concat(argv, " ")))
    assert.equal(0, code, out .. err)
    assert.matches("ok=false kind=output", out)
    assert.matches("passed the 64 MiB capture cap", out)
    assert.matches("TERM sent to remote process group %d+", out)
    assert.matches("on_line=", out)
    assert.matches("to=FILE", out)
    assert.matches("max_output", out)
    assert.matches("still=usable", out)
    -- the remote command is gone, not blocked on a full channel forever
    assert.equal(0, settle(argv, 0, 5), "remote head survived the cap")
    -- 64 MiB kept, plus read buffers and garbage not yet collected (about 16 MiB
    -- seen): generous. Before the cap it grew by 3.2 GB.
    local growth = tonumber(out:match("peak_growth_kib=(%d+)"))
    -- under a sanitizer the allocator keeps a quarantine of freed memory: RSS is its, not ours
    if not T.sanitizer then assert.is_true(growth < (64 + 64) * 1024, "gpurent grew by " .. growth .. " KiB") end
  end)

  it("takes the cap per call, per instance, from the module and from GPURENT_MAX_OUTPUT", function()
    local three = "head -c 3000000 /dev/zero"
    local ok, err = pcall(inst.sh, inst, three, {max_output = "1M"})
    assert.is_false(ok)
    assert.equal("output", err.code)
    assert.equal(MiB, err.cap)
    assert.matches("passed the 1 MiB capture cap", tostring(err))
    assert.equal(3000000, #inst:sh(three, {max_output = 4 * MiB}).stdout)
    -- streaming is the way out: on_line with capture=false keeps nothing
    local lines = 0
    inst:sh("seq 1 600000", {max_output = "1M", capture = false, on_line = function() lines = lines + 1 end})
    assert.equal(600000, lines)
    -- but a line without end would grow without bound: the cap holds there too
    ok, err = pcall(inst.sh, inst, three, {max_output = "1M", capture = false, on_line = function() end})
    assert.is_false(ok)
    assert.matches("a line on stdout without a newline passed the 1 MiB capture cap", tostring(err))
    -- per instance
    local small = fx:connect(1, {max_output = "1M"})
    ok, err = pcall(small.sh, small, three)
    small:close()
    assert.is_false(ok)
    assert.matches("1 MiB capture cap", tostring(err))
    -- the module's setting, for every call that names none
    instance.max_output = "2M"
    ok, err = pcall(inst.sh, inst, three)
    instance.max_output = nil
    assert.is_false(ok)
    assert.matches("2 MiB capture cap", tostring(err))
    -- the environment, for a whole gpurent process
    local code, out = child(fx, string.format("print(select(2, pcall(i.sh, i, %q)))", three),
      "GPURENT_MAX_OUTPUT=1M")
    assert.equal(0, code)
    assert.matches("1 MiB capture cap", out)
    -- and the session is still usable after all this
    assert.equal("fine\n", inst:sh("echo fine").stdout)
  end)

  it("refuses a bad cap with a clear error naming the value and where it came from", function()
    local ok, err = pcall(function() inst:sh("true", {max_output = "lots"}) end)
    assert.is_false(ok)
    assert.matches("ssh_capture_spec%.lua:%d+: sh: max_output = \"lots\" is not a size", tostring(err))
    ok, err = pcall(function() inst:sh("true", {max_output = -5}) end)
    assert.is_false(ok)
    assert.matches("max_output = %-5 is not a size", tostring(err))
    local code, _, errt = child(fx, 'i:sh("true")', "GPURENT_MAX_OUTPUT=lots")
    assert.equal(1, code)
    assert.matches("GPURENT_MAX_OUTPUT = \"lots\" is not a size", errt)
  end)

  it("to=FILE streams all of stdout to a local file byte for byte, in little memory", function()
    local src = fx.home .. "/to_src.bin"
    assert(os.execute(string.format("head -c %d /dev/urandom > %s", 150 * MiB, T.q(src))))
    -- bytes a careless parser could take for the PID marker, too
    assert(os.execute("printf '\\001gpurent-pid-0 1\\n' >> " .. T.q(src)))
    local dst = dir .. "/to_dst.bin"
    local code, out, err = child(fx, string.format([[
      local before = hwm()
      local r = i:sh(%q, {to = %q})
      print("stdout=[" .. r.stdout .. "] bytes=" .. r.stdout_bytes .. " stderr=[" .. r.stderr .. "]")
      print("peak_growth_kib=" .. (hwm() - before))]], "cat " .. src .. "; echo on-stderr >&2", dst))
    assert.equal(0, code, out .. err)
    local want_hash, want_size = hash.sha256_file(src)
    assert.matches("stdout=%[%] bytes=" .. want_size .. " stderr=%[on%-stderr\n%]", out)
    assert.equal(want_hash, (hash.sha256_file(dst)))
    local growth = tonumber(out:match("peak_growth_kib=(%d+)"))
    if not T.sanitizer then
      assert.is_true(growth < 48 * 1024, "gpurent grew by " .. growth .. " KiB for a streamed 150 MiB")
    end
    os.remove(src)
    os.remove(dst)
  end)

  it("to=FILE that cannot be opened fails before the command runs, naming the file", function()
    local flag = fx.home .. "/to_ran"
    local ok, err = pcall(inst.sh, inst, "touch " .. flag, {to = dir .. "/no/such/dir/out"})
    assert.is_false(ok)
    assert.matches("to=" .. dir:gsub("%p", "%%%0") .. "/no/such/dir/out: cannot open for writing", tostring(err))
    assert.is_nil(T.read(flag))
  end)
end)
