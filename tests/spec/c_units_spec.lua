-- c_units_spec: the C unit tests of tests/c (built by `make test` into
-- $GPURENT_CTEST_DIR, default build/). A missing binary is a failure, not a skip.
local lfs = require "lfs"

local dir = os.getenv("GPURENT_CTEST_DIR") or "build"

local function run_unit(name)
  local bin = dir .. "/" .. name
  assert(lfs.attributes(bin, "mode") == "file", bin .. " is not built: run `make test` (it builds the C unit tests)")
  local p = io.popen(T.q(bin) .. " 2>&1")
  local out = p:read("a")
  local ok, _, code = p:close()
  return ok and 0 or code, out
end

describe("C units", function()
  it("the batched AES-CTR provider matches OpenSSL's AES-CTR byte for byte", function()
    local code, out = run_unit("aesctr_test")
    assert.equal(0, code, out)
    assert.matches("\n0 failed\n$", out)
    local oks = select(2, out:gsub("\nok ", ""))
    assert.is_true(oks >= 38, out)                   -- 3 key sizes x 12 trials + install + DRBG + SHA256
    assert.is_nil(out:find("FAIL", 1, true), out)
  end)
end)
