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
  local function lock() return require("gpurent.util.json").decode(T.read(proj .. "/gpurent.lock")) end
  -- Where the lock in effect (in cwd) keeps library NAME's checkout: `lib list --json`.
  local function checkout(name, opts)
    local code, out, err = gp("lib list --json", opts)
    assert(code == 0, err)
    for _, r in ipairs(require("gpurent.util.json").decode(out).libraries) do
      if r.name == name then return r.dir end
    end
    error("no library " .. name .. " in lib list:\n" .. out)
  end

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
    local p = io.popen("git -C " .. T.q(checkout("teamlib", {env = menv, cwd = mate .. "/project"})) .. " rev-parse HEAD")
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
    T.write(checkout("teamlib") .. "/util.lua", "return {version = 'hacked'}\n")
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
    local user = require("gpurent.util.json").decode(T.read(dir .. "/config/gpurent/gpurent.lock"))
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
    local p = io.popen("find " .. T.q(dir .. "/data") .. " -path '*otherlib*'")
    assert.are.equal("", p:read("a"), "a refused library left a checkout")
    p:close()
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
    local where = checkout("teamlib")
    local code, out = gp("lib remove teamlib")
    assert.are.equal(0, code)
    assert.matches("removed teamlib (" .. repo .. " at " .. c1 .. ")", out, 1, true)
    assert.is_nil(lock().libraries.teamlib)
    assert.is_nil(T.read(where .. "/util.lua"))
    code = gp("lib remove teamlib")
    assert.are.equal(2, code)
  end)

  it("finds a profile a library ships by name, after the config dir and before gpurent's own", function()
    T.write(repo .. "/profiles/autodl-team.yaml", "extends: autodl\ndescription: the team's AutoDL\n")
    T.write(repo .. "/profiles/autodl.yaml", "extends: autodl\nfacts:\n  inode_cap: 150000\n")
    commit("team profile")
    local code, added, err = gp("lib add teamlib " .. T.q(repo))
    assert.are.equal(0, code, err)
    local out
    local show = "-e " .. T.q('local p = require("gpurent.config.profile"); local path, kind = p.find("autodl-team"); ' ..
      'print(kind, p.load("autodl-team").description, p.load("autodl-team").platform)')
    code, out, err = gp(show)
    assert.are.equal(0, code, err)
    assert.matches("^library\tthe team's AutoDL\tautodl\n", out)
    -- an overlay named like gpurent's own profile extends it (the search skips itself)
    code, out, err = gp("-e " .. T.q('print(require("gpurent.config.profile").load("autodl").facts.inode_cap)'))
    assert.are.equal(0, code, err)
    assert.are.equal("150000\n", out)
    -- lib add said which profiles it brings, and which of gpurent's own one shadows
    assert.matches("profile autodl-team (--profile autodl-team)", added, 1, true)
    assert.matches("profile autodl (shadows gpurent's own autodl", added, 1, true)
    -- the person's own config dir still wins
    os.execute("mkdir -p " .. T.q(dir .. "/config/gpurent/profiles"))
    T.write(dir .. "/config/gpurent/profiles/autodl-team.yaml", "extends: autodl\ndescription: mine\n")
    code, out = gp(show)
    assert.matches("^config\tmine\t", out)
    os.remove(dir .. "/config/gpurent/profiles/autodl-team.yaml")
    -- a library may not say where the provider token goes
    T.write(checkout("teamlib") .. "/profiles/autodl-team.yaml",
      "extends: autodl\nbilling:\n  api:\n    base_url: https://evil.example.invalid\n")
    code, _, err = gp(show)
    assert.are_not.equal(0, code)
    assert.matches("billing.api.base_url decides where the provider token goes", err, 1, true)
    assert.matches("not from a library", err, 1, true)
  end)

  it("a pinned library that is not checked out says so when its profile is asked for", function()
    T.write(repo .. "/profiles/autodl-team.yaml", "extends: autodl\n")
    commit("team profile")
    assert.are.equal(0, (gp("lib add teamlib " .. T.q(repo))))
    T.rmtree(checkout("teamlib"))
    local code, _, err = gp("-e " .. T.q('require("gpurent.config.profile").load("autodl-team")'))
    assert.are_not.equal(0, code)
    assert.matches("library teamlib is pinned but not on this machine: gpurent lib sync", err, 1, true)
  end)

  it("remove refuses a checkout with local changes, naming them, unless --force", function()
    commit("v1")
    assert.are.equal(0, (gp("lib add teamlib " .. T.q(repo))))
    local where = checkout("teamlib")
    T.write(where .. "/util.lua", "return {version = 'my fix'}\n")
    T.write(where .. "/notes.txt", "mine\n")
    local code, out, err = gp("lib remove teamlib")
    assert.are.equal(1, code, out)
    assert.matches("library teamlib has local changes in " .. where, err, 1, true)
    assert.matches("M util.lua", err, 1, true)
    assert.matches("?? notes.txt", err, 1, true)
    assert.matches("gpurent lib remove teamlib --force", err, 1, true)
    assert.are.equal("return {version = 'my fix'}\n", T.read(where .. "/util.lua"))
    assert.truthy(lock().libraries.teamlib, "the pin was dropped")
    code, out, err = gp("lib remove teamlib --force")
    assert.are.equal(0, code, err)
    assert.matches("discarding its local changes (--force)", out, 1, true)
    assert.is_nil(T.read(where .. "/util.lua"))
    assert.is_nil(lock().libraries.teamlib)
    code, _, err = gp("lib list --force")
    assert.are.equal(2, code)
    assert.matches("--force is for lib remove", err, 1, true)
  end)

  it("takes names with dashes: require and run map them to the checkout", function()
    commit("v1")
    local code, out, err = gp("lib add team-lib " .. T.q(repo))
    assert.are.equal(0, code, err)
    assert.matches("added team-lib", out, 1, true)
    T.write(proj .. "/mine.lua", 'print(require("team-lib.util").version)\n')
    code, out, err = gp("run mine.lua")
    assert.are.equal(0, code, err)
    assert.are.equal("v1\n", out)
    code, out, err = gp("run team-lib/util.lua")
    assert.are.equal(0, code, err)
    code, _, err = gp("lib add -bad " .. T.q(repo))
    assert.are.equal(2, code)
    code, _, err = gp("lib add " .. T.q("bad.name") .. " " .. T.q(repo))
    assert.are.equal(2, code)
    assert.matches('library name "bad.name": use letters, digits', err, 1, true)
  end)

  it("keeps a checkout per pinned commit: one name, two sources or two commits, no collision", function()
    local c1 = commit("v1")
    local other = dir .. "/other-repo"
    os.execute("mkdir -p " .. T.q(other))
    T.write(other .. "/util.lua", 'return {version = "other"}\n')
    os.execute("cd " .. T.q(other) .. " && git init -q -b main && git add -A && " ..
      "git -c user.name=t -c user.email=t@example.invalid commit -q -m o")
    local projB, projC = dir .. "/projB", dir .. "/projC"
    os.execute("mkdir -p " .. T.q(projB) .. " " .. T.q(projC))
    T.write(projB .. "/gpurent.lock", "")
    T.write(projC .. "/gpurent.lock", "")
    T.write(proj .. "/v.lua", 'print(require("teamlib.util").version)\n')
    T.write(projB .. "/v.lua", 'print(require("teamlib.util").version)\n')
    T.write(projC .. "/v.lua", 'print(require("teamlib.util").version)\n')
    assert.are.equal(0, (gp("lib add teamlib " .. T.q(repo))))
    -- project C: the same source, later moved to a new commit
    local code, out, err = gp("lib add teamlib " .. T.q(repo), {cwd = projC})
    assert.are.equal(0, code, err)
    -- project B: the same name from another source
    code, out, err = gp("lib add teamlib " .. T.q(other), {cwd = projB})
    assert.are.equal(0, code, err)
    T.write(repo .. "/util.lua", 'return {version = "v2"}\n')
    local c2 = commit("v2")
    code, out, err = gp("lib update teamlib", {cwd = projC})
    assert.are.equal(0, code, err)
    assert.are.equal("v1\n", select(2, gp("run v.lua")))
    assert.are.equal("other\n", select(2, gp("run v.lua", {cwd = projB})))
    assert.are.equal("v2\n", select(2, gp("run v.lua", {cwd = projC})))
    assert.are.equal(c1, lock().libraries.teamlib.commit)
    local p = io.popen("git -C " .. T.q(checkout("teamlib")) .. " rev-parse HEAD")
    assert.are.equal(c1, p:read("l"))
    p:close()
    assert.are_not.equal(checkout("teamlib"), checkout("teamlib", {cwd = projC}))
    -- removing it in one project leaves the others' checkouts alone
    assert.are.equal(0, (gp("lib remove teamlib", {cwd = projB})))
    assert.are.equal("v1\n", select(2, gp("run v.lua")))
    assert.are.equal("v2\n", select(2, gp("run v.lua", {cwd = projC})))
    -- two locks pinning one commit share its checkout; removing one keeps it for the other
    local projD = dir .. "/projD"
    os.execute("mkdir -p " .. T.q(projD))
    T.write(projD .. "/gpurent.lock", "")
    assert.are.equal(0, (gp("lib add teamlib " .. T.q(repo), {cwd = projD})))
    assert.are.equal(checkout("teamlib", {cwd = projC}), checkout("teamlib", {cwd = projD}))
    code, out, err = gp("lib remove teamlib", {cwd = projD})
    assert.are.equal(0, code, err)
    assert.matches("kept: also pinned by " .. projC .. "/gpurent.lock", out, 1, true)
    assert.are.equal("v2\n", select(2, gp("run v.lua", {cwd = projC})))
    assert.are.equal(c2, require("gpurent.util.json").decode(T.read(projC .. "/gpurent.lock")).libraries.teamlib.commit)
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
