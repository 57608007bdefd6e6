-- api_doc_spec: every ```lua example of docs/API.md runs, as a recipe through the real
-- binary in a fresh directory, so the reference for recipe authors cannot drift from
-- the code. Examples whose first line is `-- needs: instance` run against a simulated
-- instance named box1 (the testbed), and are pending without one. Snippets fenced with
-- ~~~lua (they need a real box or the provider) are not run.
local simbox = require "simbox"

local function examples()
  local text = assert(T.read(T.root .. "/docs/API.md"), "docs/API.md is missing")
  local list, line_no = {}, 1
  local pos = 1
  while true do
    local a, b, body = text:find("\n```lua\n(.-)\n```\n", pos)
    if not a then break end
    local _, before = text:sub(1, a):gsub("\n", "")
    line_no = before + 2
    list[#list + 1] = {body = body, line = line_no, instance = body:match("^%-%- needs: instance") ~= nil}
    pos = b - 1
  end
  return list
end

describe("docs/API.md examples", function()
  local all = examples()
  local box, box_why
  local function need_box()
    if box then return true end
    local ok, why = simbox.available()
    if not ok then box_why = why; return false end
    box = simbox.new()
    box:up("box1", "--region r1 --data-size 64M")
    return true
  end
  teardown(function() if box then box:down() end end)

  it("has examples for the recipe-facing modules", function()
    assert.truthy(#all >= 34, "only " .. #all .. " examples")
    local text = T.read(T.root .. "/docs/API.md")
    for _, m in ipairs({"gpurent.transport.instance", "gpurent.transport.transfer", "gpurent.util.yaml", "gpurent.util.json", "gpurent.util.hash",
                        "gpurent.util.fs", "gpurent.util.secret", "gpurent.config.profile", "gpurent.lifecycle.storage", "gpurent.lifecycle.manifest",
                        "gpurent.lifecycle.phases", "gpurent.recipe", "gpurent.transport.sched", "gpurent.state.ledger",
                        "gpurent.lifecycle.monitor", "gpurent.lifecycle.detach", "gpurent.billing", "gpurent.platform.autodl.api",
                        "gpurent.billing.stop", "gpurent.platform", "gpurent.hosts", "gpurent.lifecycle.gate", "gpurent.billing.inventory", "gpurent.billing.coverage",
                        "gpurent.gotchas", "gpurent.config.lib", "gpurent.config.trust", "gpurent.transport.lock", "gpurent.lifecycle.run_lock",
                        "gpurent.util.shell", "gpurent.util.http", "gpurent.util.pretty", "gpurent.util.errors",
                        "gpurent.lifecycle", "gpurent.platform", "gpurent.remote", "gpurent.notify", "gpurent.hosts"}) do
      assert.truthy(text:find(m, 1, true), "docs/API.md does not cover " .. m)
    end
  end)

  for _, ex in ipairs(all) do
    it("runs the example at docs/API.md:" .. ex.line, function()
      if ex.instance and not need_box() then pending("needs the testbed: " .. tostring(box_why)); return end
      local dir = T.tmpdir()
      local file = T.write(dir .. "/example.lua", ex.body .. "\n")
      local env = "GPURENT_STATE_DIR=" .. T.q(dir .. "/state") .. " XDG_CONFIG_HOME=" .. T.q(dir .. "/config")
      if ex.instance then env = env .. " " .. box:env() end
      local code, out, err = T.run("run " .. T.q(file), {cwd = dir, env = env .. " timeout -k 5 120"})
      T.rmtree(dir)
      assert.are.equal(0, code, "docs/API.md:" .. ex.line .. " failed:\n" .. out .. err)
    end)
  end
end)
