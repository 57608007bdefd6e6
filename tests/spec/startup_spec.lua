-- startup_spec: what every command does first (due reminders of the release clocks,
-- held pushes) costs one stat when nothing is due: the ledger is not loaded, so
-- start-up stays under its targets (make bench prints them). Work left in the ledger
-- (an open clock, a held push) leaves a marker beside it; the command that finds
-- nothing left clears it. The line-editing library (libedit) and SQLite are loaded on
-- first use (the REPL; the first database opened), never by a plain run: without them,
-- recipes still run, and what needs one names the library and the package to install.
local ledger = require "gpurent.state.ledger"
local lfs = require "lfs"

describe("start-up", function()
  local dir, env, recipe
  before_each(function()
    dir = T.tmpdir()
    env = "GPURENT_STATE_DIR=" .. T.q(dir)
    recipe = T.write(dir .. "/probe.lua", 'print(package.loaded["gpurent.state.ledger"] ~= nil)\n')
  end)
  after_each(function() T.rmtree(dir) end)

  local function loaded()
    local code, out, err = T.run("run " .. T.q(recipe), {env = env})
    assert.are.equal(0, code, err)
    return out == "true\n"
  end

  it("does not load the ledger when nothing is due, even with a ledger present", function()
    assert.is_false(loaded())
    local L = ledger.open(dir .. "/ledger.sqlite")
    L:upsert_instance{name = "b1", profile = "autodl"}
    L:close()
    assert.is_false(loaded())
  end)

  it("an open clock marks work for the next command, which keeps the marker while the clock is open", function()
    local L = ledger.open(dir .. "/ledger.sqlite")
    L:upsert_instance{name = "b1", profile = "autodl"}
    L:open_clock{instance = "b1", name = "auto_release", started_at = os.time(), deadline = os.time() + 86400 * 15}
    L:close()
    assert.truthy(lfs.attributes(dir .. "/ledger.sqlite.pending"), "no marker after a clock opened")
    assert.is_true(loaded())
    assert.truthy(lfs.attributes(dir .. "/ledger.sqlite.pending"), "the marker went while the clock is open")
    L = ledger.open(dir .. "/ledger.sqlite")
    L.db:run("UPDATE danger_clocks SET cleared_at = ?", os.time())
    L:close()
    assert.is_true(loaded())                 -- finds nothing left and clears the marker
    assert.is_nil(lfs.attributes(dir .. "/ledger.sqlite.pending"))
    assert.is_false(loaded())
  end)

  it("a plain run maps neither the line-editing library nor SQLite", function()
    local probe = T.write(dir .. "/maps.lua", [[
for l in io.lines("/proc/self/maps") do
  local lib = l:match("/(lib[%w_]*edit[%w_]*%.so[%.%d]*)$") or l:match("/(libtinfo%.so[%.%d]*)$")
    or l:match("/(libsqlite3%.so[%.%d]*)$")
  if lib then print(lib) end
end
print("end of maps")
]])
    local code, out, err = T.run("run " .. T.q(probe), {env = env})
    assert.are.equal(0, code, err)
    assert.are.equal("end of maps\n", out)
  end)

  -- A wrapper that runs gpurent with the library `soname` unreadable: /dev/null bound
  -- over it in a private mount namespace, so dlopen finds a file too short.
  local function without(soname)
    local ldconfig = io.popen("ldconfig -p"):read("a")
    local lib = ldconfig:match(soname:gsub("%p", "%%%0") .. " %(libc6,x86%-64%) => (%S+)")
    assert.truthy(lib, soname .. " is not installed (make deps installs it):\n" .. ldconfig)
    local hide = T.write(dir .. "/without-" .. soname, string.format("#!/bin/sh\n"
      .. "exec unshare -m --propagation private sh -c 'mount --bind /dev/null \"$1\" && shift && exec \"$@\"' sh %s %s \"$@\"\n",
      T.q(lib), T.q(T.bin)))
    os.execute("chmod +x " .. T.q(hide))
    return hide
  end

  it("without libedit, a recipe runs and the REPL names libedit.so.2 and its Debian package", function()
    local hide = without("libedit.so.2")
    local code, out, err = T.run("run " .. T.q(recipe), {env = env, bin = hide})
    assert.are.equal(0, code, err)
    assert.are.equal("false\n", out)
    code, _, err = T.run("repl --local", {env = env, bin = hide})
    assert.are.equal(1, code, err)
    assert.matches("cannot load libedit.so.2 (install the Debian package libedit2)", err, 1, true)
  end)

  it("without SQLite, a recipe runs and opening the ledger names libsqlite3.so.0 and its Debian package", function()
    local hide = without("libsqlite3.so.0")
    local code, out, err = T.run("run " .. T.q(recipe), {env = env, bin = hide})
    assert.are.equal(0, code, err)
    assert.are.equal("false\n", out)
    local opener = T.write(dir .. "/open.lua", string.format(
      'require("gpurent.state.ledger").open(%q)\n', dir .. "/other.sqlite"))
    code, _, err = T.run("run " .. T.q(opener), {env = env, bin = hide})
    assert.are.equal(1, code, err)
    assert.matches("cannot load libsqlite3.so.0 (install the Debian package libsqlite3-0)", err, 1, true)
    assert.is_nil(lfs.attributes(dir .. "/other.sqlite"), "a ledger file was created")
    code, out = T.run("version", {env = env, bin = hide})
    assert.are.equal(0, code)
    assert.matches("SQLite (not loadable)", out, 1, true)
  end)
end)
