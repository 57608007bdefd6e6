-- cli_conventions_spec: issue 17's "The CLI", the parts that need no instance, as a
-- user meets them through the real binary: help for every command (from the one
-- command table), -V, usage errors on stderr with exit 2, recipes by name from
-- outside the source tree (installed, trusted project, library), `gpurent recipes`,
-- hints that work as printed, repl without HOST, NO_COLOR / TERM=dumb, errors
-- without gpurent's internal file:line, money as exact decimals in JSON.
local json = require "gpurent.util.json"
local lfs = require "lfs"

local function command_names()
  local names = {}
  local code, out = T.run("help")
  assert.are.equal(0, code)
  for line in out:match("commands:\n(.-)\n[^ ]"):gmatch("[^\n]+") do names[#names + 1] = line:match("^  (%S+)") end
  return names, out
end

describe("gpurent help and usage", function()
  it("lists every command module in the top-level help, host, verify and trust among them", function()
    local names, out = command_names()
    local listed = {}
    for _, n in ipairs(names) do listed[n] = true end
    for file in lfs.dir(T.root .. "/lua/gpurent/commands") do
      local name = file:match("^(.-)%.lua$")
      if name then assert.truthy(listed[name], "gpurent help omits the command " .. name .. "\n" .. out) end
    end
    for _, n in ipairs({"run", "recipes", "exec", "logs", "ssh", "host", "verify", "trust", "version", "help"}) do
      assert.truthy(listed[n], "gpurent help omits " .. n)
    end
  end)

  it("gives `help CMD` and `CMD --help` for every command, on stdout with exit 0", function()
    local names = command_names()
    assert.truthy(#names >= 15)
    for _, n in ipairs(names) do
      local code, out, err = T.run("help " .. n)
      assert.are.equal(0, code, "help " .. n .. ": " .. err)
      assert.matches("^usage:%s+gpurent " .. n:gsub("%-", "%%-"), out, "help " .. n)
      local code2, out2, err2 = T.run(n .. " --help")
      assert.are.equal(0, code2, n .. " --help: " .. err2)
      assert.matches("^usage:%s+gpurent " .. n:gsub("%-", "%%-"), out2, n .. " --help")
      assert.are.equal("", err2)
    end
  end)

  it("prints the version once for -V and --version", function()
    for _, flag in ipairs({"-V", "--version", "version"}) do
      local code, out, err = T.run(flag)
      assert.are.equal(0, code, flag)
      assert.matches("^gpurent %d+%.%d+%.%d+\n", out)
      assert.are.equal("", err)
    end
  end)

  it("names an unknown option on one stderr line with exit 2", function()
    for _, word in ipairs({"-X", "--bogus"}) do
      local code, out, err = T.run(word)
      assert.are.equal(2, code)
      assert.are.equal("", out)
      local _, lines = err:gsub("\n", "")
      assert.are.equal(1, lines, err)
      assert.matches("^gpurent: unknown option " .. word:gsub("%-", "%%-"), err)
    end
  end)

  it("puts usage errors on stderr with exit 2 (a command without its words, a bad flag, help of nothing)", function()
    for _, args in ipairs({"billing", "status --frobnicate", "exec", "logs", "help no_such_thing_at_all",
                           "version extra", "recipes extra"}) do
      local code, out, err = T.run(args)
      assert.are.equal(2, code, args .. ": " .. out .. err)
      assert.are.equal("", out, args)
      assert.matches("^gpurent: ", err, args)
    end
  end)

  it("refuses `repl` without HOST, naming --local, instead of a quiet local REPL", function()
    local code, out, err = T.run("repl")
    assert.are.equal(2, code)
    assert.are.equal("", out)
    assert.matches("repl needs HOST", err)
    assert.matches("gpurent repl %-%-local", err)
    local code2, _, err2 = T.run("repl somehost --local")
    assert.are.equal(2, code2)
    assert.matches("contradict", err2)
  end)
end)

describe("recipes by name", function()
  local dir, env
  before_each(function()
    dir = T.tmpdir()
    env = "XDG_CONFIG_HOME=" .. T.q(dir .. "/config") .. " XDG_DATA_HOME=" .. T.q(dir .. "/data") ..
      " GPURENT_STATE_DIR=" .. T.q(dir .. "/state")
  end)
  after_each(function() T.rmtree(dir) end)

  it("finds gpurent's installed recipes from outside the source tree", function()
    local code, out, err = T.run("help autodl_train", {cwd = dir, env = env})
    assert.are.equal(0, code, err)
    assert.matches("Train one job on AutoDL", out)
    assert.matches("\n  host ", out)
    code, out, err = T.run("help recipes/autodl_train.lua", {cwd = dir, env = env})
    assert.are.equal(0, code, err)
    assert.matches("parameters:", out)
    -- run by name: found and validated (a missing parameter), not "cannot open recipe"
    code, out, err = T.run("run autodl_train", {cwd = dir, env = env})
    assert.are.equal(2, code, out .. err)
    assert.matches("missing required parameter host", err)
    code, _, err = T.run("run recipes/autodl_train.lua host=h", {cwd = dir, env = env})
    assert.are.equal(2, code)
    assert.matches("missing required parameter project", err)
  end)

  it("names what it looked for when no recipe has the name", function()
    local code, _, err = T.run("run no_such_recipe", {cwd = dir, env = env})
    assert.are.equal(2, code)
    assert.matches('no recipe "no_such_recipe"', err)
    assert.matches("gpurent recipes", err)
  end)

  it("runs a project's recipe by name only once the project is trusted", function()
    local proj = dir .. "/proj"
    os.execute("mkdir -p " .. T.q(proj .. "/recipes"))
    T.write(proj .. "/gpurent.lock", "")
    T.write(proj .. "/recipes/hello.lua",
      'local p = gpurent.recipe{description = "Say hello", params = {{name = "who", default = "world"}}}\n' ..
      'print("hello " .. p.who)\n')
    local code, out, err = T.run("run hello who=you", {cwd = proj, env = env})
    assert.are.equal(3, code, out .. err)
    assert.are.equal("", out)
    assert.matches("gpurent trust", err)
    assert.matches("gpurent run " .. proj:gsub("%p", "%%%0") .. "/recipes/hello%.lua", err)
    -- listed, but not read (an untrusted file is not run, not even to its declaration)
    code, out = T.run("recipes", {cwd = proj, env = env})
    assert.are.equal(0, code)
    assert.matches("hello +project +%(untrusted", out)
    assert.are.equal(0, (T.run("trust", {cwd = proj, env = env})))
    code, out, err = T.run("run hello who=you", {cwd = proj, env = env})
    assert.are.equal(0, code, err)
    assert.are.equal("hello you\n", out)
    code, out = T.run("recipes --json", {cwd = proj, env = env})
    assert.are.equal(0, code)
    local doc = json.decode(out, "recipes")
    local seen = {}
    for _, r in ipairs(doc.recipes) do seen[r.name .. "@" .. r.source] = r end
    assert.are.equal("Say hello", seen["hello@project"].description)
    assert.is_true(seen["hello@project"].trusted)
    assert.matches("end to end", seen["autodl_train@installed"].description)
    assert.truthy(seen["demo@installed"])
  end)

  it("runs and lists a team library's recipe as LIB/NAME", function()
    local src = dir .. "/teamsrc"
    os.execute("mkdir -p " .. T.q(src .. "/recipes"))
    T.write(src .. "/recipes/greet.lua", 'gpurent.recipe{description = "Greet from the team"}\nprint("team greets")\n')
    T.write(src .. "/util.lua", "return {}\n")
    assert(os.execute("cd " .. T.q(src) .. " && git init -q && git add -A && git -c user.email=t@t -c user.name=t " ..
      "commit -qm init"))
    local code, out, err = T.run("lib add team " .. T.q(src), {cwd = dir, env = env})
    assert.are.equal(0, code, out .. err)
    code, out, err = T.run("run team/recipes/greet", {cwd = dir, env = env})
    assert.are.equal(0, code, err)
    assert.are.equal("team greets\n", out)
    code, out = T.run("recipes", {cwd = dir, env = env})
    assert.are.equal(0, code)
    assert.matches("team/recipes/greet +library team +Greet from the team", out)
    assert.not_matches("team/util", out)
  end)

  it("prints hints that are commands which work as printed", function()
    -- every `gpurent run X` a recipe or library hint names must resolve to a recipe
    local hints = {}
    for _, f in ipairs({"recipes/autodl_train.lua", "recipes/autodl_sweep.lua", "recipes/watch.lua"}) do
      local text = T.read(T.root .. "/" .. f)
      for target in text:gmatch("gpurent run ([%w_/%.%%]+)") do hints[#hints + 1] = {f, target} end
      for verb in text:gmatch("`gpurent (%l[%w-]*)") do hints[#hints + 1] = {f, "verb:" .. verb} end
      for verb in text:gmatch(": gpurent (%l[%w-]*)") do hints[#hints + 1] = {f, "verb:" .. verb} end
    end
    for _, h in ipairs(hints) do
      local target = h[2]
      if target:match("^verb:") then
        local code, _, err = T.run("help " .. target:sub(6), {cwd = dir, env = env})
        assert.are.equal(0, code, h[1] .. " hints at `gpurent " .. target:sub(6) .. "`: " .. err)
      elseif not target:find("%", 1, true) then
        local code, _, err = T.run("help " .. T.q(target), {cwd = dir, env = env})
        assert.are.equal(0, code, h[1] .. " hints at `gpurent run " .. target .. "`: " .. err)
      end
    end
    -- the teardown hint (worded by the platform, said by the lifecycle engine) names a
    -- command that exists with the flags it uses
    local text = T.read(T.root .. "/lua/gpurent/platform/autodl/init.lua")
    local hint = text:match('function autodl%.hints%.teardown_reminder.-\nend\n')
    assert.truthy(hint, "the AutoDL platform lost its teardown hint")
    assert.not_matches("%.%.%.", hint)
    local code, usage = T.run("help billing")
    assert.are.equal(0, code)
    for flag in hint:gmatch("(%-%-[%w-]+)") do
      assert.truthy(usage:find(flag, 1, true), "the hint's " .. flag .. " is not an option of billing")
    end
  end)
end)

describe("what a person reads", function()
  it("shows `gpurent: message` without gpurent's internal file:line; --verbose keeps it with the traceback", function()
    -- a runtime error inside gpurent's own module (pretty.lua) given a bad argument
    local code, _, err = T.run("-e " .. T.q('require("gpurent.util.pretty").format({}, 5)'))
    assert.are.equal(1, code)
    assert.matches("^gpurent: attempt to index a number value", err)
    assert.not_matches("pretty%.lua", err)
    assert.not_matches("%.lua:%d+:", err)
    local code2, _, err2 = T.run("--verbose -e " .. T.q('require("gpurent.util.pretty").format({}, 5)'))
    assert.are.equal(1, code2)
    assert.matches("pretty%.lua:%d+: attempt to index", err2)
    assert.matches("stack traceback", err2)
    -- a host that cannot resolve (the issue's ssh.lua:277: case)
    local code3, _, err3 = T.run("-e " .. T.q('gpurent.connect("box.internal.invalid")'))
    assert.are.equal(1, code3)
    assert.matches("^gpurent: .*box%.internal%.invalid", err3)
    assert.not_matches("ssh%.lua:%d+:", err3)
    -- a position in the person's own code stays
    local code4, _, err4 = T.run("-e " .. T.q('error("mine")'))
    assert.are.equal(1, code4)
    assert.matches("^gpurent: %(command line%):1: mine", err4)
  end)

  local function with_tty(cmd, envs)
    -- script(1) gives the command a real terminal and copies its raw bytes out
    local p = io.popen("env " .. envs .. " script -qec " .. T.q(T.q(T.bin) .. " " .. cmd) .. " /dev/null 2>&1")
    local out = p:read("a")
    p:close()
    return out
  end

  it("decides colour by NO_COLOR and TERM=dumb as well as by the terminal", function()
    local probe = "-e " .. T.q('print(require("gpurent.util.pretty").use_color(1))')
    assert.matches("true", with_tty(probe, "TERM=xterm"))
    assert.matches("false", with_tty(probe, "TERM=xterm NO_COLOR=1"))
    assert.matches("false", with_tty(probe, "TERM=dumb"))
    assert.matches("true", with_tty(probe, "TERM=xterm NO_COLOR="))  -- empty means unset (no-color.org)
    local _, out = T.run(probe, {env = "TERM=xterm"})                  -- not a terminal
    assert.are.equal("false\n", out)
  end)

  it("prints no colour from `check` under NO_COLOR or TERM=dumb, on a terminal", function()
    local state = T.tmpdir()
    local base = "GPURENT_STATE_DIR=" .. T.q(state)
    local coloured = with_tty("check local --only U-CRLF", base .. " TERM=xterm")
    assert.truthy(coloured:find("\27[", 1, true), "check shows no colour on a terminal at all: " .. coloured)
    for _, e in ipairs({"NO_COLOR=1 TERM=xterm", "TERM=dumb"}) do
      local out = with_tty("check local --only U-CRLF", base .. " " .. e)
      assert.falsy(out:find("\27[", 1, true), e .. ": colour printed: " .. out)
      assert.matches("U%-CRLF", out)
    end
    T.rmtree(state)
  end)
end)

describe("--json where a table or a result line is printed", function()
  it("verify --json and trust --list --json print one JSON document", function()
    local dir = T.tmpdir()
    os.execute("mkdir -p " .. T.q(dir .. "/res/cell1"))
    T.write(dir .. "/res/cell1/best.pth", "weights")
    T.write(dir .. "/res/cell1/best_metrics.json", "{}")
    T.write(dir .. "/roster", "cell1\n")
    local code, out, err = T.run("verify " .. T.q(dir .. "/res") .. " --build " .. T.q(dir .. "/roster") ..
      " --run-id r1 --json")
    assert.are.equal(0, code, err)
    assert.are.equal(2, json.decode(out, "verify --build --json").files)
    code, out, err = T.run("verify " .. T.q(dir .. "/res") .. " --load-cmd 'test -s {}' --json")
    assert.are.equal(0, code, err)
    local doc = json.decode(out, "verify --json")
    assert.are.equal("r1", doc.run_id)
    assert.matches("PULL_VERIFIED%.json$", doc.wrote)
    local env = "XDG_CONFIG_HOME=" .. T.q(dir .. "/config")
    assert.are.equal(0, (T.run("trust " .. T.q(dir .. "/res"), {env = env})))
    code, out = T.run("trust --list --json", {env = env})
    assert.are.equal(0, code)
    assert.are.equal(1, #json.decode(out, "trust --list --json").dirs)
    T.rmtree(dir)
  end)

  it("host list --json lists the aliases gpurent keeps", function()
    local dir = T.tmpdir()
    local env = "HOME=" .. T.q(dir)
    local code, out, err = T.run("host add box1 'ssh -p 2222 root@127.0.0.1' --no-contact", {env = env})
    assert.are.equal(0, code, out .. err)
    code, out, err = T.run("host list --json", {env = env})
    assert.are.equal(0, code, err)
    local doc = json.decode(out, "host list --json")
    assert.are.same({name = "box1", user = "root", host = "127.0.0.1", port = 2222}, doc.hosts[1])
    T.rmtree(dir)
  end)
end)

describe("money in JSON", function()
  it("is a decimal string in thousandths, never binary-float digits", function()
    local money = require "gpurent.util.money"
    assert.are.equal("0.088", money.decimal(0.087999999999999995))
    assert.are.equal("1.500", money.decimal(1.5))
    assert.are.equal("-0.010", money.decimal(-0.01))
    assert.are.equal("0.000", money.decimal(-0.0001))
    assert.are.equal("12.35", money.decimal(12.345, 2))
    assert.has_error(function() money.decimal(0 / 0) end)
  end)

  it("`status --json` and `cost --json` carry money as exact decimals", function()
    local state = T.tmpdir()
    local env = "GPURENT_STATE_DIR=" .. T.q(state)
    -- a meter that ran 0.088 yuan's worth: 3.52 yuan/h for 90 s
    local setup = [[
      local L = require("gpurent.state.ledger").open()
      L:upsert_instance{name = "box1", profile = "autodl", provider_id = "pro-1", price_per_hour = 3.52}
      local t = os.time()
      L:record_billing{instance = "box1", action = "power_on", outcome = "ok", meter = "on", price_per_hour = 3.52, at = t - 190}
      L:record_billing{instance = "box1", action = "power_off", outcome = "ok", meter = "off", at = t - 100}
      L:close()]]
    local c0, _, e0 = T.run("-e " .. T.q(setup), {env = env})
    assert.are.equal(0, c0, e0)
    local code, out, err = T.run("status --json", {env = env})
    assert.are.equal(0, code, err)
    assert.not_matches("%d%.%d%d%d%d%d%d", out)
    local doc = json.decode(out, "status")
    assert.are.equal("0.088", doc.instances[1].accrued_cost)
    code, out, err = T.run("cost --json", {env = env})
    assert.are.equal(0, code, err)
    assert.not_matches("%d%.%d%d%d%d%d%d", out)
    doc = json.decode(out, "cost")
    assert.are.equal("0.088", doc.instances[1].cost)
    T.rmtree(state)
  end)
end)
