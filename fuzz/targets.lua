-- fuzz/targets.lua: the parsers under fuzzing, each a function of one input string.
-- A target may raise a clear error (a string naming the input) for bad input; a
-- Lua runtime error inside the parser ("attempt to index a nil value", "bad argument"
-- ...) is a bug, and the harness (fuzz/fuzz.c) aborts on it so libFuzzer keeps the
-- input. tests/spec/fuzz_regress_spec.lua replays fuzz/regressions/ through the same
-- functions in every test run.
local targets = {}

local scratch = (os.getenv("TMPDIR") or "/tmp") .. "/gpurent-fuzz-" .. require("gpurent.core").sys.getpid()

-- with_file(data, fn): fn(path) with the input written to a scratch file, removed
-- again before returning or re-raising fn's error. libFuzzer never calls
-- targets.cleanup, so a file left between inputs would outlive the fuzzer run
-- in the temporary directory (issue 15).
local function with_file(data, fn)
  local f = assert(io.open(scratch, "wb"))
  local wrote, werr = f:write(data)
  f:close()
  if not wrote then os.remove(scratch); error("fuzz: cannot write " .. scratch .. ": " .. tostring(werr), 0) end
  local ok, err = pcall(fn, scratch)
  os.remove(scratch)
  if not ok then error(err, 0) end
end

function targets.yaml(data)
  local yaml = require "gpurent.util.yaml"
  yaml.load(data, "fuzz.yaml", {positions = true, multi = true})
  yaml.load(data, "fuzz.yaml")
end

-- gpurent's own ssh_config reading is the keyword scanner (sshconfig.locate, with
-- Include and Host/Match blocks) and the target parser; the effective configuration
-- comes from `ssh -G`, which is OpenSSH's to fuzz, and which would run a fuzzed
-- `Match exec` command: never call resolve here.
function targets.sshconfig(data)
  local sshconfig = require "gpurent.transport.sshconfig"
  with_file(data, function(path)
    for _, keyword in ipairs{"proxyjump", "identityfile", "include", "match", "host"} do
      sshconfig.locate(keyword, {config = path})
    end
    sshconfig.parse_target("user@autodl-proj-1:2222")
    sshconfig.glob_match("autodl-*-?", data:sub(1, 200))
  end)
end

function targets.knownhosts(data)
  local knownhosts = require "gpurent.transport.knownhosts"
  with_file(data, function(path)
    knownhosts.lookup({path}, "connect.westb.seetacloud.com", 12345, "ssh-ed25519", "blob")
    knownhosts.lookup({path}, "127.0.0.1", 22, "ecdsa-sha2-nistp256", "blob")
  end)
end

function targets.manifest(data)
  local manifest = require "gpurent.lifecycle.manifest"
  local json = require "gpurent.util.json"
  local ok, m = pcall(json.decode, data, "PULL_MANIFEST.json")
  if ok then manifest.validate(m, "PULL_MANIFEST.json") end
  manifest.parse_roster(data)
end

local SPEC = {params = {
  {name = "host", type = "string", required = true},
  {name = "epochs", type = "integer", default = 3},
  {name = "lr", type = "number"},
  {name = "fast", type = "boolean"},
  {name = "tags", type = "list"},
  {name = "mode", type = "string", allowed = {"fast", "full"}},
}}

function targets.params(data)
  local recipe = require "gpurent.lifecycle.recipe"
  local words = {}
  for w in data:gmatch("%S+") do words[#words + 1] = w end
  local raw = recipe.split_args(words)
  recipe.validate(SPEC, raw, "fuzz.lua")
end

-- Errors that mean the parser itself broke, not that the input was bad.
targets.BUG_PATTERNS = {"attempt to ", "bad argument", "table index is ", "stack overflow",
                        "C stack overflow", "invalid value %(at index", "string length overflow"}

function targets.is_bug(msg)
  if type(msg) ~= "string" then
    local mt = getmetatable(msg)
    if mt and mt.__tostring then return false end -- gpurent error objects (usage errors)
    return true
  end
  -- Runtime errors carry the position of the Lua code that failed ("x.lua:12: attempt
  -- to ..."); a parser's own message may quote the input, so only the text right
  -- after a .lua position counts.
  local rest = msg:match("^[^\n:]-%.lua:%d+: (.*)$")
  if not rest then return false end
  for _, p in ipairs(targets.BUG_PATTERNS) do if rest:find("^" .. p) then return true end end
  return false
end

-- Removes the scratch file should a target have been cut short (a crash report);
-- fuzz/fuzz.c calls it before aborting on a parser bug.
function targets.cleanup() os.remove(scratch) end

-- Where a target's scratch file lives (tests check that nothing is left there).
function targets.scratch_path() return scratch end

return targets
