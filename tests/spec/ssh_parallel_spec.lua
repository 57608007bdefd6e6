-- ssh_parallel_spec: gpurent.parallel fans out over 32 real sshd addresses (two
-- daemons, 16 addresses each) plus one dead host, from one process.
local sshd = require "sshd"

describe("gpurent.parallel", function()
  local a, b, dead, cfg
  setup(function()
    a = sshd.start{addrs = 16, first_addr = 1, alias_prefix = "a"}
    b = sshd.start{addrs = 15, first_addr = 17, alias_prefix = "b"}
    dead = sshd.start{addrs = 1, first_addr = 32, alias_prefix = "dead"}
    dead:pause()                          -- accepts TCP, never answers: a hung host
    cfg = a.dir .. "/all_config"
    local f = assert(io.open(cfg, "w"))
    for _, fx in ipairs({a, b, dead}) do f:write(T.read(fx.config), "\n") end
    f:close()
    os.execute("cat " .. b.known_hosts .. " " .. dead.known_hosts .. " >> " .. a.known_hosts)
    -- every Host block names its own known_hosts; point them all at the merged one
    local text = T.read(cfg):gsub("UserKnownHostsFile [^\n]+", "UserKnownHostsFile " .. a.known_hosts)
    text = text:gsub("IdentityFile [^\n]+", "IdentityFile " .. a.key)
    T.write(cfg, text)
    os.execute("cat " .. a.key .. ".pub >> " .. b.home .. "/.ssh/authorized_keys")
  end)
  teardown(function()
    for _, fx in ipairs({a, b, dead}) do if fx then fx:stop() end end
  end)

  local function hosts()
    local list = {}
    for _, x in ipairs(a.aliases) do list[#list + 1] = x end
    for _, x in ipairs(b.aliases) do list[#list + 1] = x end
    list[#list + 1] = dead.aliases[1]
    return list
  end

  it("runs 32 hosts concurrently; the dead one costs only its own timeout", function()
    local list = hosts()
    assert.equal(32, #list)
    local t0 = gpurent.now()
    local res = gpurent.parallel(list, function(alias)
      local inst = gpurent.connect(alias, {config = cfg, connect_timeout = 2})
      local r = inst:sh("sleep 1; echo $SSH_CONNECTION", {check = true})
      inst:close()
      return r.stdout:match("(%S+) %d+%s*$")      -- the server address
    end, {limit = 64})
    local wall = gpurent.now() - t0
    assert.equal(32, #res)
    assert.equal(1, res.failed)
    for i = 1, 31 do
      assert.is_true(res[i].ok, tostring(res[i].error))
      assert.equal(i <= 16 and a.addrs[i] or b.addrs[i - 16], res[i].value)
    end
    assert.is_false(res[32].ok)
    assert.equal("dead1", res[32].item)
    assert.matches("timed out", tostring(res[32].error))
    assert.matches("127%.0%.0%.32", tostring(res[32].error))
    -- 31 one-second commands and a 2 s timeout, concurrently: not 33 s
    assert.is_true(wall < 4.5, "wall " .. wall)
  end)

  it("honours limit and keeps results in item order", function()
    local t0 = gpurent.now()
    local running, peak = 0, 0
    local res = gpurent.parallel({1, 2, 3, 4, 5, 6}, function(n)
      running = running + 1
      peak = math.max(peak, running)
      local inst = gpurent.connect(a.aliases[n], {config = cfg})
      inst:sh("sleep 0.5")
      inst:close()
      running = running - 1
      if n == 4 then error("item four fails") end
      return n * 10
    end, {limit = 3})
    assert.equal(3, peak)
    assert.is_true(gpurent.now() - t0 >= 1.0)
    assert.same({10, 20, 30}, {res[1].value, res[2].value, res[3].value})
    assert.matches("item four fails", tostring(res[4].error))
    assert.equal(60, res[6].value)
    assert.equal(1, res.failed)
  end)

  it("runs several commands on one instance from several tasks safely", function()
    local inst = gpurent.connect(a.aliases[1], {config = cfg})
    local res = gpurent.parallel({1, 2, 3, 4, 5, 6, 7, 8}, function(n)
      return inst:sh("echo " .. n).stdout
    end)
    inst:close()
    for n = 1, 8 do assert.equal(n .. "\n", res[n].value) end
  end)
end)
