-- queue_budget_spec.lua: the budget gates every sweep cell, not only the sweep's launch
-- (issue 18), on the simulated AutoDL: the box has no API token, so the launch hands
-- the on-box queue (remote/run_queue.sh) the budget, the spend so far and the box's
-- price; before each cell the queue counts the spend on, and once it is over the
-- budget the cells left are "not started: budget" (not failed cells), QUEUE DONE says
-- why with exit 3, the sweep's summary names them, a budget notification is recorded,
-- `gpurent watch QUEUE_RUN --once` says so with exit 3, and `watch --finish` pulls and
-- verifies the cell that ran (by the box's recorded load check) and still exits 3.
local testbed = require "testbed"
local cjson = require "cjson"

local ok_tb, why = testbed.available()

describe("the budget before every sweep cell", function()
  if not ok_tb then pending("testbed unavailable: " .. why); return end
  local tb
  setup(function()
    tb = testbed.new()
    -- 3600 yuan/h: one yuan a second, so a cell of ~16 s (320 steps of 0.05 s) spends ~16 yuan
    tb:up("b1", "--region westDC2 --data-size 256M --price-per-hour 3600")
  end)
  teardown(function() if tb then tb:down() end end)

  local function admin(route, body)
    local url = testbed.read(tb.dir .. "/api.url"):match("%S+")
    local out = testbed.sh("curl -sS --noproxy '*' -m 10 -X POST -H 'Content-Type: application/json' -d " ..
      T.q(cjson.encode(body)) .. " " .. T.q(url .. route))
    local env = cjson.decode(out)
    assert.are.equal("Success", env.code, out)
  end

  it("a budget that covers about one cell stops the queue before cell 2, naming cells 2 and 3, exit 3", function()
    -- the box's stretch starts now (the ledger is empty): the spend is the seconds since
    admin("/__sim/set-state", {instance_uuid = tb.uuids.b1, status = "running", started_ago = 0})
    local qf = T.write(tb.dir .. "/b.txt", "# three cells of ~16 s\nconfigs/ok.json fit 64\nconfigs/ok.json other 64\n" ..
      "configs/ok.json fit 65\n")
    local train = T.q("train={python} train.py --config {config} --task {task} --epochs {epochs} --out {out}")
    -- 16 yuan: the launch (well under 16 s) passes the gate and cell 1 starts; after
    -- cell 1 (~16 s on its own) the spend is over it
    local code, out, err = tb:gpurent("run recipes/autodl_sweep.lua host=b1 project=bq code=examples/tiny-train queue=" ..
      T.q(qf) .. " " .. train .. " interval=0.3 stall=60 budget=16 " .. T.q("box_load={python} load_check.py {}") .. " local_dir=" ..
      T.q(tb.dir .. "/pulled"))
    local all = out .. err
    assert.are.equal(3, code, all)
    assert.truthy(all:find("the queue checks the budget before each cell on the box", 1, true), all)
    local done = out:match("\nQUEUE DONE [^\n]*")
    assert.truthy(done, all)
    assert.truthy(done:find("1 cell(s) run, 1 ok, 0 failed", 1, true), done)
    assert.truthy(done:find("not started (budget): cell(s) 2, 3", 1, true), done)
    assert.truthy(all:find("cell 2 (configs/ok.json other 64): not started: budget", 1, true), all)
    assert.truthy(all:find("stopped by the budget before cell 2: the budget is spent: %d+%.%d%d of 16%.00 yuan"), all)
    -- the notification: a terminal line and a ledger row of kind budget
    assert.truthy(all:find("gpurent: b1: sweep queue [^\n]* stopped by the budget before cell 2"), all)
    local L = require("gpurent.state.ledger").open(tb.state .. "/ledger.sqlite")
    local n = L.db:query("SELECT count(*) AS n FROM notifications WHERE kind = 'budget' AND message LIKE '%before cell 2%'")[1].n
    L:close()
    assert.are.equal(1, n)
    -- on the box: QUEUE DONE with the distinct exit and the reason; no cell 2 or 3 started
    local qrun = done:match("QUEUE DONE (%S+):") .. "-b1"
    local meta = "/root/autodl-tmp/bq/active/" .. qrun .. "/.gpurent"
    local qdone = tb:exec("b1", "cat " .. meta .. "/QDONE")
    assert.truthy(qdone:find("^exit=3 ran=1 ok=1 failed=0"), qdone)
    local events = tb:exec("b1", "cat " .. meta .. "/cells.log")
    assert.falsy(events:find("start 2 ", 1, true), events)
    -- a later `gpurent watch --once` says the same, exit 3
    code, out, err = tb:gpurent("watch " .. qrun .. " --once")
    assert.are.equal(3, code, out .. err)
    assert.truthy(out:find("cell 3 (configs/ok.json fit 65): not started: budget", 1, true), out .. err)
    assert.truthy(out:find("stopped by the budget: the budget is spent", 1, true), out .. err)
    -- `watch --finish` pulls and verifies the cell that ran (no local load=: by the box's
    -- load check at the cell's seal, kept in the ledger), and still exits 3
    code, out, err = tb:gpurent("watch " .. qrun .. " --finish")
    assert.are.equal(3, code, out .. err)
    assert.truthy(out:find("VERIFIED " .. tb.dir .. "/pulled/" .. qrun, 1, true), out .. err)
  end)
end)
