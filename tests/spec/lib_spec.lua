-- lib_spec: team-shared recipe libraries from local git repositories (no network):
-- add prints what it trusts and pins the commit; `require "NAME.mod"` and
-- `gpurent run NAME/recipe.lua` resolve; update shows the old and new commit; a second
-- data dir reproduces the lock with `lib sync`; list shows dirty checkouts; a clash
-- names both libraries; remove drops the pin.
describe("gpurent lib", function()
  local dir, repo, proj, env

  local function sh(cmd)
    local ok = os.execute("cd " .. T.q(repo) .. " && " .. cmd .. " >/dev/null 2>&1")
    assert(ok, "failed: " .. cmd)
  end
  local function commit(msg)
    sh("git add -A && git -c user.name=t -c user.email=t@example.invalid commit -q -m " .. T.q(msg))
    local p = io.popen("git -C " .. T.q(repo) .. " rev-parse HEAD")
    local c = p:read("l")
    p:close()
    return c
  end
  local function gp(args, opts)
    opts = opts or {}
    return T.run(args, {env = opts.env or env, cwd = opts.cwd or proj})
  end
  local function lock() return require("gpurent.json").decode(T.read(proj .. "/gpurent.lock")) end

  before_each(function()
    dir = T.tmpdir()
    repo, proj = dir .. "/teamlib-repo", dir .. "/project"
    os.execute("mkdir -p " .. T.q(repo .. "/profiles") .. " " .. T.q(proj) .. " " .. T.q(dir .. "/home"))
    env = table.concat({"HOME=" .. T.q(dir .. "/home"), "GPURENT_DATA_DIR=" .. T.q(dir .. "/data"),
      "XDG_CONFIG_HOME=" .. T.q(dir .. "/config")}, " ")
    sh("git init -q -b main")
    T.write(repo .. "/util.lua", 'return {version = "v1"}\n')
    T.write(repo .. "/train.lua", [[
local p = gpurent.recipe {
  description = "the team's training recipe",
  params = {{name = "who", type = "string", required = true, help = "whose job"}},
}
print("train for " .. p.who .. " with util " .. require("teamlib.util").version)
]])
    T.write(repo .. "/profiles/autodl.yaml", "overlay: true\n")
    T.write(proj .. "/gpurent.lock", "") -- a project lock, empty
  end)
  after_each(function() T.rmtree(dir) end)

  it("add prints the source and commit it trusts, pins them, and makes require and run resolve", function()
    local c1 = commit("v1")
    local code, out, err = gp("lib add teamlib " .. T.q(repo))
    assert.are.equal(0, code, err)
    assert.matches("trusting library teamlib: code from " .. repo, out, 1, true)
    assert.matches("commit " .. c1, out, 1, true)
    assert.are.same({source = repo, ref = "main", commit = c1}, lock().libraries.teamlib)
    -- require "teamlib.util" from a project recipe
    T.write(proj .. "/mine.lua", 'print(require("teamlib.util").version)\n')
    code, out, err = gp("run mine.lua")
    assert.are.equal(0, code, err)
    assert.are.equal("v1\n", out)
    -- gpurent run NAME/recipe.lua, with its parameters validated and listed
    code, out, err = gp("run teamlib/train.lua who=ana")
    assert.are.equal(0, code, err)
    assert.are.equal("train for ana with util v1\n", out)
    code, _, err = gp("run teamlib/train.lua")
    assert.are.equal(2, code)
    assert.matches("missing required parameter who=<string> (whose job)", err, 1, true)
    code, out = gp("help teamlib/train.lua")
    assert.are.equal(0, code)
    assert.matches("the team's training recipe", out, 1, true)
    assert.matches("who%s+string%s+whose job %[required%]", out)
    code, _, err = gp("run teamlib/nope.lua")
    assert.are.equal(1, code)
    assert.matches("library teamlib has no recipe nope.lua", err, 1, true)
  end)

  it("update moves the pin and shows the old and new commit", function()
    local c1 = commit("v1")
    assert.are.equal(0, (gp("lib add teamlib " .. T.q(repo))))
    T.write(repo .. "/util.lua", 'return {version = "v2"}\n')
    local c2 = commit("util v2")
    local code, out, err = gp("lib update teamlib")
    assert.are.equal(0, code, err)
    assert.matches("old " .. c1 .. "\n", out, 1, true)
    assert.matches("new " .. c2 .. "\n", out, 1, true)
    assert.matches(c2:sub(1, 7) .. " util v2", out, 1, true)
    assert.are.equal(c2, lock().libraries.teamlib.commit)
    code, out = gp("run teamlib/train.lua who=ana")
    assert.are.equal("train for ana with util v2\n", out)
    code, out = gp("lib update teamlib")
    assert.are.equal(0, code)
    assert.matches("already at " .. c2, out, 1, true)
  end)

  it("lib sync reproduces the lock on a second data dir, at the pinned commit", function()
    commit("v1")
    assert.are.equal(0, (gp("lib add teamlib " .. T.q(repo))))
    T.write(repo .. "/util.lua", 'return {version = "v2"}\n')
    local c2 = commit("v2")
    assert.are.equal(0, (gp("lib update teamlib")))
    T.write(repo .. "/util.lua", 'return {version = "v3"}\n')
    commit("v3, not pinned")
    -- a teammate: same lock file (in their clone of the project), their own data dir
    local mate = dir .. "/mate"
    os.execute("mkdir -p " .. T.q(mate .. "/project"))
    T.write(mate .. "/project/gpurent.lock", T.read(proj .. "/gpurent.lock"))
    local menv = "HOME=" .. T.q(dir .. "/home") .. " GPURENT_DATA_DIR=" .. T.q(mate .. "/data")
    -- the lock came with a clone: the teammate reads it and trusts the project (issue 14)
    assert.are.equal(0, (gp("trust", {env = menv, cwd = mate .. "/project"})))
    local code, out = gp("run teamlib/train.lua who=bo", {env = menv, cwd = mate .. "/project"})
    assert.are_not.equal(0, code) -- not on this machine yet
    code, out = gp("lib sync", {env = menv, cwd = mate .. "/project"})
    assert.are.equal(0, code, out)
    assert.matches("teamlib: cloned " .. repo .. " at " .. c2, out, 1, true)
    code, out = gp("run teamlib/train.lua who=bo", {env = menv, cwd = mate .. "/project"})
    assert.are.equal("train for bo with util v2\n", out)
    local p = io.popen("git -C " .. T.q(mate .. "/data/libs/teamlib") .. " rev-parse HEAD")
    assert.are.equal(c2, p:read("l"))
    p:close()
    code, out = gp("lib sync", {env = menv, cwd = mate .. "/project"})
    assert.matches("teamlib: at " .. c2, out, 1, true)
  end)

  it("list shows name, source, ref, commit and whether the checkout is dirty", function()
    local c1 = commit("v1")
    assert.are.equal(0, (gp("lib add teamlib " .. T.q(repo))))
    local code, out = gp("lib list")
    assert.are.equal(0, code)
    assert.matches("NAME%s+SOURCE%s+REF%s+COMMIT%s+DIRTY", out)
    assert.matches("teamlib%s+" .. repo:gsub("%p", "%%%0") .. "%s+main%s+" .. c1:sub(1, 12) .. "%s+no", out)
    T.write(dir .. "/data/libs/teamlib/util.lua", "return {version = 'hacked'}\n")
    code, out = gp("lib list")
    assert.matches(c1:sub(1, 12) .. "%s+yes", out)
    code, _, err = gp("lib update teamlib")
    assert.are.equal(1, code)
    assert.matches("has local changes", err, 1, true)
  end)

  it("pins a tag given with --ref, and writes the user lock when the project has none", function()
    local c1 = commit("v1")
    sh("git tag v1")
    T.write(repo .. "/util.lua", 'return {version = "v2"}\n')
    commit("v2")
    os.remove(proj .. "/gpurent.lock")
    local code, out, err = gp("lib add teamlib " .. T.q(repo) .. " --ref v1")
    assert.are.equal(0, code, err)
    assert.matches("(user lock)", out, 1, true)
    local user = require("gpurent.json").decode(T.read(dir .. "/config/gpurent/gpurent.lock"))
    assert.are.same({source = repo, ref = "v1", commit = c1}, user.libraries.teamlib)
    code, out = gp("run teamlib/train.lua who=x")
    assert.are.equal("train for x with util v1\n", out)
  end)

  it("refuses a clash between libraries with an error that names both", function()
    commit("v1")
    assert.are.equal(0, (gp("lib add teamlib " .. T.q(repo))))
    -- a second library shipping the same profile overlay
    local other = dir .. "/other-repo"
    os.execute("mkdir -p " .. T.q(other .. "/profiles"))
    T.write(other .. "/profiles/autodl.yaml", "other: true\n")
    os.execute("cd " .. T.q(other) .. " && git init -q -b main && git add -A && " ..
      "git -c user.name=t -c user.email=t@example.invalid commit -q -m o")
    local code, _, err = gp("lib add otherlib " .. T.q(other))
    assert.are.equal(1, code)
    assert.matches("profile overlay autodl is shipped by both library otherlib", err, 1, true)
    assert.matches("and library teamlib", err, 1, true)
    assert.is_nil(lock().libraries.otherlib)
    assert.is_falsy(T.read(dir .. "/data/libs/otherlib/profiles/autodl.yaml"))
    -- the same name from another source
    code, _, err = gp("lib add teamlib " .. T.q(other))
    assert.are.equal(1, code)
    assert.matches("teamlib is already added from " .. repo, err, 1, true)
    assert.matches("the new source would be " .. other, err, 1, true)
    -- a name that would shadow a module gpurent loads
    code, _, err = gp("lib add gpurent " .. T.q(other))
    assert.are.equal(1, code)
    assert.matches("library clash: the name gpurent", err, 1, true)
  end)

  it("remove drops the pin and the checkout", function()
    local c1 = commit("v1")
    assert.are.equal(0, (gp("lib add teamlib " .. T.q(repo))))
    local code, out = gp("lib remove teamlib")
    assert.are.equal(0, code)
    assert.matches("removed teamlib (" .. repo .. " at " .. c1 .. ")", out, 1, true)
    assert.is_nil(lock().libraries.teamlib)
    assert.is_nil(T.read(dir .. "/data/libs/teamlib/util.lua"))
    code = gp("lib remove teamlib")
    assert.are.equal(2, code)
  end)

  -- What can be asserted before the teardown gate exists: library code is loaded as a
  -- plain module in the global environment (no extra powers), and nothing reachable
  -- from it is named like an approval setter. The real check (approval only from the
  -- top-level host's argv/TTY; a library calling a destructive verb is refused) belongs
  -- with the gate's issue.
  it("loads library code as a plain module with no approval setter in reach", function()
    T.write(repo .. "/probe.lua", [[
local found, seen = {}, {}
local function walk(t, path)
  if seen[t] then return end
  seen[t] = true
  for k, v in pairs(t) do
    if type(k) == "string" then
      local lk = k:lower()
      -- names of a setter; a read-only query (approved, is_granted) is allowed
      for _, pat in ipairs({"^set_?approv", "^grant$", "^grant_", "^approve$", "^add_?approv", "^allow_?teardown"}) do
        if lk:find(pat) then found[#found + 1] = path .. "." .. k end
      end
    end
    if type(v) == "table" then walk(v, path .. "." .. tostring(k)) end
  end
end
walk(gpurent, "gpurent")
walk(package.loaded, "package.loaded")
return {found = found, env_is_global = _ENV == _G}
]])
    commit("probe")
    assert.are.equal(0, (gp("lib add teamlib " .. T.q(repo))))
    T.write(proj .. "/check.lua", [[
local p = require "teamlib.probe"
print(p.env_is_global, #p.found, table.concat(p.found, " "))
]])
    local code, out, err = gp("run check.lua")
    assert.are.equal(0, code, err)
    assert.are.equal("true\t0\t\n", out)
  end)
end)
