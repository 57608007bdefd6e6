-- fuzz_scratch_spec: the fuzz targets (fuzz/targets.lua) leave nothing behind in
-- the temporary directory. libFuzzer calls a target once per input and never calls
-- targets.cleanup, so each target must remove its own scratch file, on success and
-- when the input is refused with an error (issue 15).
describe("fuzz targets", function()
  local tmp
  before_each(function() tmp = T.tmpdir() end)
  after_each(function() T.rmtree(tmp) end)

  -- Run inputs through one target in a child gpurent, the way the harness does:
  -- TMPDIR pointed at a fresh directory, errors caught per input, no cleanup call.
  local function run_target(target, inputs)
    local code = ([[
local targets = require "targets"
local n = 0
for _, input in ipairs(%s) do
  local ok, err = pcall(targets[%q], input)
  if not ok and targets.is_bug(err) then error("parser bug: " .. tostring(err), 0) end
  n = n + 1
end
io.stdout:write(n, " inputs, scratch ", targets.scratch_path(), "\n")
]]):format("{" .. table.concat((function()
      local q = {}
      for i, s in ipairs(inputs) do q[i] = string.format("%q", s) end
      return q
    end)(), ", ") .. "}", target)
    return T.run("-e " .. T.q(code), {env = "TMPDIR=" .. T.q(tmp) .. " GPURENT_PATH=" .. T.q(T.root .. "/fuzz")})
  end

  local function entries(dir)
    local names = {}
    for name in require("lfs").dir(dir) do
      if name ~= "." and name ~= ".." then names[#names + 1] = name end
    end
    return names
  end

  for _, case in ipairs({
    {"sshconfig", {"Host fuzzhost\n  HostName 127.0.0.1\n  Port 2222\n", "Include\0\n\xff", ""}},
    {"knownhosts", {"127.0.0.1 ssh-ed25519 AAAA\n", "@cert-authority *\n|1|x|y ssh-rsa", ""}},
    {"yaml", {"a: 1\n", "a: [\n"}},
  }) do
    it(case[1] .. " leaves no scratch file in TMPDIR after its inputs", function()
      local code, out, err = run_target(case[1], case[2])
      assert.are.equal(0, code, err)
      assert.matches(#case[2] .. " inputs, scratch " .. tmp:gsub("%p", "%%%0") .. "/gpurent%-fuzz%-%d+", out)
      assert.are.same({}, entries(tmp))
    end)
  end
end)
