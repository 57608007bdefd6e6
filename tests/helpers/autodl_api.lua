-- autodl_api.lua: the testbed's AutoDL API server (tests/sim/autodl-api) for specs
-- that need the API but no booted instance. Starts it on an ephemeral 127.0.0.1
-- port in a private sim dir, and stops exactly the PID it started.
--
--   local srv = api.start{settle_delay=, balance_yuan=}
--   srv.url, srv.token, srv.dir, srv.state   (state: a GPURENT_STATE_DIR for gpurent)
--   srv:admin(route, body) -> envelope      srv:register{uuid=, name=, status=, price=}
--   srv:journal([path_substring [, at_least]]) -> entries (developer-API requests only)
--   srv:env() -> "AUTODL_TOKEN=... GPURENT_AUTODL_BASE_URL=... GPURENT_STATE_DIR=..."
--   srv:use([token]) / api.unuse(): point this process's provider at the server (the
--     token and base URL are read from the environment by runtime/provider.c)
--   srv:stop()
local cjson = require "cjson"

local api = {}
api.__index = api

local root = T.root
api.SERVER = root .. "/tests/sim/autodl-api"

local function sh(cmd)
  local p = io.popen(cmd .. " 2>&1")
  local out = p:read("a")
  p:close()
  return out
end

function api.start(opts)
  opts = opts or {}
  local self = setmetatable({dir = T.tmpdir()}, api)
  self.state = self.dir .. "/state"
  local args = string.format("--sim-dir %s --port 0 --settle-delay %s --balance-yuan %s",
    T.q(self.dir), tostring(opts.settle_delay or 0.2), tostring(opts.balance_yuan or 100))
  local pid = sh(string.format("python3 %s %s </dev/null >%s 2>&1 & echo $!", T.q(api.SERVER), args,
    T.q(self.dir .. "/api.log")))
  self.pid = tonumber(pid:match("(%d+)"))
  assert(self.pid, "autodl-api did not start: " .. pid)
  for _ = 1, 100 do                      -- bounded: 10 s
    self.url = T.read(self.dir .. "/api.url")
    if self.url then break end
    os.execute("sleep 0.1")
  end
  assert(self.url, "autodl-api did not write api.url: " .. tostring(T.read(self.dir .. "/api.log")))
  self.url = self.url:gsub("%s+$", "")
  self.token = T.read(self.dir .. "/api.token"):gsub("%s+$", "")
  return self
end

-- In-process clients: the test host's setenv (tests/c/testhost.c); unuse() in teardown.
function api:use(token)
  local t = require "gpurent_test"
  t.setenv("AUTODL_TOKEN", token or self.token)
  t.setenv("GPURENT_AUTODL_BASE_URL", self.url)
  t.unsetenv("AUTODL_TOKEN_FILE")
end

function api.unuse()
  local t = require "gpurent_test"
  t.unsetenv("AUTODL_TOKEN")
  t.unsetenv("GPURENT_AUTODL_BASE_URL")
end

function api:admin(route, body)
  local out = sh(string.format("curl -sS --noproxy '*' -m 10 -X POST -H 'Content-Type: application/json' -d %s %s",
    T.q(cjson.encode(body or {})), T.q(self.url .. route)))
  local ok, env = pcall(cjson.decode, out)
  assert(ok, "admin " .. route .. ": " .. out)
  return env
end

function api:register(t)
  local env = self:admin("/__sim/register", {instance_uuid = t.uuid, name = t.name, region = t.region or "westDC2",
    host = "127.0.0.1", port = t.port or 2222, status = t.status or "running", price_per_hour = t.price or 1.98})
  assert(env.code == "Success", cjson.encode(env))
  return t.uuid
end

-- The server journals a request after answering it: at_least waits (bounded, 3 s)
-- until that many matching entries are there.
function api:journal(path_part, at_least)
  for _ = 1, 60 do
    local got = self:journal_now(path_part)
    if #got >= (at_least or 0) then return got end
    os.execute("sleep 0.05")
  end
  return self:journal_now(path_part)
end

function api:journal_now(path_part)
  local out = {}
  local text = T.read(self.dir .. "/journal.jsonl") or ""
  for line in text:gmatch("[^\n]+") do
    local e = cjson.decode(line)
    if not e.admin and (not path_part or e.path:find(path_part, 1, true)) then out[#out + 1] = e end
  end
  return out
end

function api:env(extra)
  return string.format("AUTODL_TOKEN=%s GPURENT_AUTODL_BASE_URL=%s GPURENT_STATE_DIR=%s HOME=%s %s",
    T.q(self.token), T.q(self.url), T.q(self.state), T.q(self.dir), extra or "")
end

-- Everything gpurent wrote (ledger, budgets, ...) as one string, to look for the token.
function api:state_bytes()
  return sh("cat " .. T.q(self.state) .. "/* 2>/dev/null")
end

function api:stop()
  if self.pid then
    os.execute("kill " .. self.pid .. " 2>/dev/null")
    for _ = 1, 50 do
      if not sh("kill -0 " .. self.pid .. " 2>&1 && echo alive"):find("alive") then break end
      os.execute("sleep 0.05")
    end
    os.execute("kill -9 " .. self.pid .. " 2>/dev/null")
    self.pid = nil
  end
  T.rmtree(self.dir)
end

return api
