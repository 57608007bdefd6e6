-- cli_spec: the command line as a user meets it: run with params and args, -e,
-- version, help, exit codes, error messages with file:line, SIGINT, search path.
describe("gpurent CLI", function()
  local dir
  before_each(function() dir = T.tmpdir() end)
  after_each(function() T.rmtree(dir) end)

  it("runs a recipe with key=value params and positional args after --", function()
    local r = T.write(dir .. "/r.lua", 'print(params.host, params.n, arg[0] ~= nil, arg[1], arg[2], select("#", ...))')
    local code, out = T.run("run " .. T.q(r) .. " host=box n=3 -- one two")
    assert.are.equal(0, code)
    assert.are.equal("box\t3\ttrue\tone\ttwo\t3\n", out)
  end)

  it("refuses a word before -- that is not key=value, with exit 2", function()
    local r = T.write(dir .. "/r.lua", 'print("ran")')
    local code, out, err = T.run("run " .. T.q(r) .. " stray")
    assert.are.equal(2, code)
    assert.are.equal("", out)
    assert.matches('expected key=value before %-%-, got "stray"', err)
  end)

  it("evaluates -e code with the gpurent library loaded", function()
    local code, out = T.run("-e " .. T.q('print(type(gpurent), gpurent.version)'))
    assert.are.equal(0, code)
    assert.matches("^table\t%d+%.%d+%.%d+\n$", out)
  end)

  it("prints the versions of gpurent and every library it links", function()
    local code, out = T.run("version")
    assert.are.equal(0, code)
    for _, lib in ipairs({"^gpurent %d", "\nLua 5%.4", "\nlibssh2 %d", "\nlibyaml %d", "\nOpenSSL %d",
                          "\nlibcurl %d", "\nSQLite 3"}) do
      assert.matches(lib, out)
    end
  end)

  it("documents the exit codes in help", function()
    local code, out = T.run("help")
    assert.are.equal(0, code)
    for _, c in ipairs({"0 +ok", "1 +recipe or runtime error", "2 +usage error", "3 +refused by a safety gate", "130 +interrupted"}) do
      assert.matches(c, out)
    end
  end)

  it("gives --help on run and exits 2 with usage when the recipe is missing", function()
    local code, out = T.run("run --help")
    assert.are.equal(0, code)
    assert.matches("usage: gpurent run RECIPE", out)
    local code2, _, err2 = T.run("run")
    assert.are.equal(2, code2)
    assert.matches("usage: gpurent run", err2)
  end)

  it("names a missing recipe file and exits 2", function()
    local code, _, err = T.run("run " .. T.q(dir .. "/nope.lua"))
    assert.are.equal(2, code)
    assert.matches("cannot open recipe .*nope%.lua: No such file or directory", err)
  end)

  it("reports a recipe syntax error as file:line and exits 1", function()
    local r = T.write(dir .. "/bad.lua", "local a = 1\nlocal b = = 2\n")
    local code, _, err = T.run("run " .. T.q(r))
    assert.are.equal(1, code)
    assert.matches("bad%.lua:2: unexpected symbol near '='", err)
  end)

  it("prints runtime errors as file:line: message; --verbose adds the traceback", function()
    local r = T.write(dir .. "/boom.lua", "\n\nerror('disk on fire')\n")
    local code, _, err = T.run("run " .. T.q(r))
    assert.are.equal(1, code)
    assert.matches("boom%.lua:3: disk on fire\n$", err)
    assert.not_matches("stack traceback", err)
    local code2, _, err2 = T.run("--verbose run " .. T.q(r))
    assert.are.equal(1, code2)
    assert.matches("stack traceback", err2)
  end)

  it("exits 3 on a gate refusal and 2 on a usage error raised by Lua code", function()
    local code, _, err = T.run("-e " .. T.q('gpurent.refuse("free space below the floor")'))
    assert.are.equal(3, code)
    assert.matches("free space below the floor", err)
    local code2 = T.run("-e " .. T.q('gpurent.usage_error("bad flag")'))
    assert.are.equal(2, code2)
  end)

  it("does not crash on non-string errors", function()
    local code, _, err = T.run("-e " .. T.q('error({1,2,3})'))
    assert.are.equal(1, code)
    assert.matches("error object is not a string", err)
    local code2 = T.run("-e " .. T.q('error()'))
    assert.are.equal(1, code2)
  end)

  it("rejects an unknown command with exit 2", function()
    local code, _, err = T.run("frobnicate")
    assert.are.equal(2, code)
    assert.matches("unknown command 'frobnicate'", err)
  end)

  it("raises 'interrupted' on SIGINT, runs cleanup, and exits 130", function()
    local ready, cleaned = dir .. "/ready", dir .. "/cleaned"
    local r = T.write(dir .. "/long.lua", string.format([[
      local guard <close> = setmetatable({}, {__close = function()
        local f = io.open(%q, "w"); f:write("yes"); f:close()
      end})
      io.open(%q, "w"):close()
      gpurent.sleep(30)
    ]], cleaned, ready))
    local pidfile = dir .. "/pid"
    os.execute(string.format("(%s run %s >/dev/null 2>%s/err & echo $! > %s)", T.q(T.bin), T.q(r), dir, pidfile))
    local pid = T.read(pidfile):match("%d+")
    local deadline = os.time() + 10
    while not T.read(ready) and os.time() < deadline do os.execute("sleep 0.05") end
    assert.truthy(T.read(ready), "recipe never started")
    os.execute("kill -INT " .. pid)
    -- wait for exit, bounded; collect the exit code through /proc is not possible
    -- for a non-child, so the shell waits instead
    deadline = os.time() + 10
    while os.execute("kill -0 " .. pid .. " 2>/dev/null") and os.time() < deadline do os.execute("sleep 0.05") end
    assert.are.equal("yes", T.read(cleaned))
    assert.matches("interrupted", T.read(dir .. "/err"))
  end)

  it("exits with code 130 when interrupted during pure Lua work", function()
    local r = T.write(dir .. "/spin.lua", 'io.open(arg[1], "w"):close(); while true do end')
    local script = string.format([[
      %s run %s -- %s/ready & pid=$!
      for i in $(seq 200); do [ -e %s/ready ] && break; sleep 0.05; done
      kill -INT $pid; wait $pid; echo "rc=$?"
    ]], T.q(T.bin), T.q(r), dir, dir)
    local p = io.popen("bash -c " .. T.q(script) .. " 2>&1")
    local out = p:read("a")
    p:close()
    assert.matches("rc=130", out)
    assert.matches("interrupted", out)
  end)

  it("searches the recipe's dir, the project's lua/, gpurent's library, then GPURENT_PATH", function()
    local extra = dir .. "/extra"
    os.execute("mkdir -p " .. T.q(extra) .. " " .. T.q(dir .. "/proj/lua") .. " " .. T.q(dir .. "/rdir"))
    T.write(dir .. "/proj/gpurent.lock", "")
    T.write(extra .. "/teamlib.lua", 'return "from GPURENT_PATH"')
    T.write(dir .. "/rdir/helper.lua", 'return "from recipe dir"')
    T.write(dir .. "/proj/lua/projmod.lua", 'return "from project"')
    local r = T.write(dir .. "/rdir/r.lua", 'print((require "helper")); print((require "projmod")); print((require "teamlib")); print(gpurent.path())')
    local env = "GPURENT_PATH=" .. T.q(extra) .. " XDG_CONFIG_HOME=" .. T.q(dir .. "/config")
    -- the project's lua/ is searched once the person trusts the project (issue 14)
    assert.are.equal(0, (T.run("trust", {env = env, cwd = dir .. "/proj"})))
    local code, out, err = T.run("run " .. T.q(r), {env = env, cwd = dir .. "/proj"})
    assert.are.equal(0, code, err)
    local lines = {}
    for l in out:gmatch("[^\n]+") do lines[#lines + 1] = l end
    assert.are.same({"from recipe dir", "from project", "from GPURENT_PATH"}, {lines[1], lines[2], lines[3]})
    local dirs = {}
    for d in lines[4]:gmatch("[^:]+") do dirs[#dirs + 1] = d end
    assert.are.equal(dir .. "/rdir", dirs[1])
    assert.are.equal(dir .. "/proj/lua", dirs[2])
    assert.matches("/lua$", dirs[3])
    assert.are.equal(extra, dirs[#dirs])
  end)

  it("loads lfs and cjson with an empty environment (no LUA_PATH/LUA_CPATH)", function()
    local code, out = T.run("-e " .. T.q('print(require("lfs")._VERSION ~= nil, require("cjson").encode({1}))'),
      {env = "env -i"})
    assert.are.equal(0, code)
    assert.are.equal("true\t[1]\n", out)
  end)
end)
