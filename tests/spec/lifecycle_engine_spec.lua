-- lifecycle_engine_spec.lua: gpurent.lifecycle without a box: recipes made of inline
-- phases, run through the real binary with their own ledger. A composition mistake
-- (a need nobody produces, an undeclared or overwritten key, a phase writing the
-- context, options for a phase not in the list) is a usage error naming the phase and
-- the key, raised before the first phase runs; replace/insert_after compose a list;
-- a failure keeps its whole reason; Ctrl-C after the job started is "detached", before
-- it "interrupted" (exit 130); a refused ending after the results is a success.
local ledger = require "gpurent.state.ledger"

local PRELUDE = [[
local lifecycle = require "gpurent.lifecycle"
local errors = require "gpurent.util.errors"
local r = require("gpurent.lifecycle.run").new{host = "h1", project = "p", id = "p-1", recipe = "engine-spec"}
local function ph(name, needs, produces, fn)
  return {name = name, needs = needs, produces = produces, run = fn or function() print("ran " .. name) end}
end
]]

local function run_recipe(body)
  local dir = T.tmpdir()
  local file = T.write(dir .. "/recipe.lua", PRELUDE .. body .. "\n")
  local code, out, err = T.run("run " .. T.q(file), {cwd = dir, env = "GPURENT_STATE_DIR=" .. T.q(dir .. "/state")})
  local L = ledger.open(dir .. "/state/ledger.sqlite")
  local row = L:run("p-1")
  local phases = {}
  for _, e in ipairs(row and L:run_history("p-1") or {}) do
    if e.kind == "phase" then phases[#phases + 1] = e.name .. "=" .. tostring(e.outcome) .. (e.detail and (":" .. e.detail) or "") end
  end
  L:close()
  T.rmtree(dir)
  return code, out, err, row and row.status, phases
end

describe("gpurent.lifecycle composition", function()
  it("refuses a need no earlier phase produces, naming the phase and the key, before anything runs", function()
    local code, out, err, status, phases = run_recipe([[
lifecycle.run(r, {ph("a", {"run"}, {"x"}), ph("b", {"run", "y"}, {})})]])
    assert.are.equal(2, code, out .. err)
    assert.truthy(err:find('phase b needs "y", which no earlier phase produces', 1, true), err)
    assert.falsy(out:find("ran a", 1, true), out)
    assert.are.same({}, phases)
    assert.are.equal("running", status)
  end)

  it("refuses a key a phase returns without declaring it", function()
    local code, out, err = run_recipe([[
lifecycle.run(r, {ph("a", {"run"}, {"x"}, function() return {x = 1, z = 2} end)})]])
    assert.are.equal(2, code, out .. err)
    assert.truthy(err:find('phase a returned "z", which it does not declare in produces {x}', 1, true), err)
  end)

  it("refuses a phase overwriting what another produced, and a phase writing the context", function()
    local code, out, err = run_recipe([[
lifecycle.run(r, {ph("a", {"run"}, {"x"}, function() return {x = 1} end), ph("b", {"run"}, {"x"}, function() return {x = 2} end)})]])
    assert.are.equal(2, code, out .. err)
    assert.truthy(err:find('phase b would overwrite "x", produced by a', 1, true), err)
    code, out, err = run_recipe([[
lifecycle.run(r, {ph("a", {"run"}, {}, function(ctx) ctx.python = "x" end)})]])
    assert.are.equal(2, code, out .. err)
    assert.truthy(err:find("phase a writes ctx.python", 1, true), err)
  end)

  it("refuses options for a phase that is not in the list", function()
    local code, out, err = run_recipe([[
lifecycle.run(r, {ph("a", {"run"}, {})}, {options = {aa = {}}})]])
    assert.are.equal(2, code, out .. err)
    assert.truthy(err:find('options for "aa", which is not a phase of the list (a)', 1, true), err)
    assert.falsy(out:find("ran a", 1, true), out)
  end)

  it("composes with replace and insert_after; each phase gets its options and what earlier ones produced", function()
    local code, out, err, status, phases = run_recipe([[
local list = {ph("a", {"run"}, {"x"}, function(_, o) return {x = o.start} end), ph("b", {"x"}, {"y"})}
list = lifecycle.replace(list, "b", ph("b2", {"x", "mid"}, {"y"}, function(ctx) return {y = ctx.x + ctx.mid} end))
list = lifecycle.insert_after(list, "a", ph("mine", {"x"}, {"mid"}, function(ctx) return {mid = ctx.x * 10} end))
local ctx = lifecycle.run(r, list, {options = {a = {start = 4}}, tell = false})
print(table.concat(lifecycle.names(list), ","), ctx.y)]])
    assert.are.equal(0, code, out .. err)
    assert.truthy(out:find("a,mine,b2\t44", 1, true), out)
    assert.are.same({"a=ok", "mine=ok", "b2=ok"}, phases)
    assert.are.equal("succeeded", status)
  end)
end)

describe("gpurent.lifecycle endings", function()
  it("a failure keeps its whole reason on the terminal and in the ledger", function()
    local code, out, err, status, phases = run_recipe([[
lifecycle.run(r, {ph("pull", {"run"}, {}, function() error("verify /x/run1:\n  best.pth: does not load (exit 1)", 0) end)})]])
    assert.are.equal(1, code, out .. err)
    assert.truthy(out:find("[run] run p-1 FAILED: verify /x/run1:\n[run]   best.pth: does not load (exit 1)", 1, true), out)
    assert.are.same({"pull=failed:verify /x/run1:; best.pth: does not load (exit 1)"}, phases)
    assert.are.equal("failed", status)
  end)

  it("Ctrl-C after the job started detaches (the job keeps running); before, it is an interruption; exit 130", function()
    local code, out, err, status, phases = run_recipe([[
lifecycle.run(r, {ph("launch", {"run"}, {"job"}, function() return {job = {attempt = 1}} end),
  ph("watch", {"job"}, {}, function() errors.raise("interrupted", "interrupted", 0) end)})]])
    assert.are.equal(130, code, out .. err)
    assert.truthy(out:find("the training keeps running on h1; re-attach from any shell with `gpurent watch p-1`", 1, true), out)
    assert.falsy((out .. err):find("FAILED", 1, true), out .. err)
    assert.are.equal("detached", status)
    assert.are.same({"launch=ok", "watch=interrupted:interrupted"}, phases)
    code, out, err, status = run_recipe([[
lifecycle.run(r, {ph("audit", {"run"}, {}, function() errors.raise("interrupted", "interrupted", 0) end),
  ph("launch", {"run"}, {"job"})})]])
    assert.are.equal(130, code, out .. err)
    assert.truthy(out:find("run p-1 interrupted during audit, before the job was launched", 1, true), out)
    assert.are.equal("interrupted", status)
  end)

  it("a refused ending after the results is reported with the success, not as FAILED", function()
    local code, out, err, status, phases = run_recipe([[
lifecycle.run(r, {ph("pull", {"run"}, {"verified"}, function() return {verified = "/x/run1"} end),
  {name = "teardown", needs = {"verified"}, ending = true, run = function() errors.refuse("gate: power_off h1: refused", 0) end}})]])
    assert.are.equal(3, code, out .. err)
    assert.truthy(out:find("[run] run p-1 succeeded; teardown refused: gate: power_off h1: refused", 1, true), out)
    assert.truthy(out:find("[teardown] refused: the meter is still ON for h1", 1, true), out)
    assert.falsy((out .. err):find("FAILED", 1, true), out .. err)
    assert.are.equal("succeeded", status)
    assert.are.same({"pull=ok", "teardown=failed:gate: power_off h1: refused"}, phases)
  end)
end)
