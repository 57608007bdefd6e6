-- install_spec: `make install PREFIX=...` gives a binary that finds its Lua
-- library, profiles and recipes under PREFIX/share/gpurent, away from the source tree.
describe("make install", function()
  it("installs a binary that runs from anywhere with its own share dir", function()
    local prefix = T.tmpdir()
    -- the plain build (./gpurent), also under `make asan`: install copies that binary
    local ok = os.execute(string.format("make -s install PREFIX=%s >/dev/null 2>&1", T.q(prefix)))
    assert.is_true(ok, "make install failed")
    -- run from / with a copy of nothing else: the source tree is not on any path
    local code, out = T.run("-e " .. T.q([[
      print(gpurent.share_dir())
      print(package.searchpath("gpurent.util.yaml", package.path))
      print(require("gpurent.util.yaml").load("a: 1", "x").a)]]),
      {bin = prefix .. "/bin/gpurent", cwd = "/"})
    T.rmtree(prefix)
    assert.are.equal(0, code)
    local lines = {}
    for l in out:gmatch("[^\n]+") do lines[#lines + 1] = l end
    assert.are.equal(prefix .. "/share/gpurent", lines[1])
    assert.are.equal(prefix .. "/share/gpurent/lua/gpurent/util/yaml.lua", lines[2])
    assert.are.equal("1", lines[3])
  end)
end)
