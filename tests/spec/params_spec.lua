-- params_spec: recipe parameter declarations as a user meets them: `gpurent run
-- RECIPE key=value` validates before any of the recipe's own work runs (exit 2 with a
-- message naming the parameter), and `gpurent help RECIPE` prints the declaration.
describe("recipe parameters", function()
  local dir, marker

  local RECIPE = [[
local p = gpurent.recipe {
  description = "Train one job end to end",
  params = {
    {name = "host", type = "string", required = true, help = "ssh alias"},
    {name = "epochs", type = "integer", default = 3, help = "passes over the data"},
    {name = "lr", type = "number", default = 0.001},
    {name = "resume", type = "boolean", default = false},
    {name = "mode", type = "string", default = "fast", allowed = {"fast", "full"}, help = "how hard"},
    {name = "tags", type = "list", default = {"a", "b"}},
  },
}
local f = assert(io.open(MARKER, "w"))
f:write(string.format("host=%s epochs=%s(%s) lr=%s resume=%s mode=%s tags=%s\n", p.host, p.epochs,
  math.type(p.epochs), p.lr, tostring(p.resume), p.mode, table.concat(p.tags, "+")))
f:close()
]]

  before_each(function()
    dir = T.tmpdir()
    marker = dir .. "/ran"
    T.write(dir .. "/train.lua", (RECIPE:gsub("MARKER", string.format("%q", marker))))
  end)
  after_each(function() T.rmtree(dir) end)

  local function run(args) return T.run("run " .. T.q(dir .. "/train.lua") .. " " .. args) end

  it("passes typed values and defaults to a recipe given valid key=value words", function()
    local code, _, err = run("host=a1 epochs=5 resume=yes mode=full tags=x,y")
    assert.are.equal(0, code, err)
    assert.are.equal("host=a1 epochs=5(integer) lr=0.001 resume=true mode=full tags=x+y\n", T.read(marker))
  end)

  it("rejects an unknown key with exit 2, naming it and the accepted ones, before the recipe runs", function()
    local code, _, err = run("host=a1 epoch=5")
    assert.are.equal(2, code)
    assert.matches('unknown parameter "epoch"', err, 1, true)
    assert.matches("host, epochs, lr, resume, mode, tags", err, 1, true)
    assert.is_nil(T.read(marker))
  end)

  it("rejects a missing required parameter with exit 2, naming it, its type and help", function()
    local code, _, err = run("epochs=5")
    assert.are.equal(2, code)
    assert.matches("missing required parameter host=<string> (ssh alias)", err, 1, true)
    assert.is_nil(T.read(marker))
  end)

  it("rejects values of the wrong type with exit 2", function()
    for _, case in ipairs({{"epochs=3.5", 'epochs="3.5" is not a valid integer'},
                           {"epochs=many", 'epochs="many" is not a valid integer'},
                           {"lr=fast", 'lr="fast" is not a valid number'},
                           {"resume=maybe", 'resume="maybe" is not a valid boolean'}}) do
      local code, _, err = run("host=a1 " .. case[1])
      assert.are.equal(2, code, case[1])
      assert.matches(case[2], err, 1, true)
      assert.is_nil(T.read(marker))
    end
  end)

  -- issue 15: "inf" was refused while "1e400" (which overflows to inf) was accepted
  it("rejects non-finite numbers however they are spelled, naming the parameter and value", function()
    for _, case in ipairs({{"lr=1e400", 'lr="1e400" is not a finite number (it reads as inf)'},
                           {"lr=-1e400", 'lr="-1e400" is not a finite number (it reads as -inf)'},
                           {"lr=0x1p2000", 'lr="0x1p2000" is not a finite number (it reads as inf)'},
                           {"lr=inf", 'lr="inf" is not a valid number'},
                           {"lr=nan", 'lr="nan" is not a valid number'},
                           {"epochs=1e400", 'epochs="1e400" is not a valid integer'}}) do
      local code, _, err = run("host=a1 " .. case[1])
      assert.are.equal(2, code, case[1])
      assert.matches(case[2], err, 1, true)
      assert.is_nil(T.read(marker))
    end
    local code, _, err = run("host=a1 lr=1e308")   -- large but finite still passes
    assert.are.equal(0, code, err)
    assert.matches("lr=1e+308", T.read(marker), 1, true)
  end)

  it("rejects a value outside the allowed ones with exit 2, listing them", function()
    local code, _, err = run("host=a1 mode=turbo")
    assert.are.equal(2, code)
    assert.matches('mode="turbo" is not one of: fast, full', err, 1, true)
    assert.is_nil(T.read(marker))
  end)

  it("rejects a parameter given twice and a bare word before --", function()
    local code, _, err = run("host=a1 host=a2")
    assert.are.equal(2, code)
    assert.matches("parameter host given twice", err, 1, true)
    code, _, err = run("host=a1 stray")
    assert.are.equal(2, code)
    assert.matches('got "stray"', err, 1, true)
    assert.is_nil(T.read(marker))
  end)

  it("prints the declaration with gpurent help RECIPE, without running the recipe", function()
    local code, out, err = T.run("help " .. T.q(dir .. "/train.lua"))
    assert.are.equal(0, code, err)
    assert.matches("train.lua: Train one job end to end", out, 1, true)
    assert.matches("host%s+string%s+ssh alias %[required%]", out)
    assert.matches("epochs%s+integer%s+passes over the data %[default 3%]", out)
    assert.matches("mode%s+string%s+how hard %[default fast; one of fast|full%]", out)
    assert.matches("tags%s+list%s+%[default a,b%]", out)
    assert.is_nil(T.read(marker))
  end)

  it("words a shared parameter alike in every shipped lifecycle recipe, and refuses a misspelt shared name", function()
    for _, r in ipairs({"autodl_train", "autodl_sweep", "slurm_train", "slurm_sweep"}) do
      local code, out, err = T.run("help " .. T.q(T.root .. "/recipes/" .. r .. ".lua"))
      assert.are.equal(0, code, err)
      assert.matches("interval%s+number%s+watch: seconds between probes %[default 30%]", out, nil, r)
      assert.matches("box_load%s+string%s+checkpoint load check on the box before the durable sync and the seal", out, nil, r)
      assert.matches("project%s+string%s+project name: the run root is <data>/<project> %[required%]", out, nil, r)
    end
    T.write(dir .. "/typo.lua", 'local shared = require "gpurent.lifecycle.params"\n' ..
      'local p = gpurent.recipe {params = shared.list {"host", "intreval"}}\n' ..
      string.format("io.open(%q, 'w'):close()\n", marker))
    local code, _, err = T.run("run " .. T.q(dir .. "/typo.lua") .. " host=a")
    assert.are_not.equal(0, code)
    assert.matches('typo.lua:2: lifecycle.params: entry 2, "intreval", is no shared parameter', err, 1, true)
    assert.is_nil(T.read(marker))
  end)

  it("refuses a dir or file parameter that names none, before the recipe runs", function()
    T.write(dir .. "/paths.lua", string.format([[
local p = gpurent.recipe {params = {{name = "code", type = "dir", required = true}, {name = "queue", type = "file"}}}
io.open(%q, "w"):write(p.code .. " " .. tostring(p.queue)):close()
]], marker))
    local run = function(args) return T.run("run " .. T.q(dir .. "/paths.lua") .. " " .. args) end
    local code, _, err = run("code=" .. T.q(dir .. "/nope"))
    assert.are.equal(2, code)
    assert.matches('parameter code="[^"]*/nope" names no local directory %(No such file or directory%)', err)
    code, _, err = run("code=" .. T.q(dir) .. " queue=" .. T.q(dir))
    assert.are.equal(2, code)
    assert.matches('parameter queue="[^"]*" is a directory, not a local file: give the path of a local file', err)
    assert.is_nil(T.read(marker))
    code, _, err = run("code=" .. T.q(dir) .. " queue=" .. T.q(dir .. "/paths.lua"))
    assert.are.equal(0, code, err)
    assert.equal(dir .. " " .. dir .. "/paths.lua", T.read(marker))
  end)

  it("says so when a recipe declares nothing", function()
    T.write(dir .. "/plain.lua", "print('hi')\n")
    local code, out = T.run("help " .. T.q(dir .. "/plain.lua"))
    assert.are.equal(0, code)
    assert.matches("declares no parameters", out, 1, true)
  end)
end)
