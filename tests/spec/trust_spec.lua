-- trust_spec: issue 14's untrusted directories. A directory the person cloned (a temp
-- dir here, with its own profiles/, lua/ and gpurent.lock) steers gpurent only after
-- `gpurent trust`; a changed file asks again; gpurent's own modules come only from its
-- installed library; provider API URLs only from the installed profiles and the
-- person's config dir. Everything runs the real binary as the person would, with
-- XDG_CONFIG_HOME pointed at a temp dir.
describe("gpurent trust", function()
  local dir, proj, cfg, env

  local function gp(args, opts)
    opts = opts or {}
    return T.run(args, {env = env .. (opts.env and (" " .. opts.env) or ""), cwd = opts.cwd or proj})
  end
  local function mkdir(p) assert(os.execute("mkdir -p " .. T.q(p))) end
  local function exists(p) return require("lfs").attributes(p, "mode") ~= nil end
  local function plain(s) return (s:gsub("%p", "%%%0")) end

  before_each(function()
    dir = T.tmpdir()
    proj, cfg = dir .. "/cloned", dir .. "/config"
    mkdir(proj .. "/profiles")
    mkdir(dir .. "/home")
    env = "HOME=" .. T.q(dir .. "/home") .. " XDG_CONFIG_HOME=" .. T.q(cfg) ..
          " GPURENT_STATE_DIR=" .. T.q(dir .. "/state") .. " GPURENT_DATA_DIR=" .. T.q(dir .. "/data")
  end)
  after_each(function() T.rmtree(dir) end)

  describe("a cloned profiles/generic-ssh.yaml that runs a local hook", function()
    local marker, profile_file
    before_each(function()
      marker = dir .. "/HOOK_RAN"
      profile_file = proj .. "/profiles/generic-ssh.yaml"
      T.write(profile_file, "extends: generic-ssh\nconnect: {transport: local}\nenv: {python: ./.hooks/py}\n")
      mkdir(proj .. "/.hooks")
      T.write(proj .. "/.hooks/py", "#!/bin/sh\ntouch " .. T.q(marker) .. "\necho Python 3.11.0\n")
      assert(os.execute("chmod +x " .. T.q(proj .. "/.hooks/py")))
    end)

    it("is refused before trust, honoured after `gpurent trust`, and refused again once changed", function()
      -- a name that never resolves: nothing may be reached but the local hook
      local code, _, err = gp("check myserver.example.invalid")
      assert.are.equal(3, code, err)
      assert.is_false(exists(marker), "the cloned hook ran before trust")
      assert.matches(plain(profile_file), err)
      assert.matches("`gpurent trust " .. plain(proj) .. "`", err)

      local out
      code, out, err = gp("trust")
      assert.are.equal(0, code, err)
      assert.matches("trusted " .. plain(proj) .. " %(1 file%)", out)
      assert.matches("profiles/generic%-ssh%.yaml", out)

      gp("check myserver.example.invalid")
      assert.is_true(exists(marker), "a trusted profile must be honoured")
      os.remove(marker)

      T.write(profile_file, T.read(profile_file) .. "# edited after trust\n")
      code, _, err = gp("check myserver.example.invalid")
      assert.are.equal(3, code, err)
      assert.is_false(exists(marker), "a changed profile ran its hook")
      assert.matches(plain(profile_file) .. ": it has changed since you trusted", err)
      assert.matches("`gpurent trust " .. plain(proj) .. "`", err)
    end)

    it("the extends chain is checked too: a trusted overlay cannot pull in an untrusted base", function()
      T.write(profile_file, "extends: team-base\n")
      assert.are.equal(0, (gp("trust")))
      T.write(proj .. "/profiles/team-base.yaml",
        "extends: generic-ssh\nconnect: {transport: local}\nenv: {python: ./.hooks/py}\n")
      local code, _, err = gp("check myserver.example.invalid")
      assert.are.equal(3, code, err)
      assert.is_false(exists(marker))
      assert.matches(plain(proj .. "/profiles/team-base.yaml") .. ": it is new since you trusted", err)
    end)

    it("--revoke forgets the directory; --list shows what is trusted; the file is mode 600", function()
      assert.are.equal(0, (gp("trust")))
      local code, out = gp("trust --list")
      assert.are.equal(0, code)
      assert.matches(plain(proj) .. "  1 file", out)
      assert.are.equal("rw-------", require("lfs").attributes(cfg .. "/gpurent/trusted.json", "permissions"))
      code, out = gp("trust --revoke")
      assert.are.equal(0, code)
      assert.matches("revoked trust in " .. plain(proj), out)
      code = gp("check myserver.example.invalid")
      assert.are.equal(3, code)
      assert.is_false(exists(marker))
      code, out = gp("trust --help")
      assert.are.equal(0, code)
      assert.matches("usage: gpurent trust %[DIR%]", out)
    end)
  end)

  it("a cloned lua/gpurent/util/errors.lua, gpurent/lifecycle/gate.lua or GPURENT_PATH copy never loads, trusted or not", function()
    local marker = dir .. "/SHADOW_LOADED"
    local evil = "io.open(" .. string.format("%q", marker) .. ", 'w'):close(); return {}\n"
    for _, d in ipairs({"/lua/gpurent", "/lua/gpurent/util", "/lua/gpurent/lifecycle", "/gpurent", "/gpurent/lifecycle"}) do
      mkdir(proj .. d)
    end
    mkdir(dir .. "/extra/gpurent")
    mkdir(dir .. "/extra/gpurent/lifecycle")
    T.write(proj .. "/lua/gpurent/util/errors.lua", evil)
    T.write(proj .. "/lua/gpurent/lifecycle/gate.lua", evil)
    T.write(proj .. "/gpurent/lifecycle/gate.lua", evil)          -- beside the recipe
    T.write(proj .. "/gpurent.lua", evil)
    T.write(dir .. "/extra/gpurent/lifecycle/gate.lua", evil)
    T.write(proj .. "/r.lua", 'print(type(require("gpurent.lifecycle.gate").check), type(require("gpurent.util.errors").refuse))\n')
    local penv = "GPURENT_PATH=" .. T.q(dir .. "/extra")
    for _, trusted in ipairs({false, true}) do
      if trusted then assert.are.equal(0, (gp("trust"))) end
      local code, out, err = gp("run r.lua", {env = penv})
      assert.are.equal(0, code, err)
      assert.are.equal("function\tfunction\n", out)
      code, out, err = gp("-e " .. T.q('print(type(require("gpurent.lifecycle.gate").check))'), {env = penv})
      assert.are.equal(0, code, err)
      assert.are.equal("function\n", out)
      assert.is_false(exists(marker), "a shadow of gpurent's own module loaded (trusted: " .. tostring(trusted) .. ")")
    end
  end)

  it("an untrusted project module fails naming the file, never falling through to another one", function()
    mkdir(proj .. "/lua")
    mkdir(dir .. "/extra")
    local modfile = T.write(proj .. "/lua/helper.lua", 'return "from the project"\n')
    T.write(dir .. "/extra/helper.lua", 'return "from GPURENT_PATH"\n')
    T.write(proj .. "/sibling.lua", 'return "beside the recipe"\n')
    T.write(proj .. "/r.lua", 'print((require "sibling")); print((require "helper"))\n')
    local penv = "GPURENT_PATH=" .. T.q(dir .. "/extra")
    local code, out, err = gp("run r.lua", {env = penv})
    assert.are.equal(3, code, err)
    assert.are.equal("beside the recipe\n", out) -- the named recipe's own dir needs no trust
    assert.matches("refused to load module " .. plain(modfile) .. ": it is in " .. plain(proj) ..
                   ", a directory you have not trusted", err)
    assert.matches("`gpurent trust " .. plain(proj) .. "`", err)

    assert.are.equal(0, (gp("trust")))
    code, out, err = gp("run r.lua", {env = penv})
    assert.are.equal(0, code, err)
    assert.are.equal("beside the recipe\nfrom the project\n", out)

    T.write(modfile, 'return "edited"\n')
    code, out, err = gp("run r.lua", {env = penv})
    assert.are.equal(3, code, err)
    assert.matches(plain(modfile) .. ": it has changed since you trusted", err)
  end)

  describe("provider API URLs", function()
    local load = "-e " .. T.q('print(require("gpurent.config.profile").load("autodl").billing.api.base_url)')
    local overlay = "extends: autodl\nbilling:\n  api:\n    base_url: http://127.0.0.1:47999\n"

    it("a cwd autodl.yaml overlay is refused untrusted, and still refused trusted (outside the config dir)", function()
      local f = T.write(proj .. "/profiles/autodl.yaml", overlay)
      local code, out, err = gp(load)
      assert.are.equal(3, code, err)
      assert.are.equal("", out)
      assert.matches("refused to use profile " .. plain(f) .. ": it is in " .. plain(proj), err)
      assert.matches("`gpurent trust " .. plain(proj) .. "`", err)

      assert.are.equal(0, (gp("trust")))
      code, out, err = gp(load)
      assert.are.equal(3, code, err)
      assert.are.equal("", out)
      assert.matches(plain(f) .. ":4:5: billing%.api%.base_url decides where the provider token goes", err)
      assert.matches("Put it in " .. plain(cfg .. "/gpurent/profiles/autodl.yaml") .. " instead", err)
    end)

    it("the same key in the person's config dir is accepted", function()
      mkdir(cfg .. "/gpurent/profiles")
      T.write(cfg .. "/gpurent/profiles/autodl.yaml", overlay)
      local code, out, err = gp(load)
      assert.are.equal(0, code, err)
      assert.are.equal("http://127.0.0.1:47999\n", out)
    end)

    it("an endpoint's base_url from GPURENT_PROFILE_PATH or an explicit path is refused too", function()
      mkdir(dir .. "/team")
      local f = T.write(dir .. "/team/autodl.yaml",
        "extends: autodl\nbilling:\n  api:\n    endpoints:\n      wechat: {method: POST, path: /x, base_url: http://127.0.0.1:1}\n")
      local code, _, err = gp(load, {env = "GPURENT_PROFILE_PATH=" .. T.q(dir .. "/team")})
      assert.are.equal(3, code, err)
      assert.matches(plain(f) .. ":5:%d+: billing%.api%.endpoints%.wechat%.base_url decides", err)
      assert.matches("not from GPURENT_PROFILE_PATH", err)
      code, _, err = gp("-e " .. T.q('require("gpurent.config.profile").load(' .. string.format("%q", f) .. ')'))
      assert.are.equal(3, code, err)
      assert.matches("not from a path named explicitly", err)
    end)
  end)

  it("a cloned gpurent.lock steers `gpurent run NAME/recipe.lua` only after trust", function()
    -- the person's own project adds a library; a clone carries a copy of its lock
    local repo, mine = dir .. "/teamlib-repo", dir .. "/mine"
    mkdir(repo)
    mkdir(mine)
    T.write(repo .. "/train.lua", 'print("team recipe ran")\n')
    assert(os.execute("cd " .. T.q(repo) .. " && git init -q -b main && git add -A && " ..
      "git -c user.name=t -c user.email=t@example.invalid commit -q -m v1"))
    T.write(mine .. "/gpurent.lock", "")
    local code, out, err = gp("lib add teamlib " .. T.q(repo), {cwd = mine})
    assert.are.equal(0, code, err)
    code, out, err = gp("run teamlib/train.lua", {cwd = mine}) -- their own lib add keeps the lock trusted
    assert.are.equal(0, code, err)
    assert.are.equal("team recipe ran\n", out)

    T.write(proj .. "/gpurent.lock", T.read(mine .. "/gpurent.lock"))
    code, out, err = gp("run teamlib/train.lua")
    assert.are.equal(3, code, err)
    assert.are.equal("", out)
    assert.matches("refused to use the libraries pinned in " .. plain(proj .. "/gpurent.lock"), err)
    assert.are.equal(0, (gp("trust")))
    code, out, err = gp("run teamlib/train.lua")
    assert.are.equal(0, code, err)
    assert.are.equal("team recipe ran\n", out)
  end)

  it("start-up reads no trust file unless a project file is consulted", function()
    mkdir(proj .. "/lua")
    T.write(proj .. "/lua/helper.lua", "return 1\n")
    mkdir(cfg .. "/gpurent")
    T.write(cfg .. "/gpurent/trusted.json", "{not json")
    T.write(proj .. "/empty.lua", "")
    local code, _, err = gp("run empty.lua")
    assert.are.equal(0, code, err)
    code, _, err = gp("-e " .. T.q('require "helper"'))
    assert.are.equal(1, code)
    assert.matches(plain(cfg .. "/gpurent/trusted.json") .. ": not a gpurent trust file", err)
  end)
end)
