-- gpurent.http: HTTP JSON calls on the C primitive (runtime/http.c, libcurl).
-- Inside a gpurent.sched task the transfer is stepped without blocking, so other
-- tasks run while it waits; outside a task it blocks with the request's timeout.
--
--   http.request{method=, url=, headers={name=value|secret}, body=string,
--                timeout=30, connect_timeout=10}   (never to a provider API: C refuses)
--     -> {status=, headers={lower=value}, body=, seconds=}   (raises on transport errors:
--        a gpurent.errors object of kind transport, e.code "timeout" or "connection")
--   http.json{method=, url=, headers=, json=table, ...} -> response, decoded|nil, decode_error
--   http.describe(req) -> "METHOD URL\n  Header: value\n  body" with secrets shown as ***
--
-- Header values may be gpurent.secret objects: they are revealed only when handed
-- to C, and every message this module builds names the method and URL only.
local core = require("gpurent.core")
local json = require "gpurent.util.json"
local secret = require "gpurent.util.secret"
local sched = require "gpurent.transport.sched"

local http = {}

-- Loopback never goes through a proxy (the testbed, the in-container metrics endpoint).
http.NOPROXY = "localhost,127.0.0.1,::1"

local function header_lines(headers)
  local names, lines = {}, {}
  for k in pairs(headers or {}) do names[#names + 1] = k end
  table.sort(names)
  for _, k in ipairs(names) do
    lines[#lines + 1] = k .. ": " .. secret.reveal(headers[k])
  end
  return lines
end

local function c_request(req)
  return {
    method = req.method or "GET", url = req.url, headers = header_lines(req.headers),
    body = req.body, timeout = req.timeout, connect_timeout = req.connect_timeout,
    max_body = req.max_body, noproxy = req.noproxy or http.NOPROXY,
  }
end

-- Drive a request to its result: start() -> a core handle, stepped without blocking
-- inside a gpurent.sched task (other tasks run meanwhile); outside a task, blocking()
-- runs it whole. Shared with the platforms' API clients (gpurent.platform).
function http.drive(start, blocking)
  if not sched.in_task() then return blocking() end
  local h = start()
  local pause = 0.002
  while not h:step(0) do
    sched.sleep(pause)
    pause = math.min(pause * 2, 0.05)
  end
  local ok, res = pcall(h.result, h)
  h:close()
  if not ok then error(res, 0) end
  return res
end

function http.request(req)
  assert(type(req) == "table" and type(req.url) == "string", "http.request: url is required")
  local creq = c_request(req)
  return http.drive(function() return core.http.start(creq) end, function() return core.http.request(creq) end)
end

-- A JSON call: body encoded from req.json, Content-Type set; returns the response,
-- the decoded body (nil when it is not JSON) and the decode error.
function http.json(req)
  local r = {}
  for k, v in pairs(req) do r[k] = v end
  r.headers = {}
  for k, v in pairs(req.headers or {}) do r.headers[k] = v end
  r.headers["Content-Type"] = r.headers["Content-Type"] or "application/json"
  r.headers["Accept"] = r.headers["Accept"] or "application/json"
  if req.json ~= nil then r.body = json.encode(req.json) end
  r.json = nil
  local res = http.request(r)
  local ok, decoded = pcall(json.decode, res.body, req.method .. " " .. req.url)
  if ok then return res, decoded end
  return res, nil, decoded
end

-- The exact call, for --dry-run: secrets print as ***.
function http.describe(req)
  local lines = {(req.method or "GET") .. " " .. req.url}
  local names = {}
  for k in pairs(req.headers or {}) do names[#names + 1] = k end
  table.sort(names)
  for _, k in ipairs(names) do
    local v = req.headers[k]
    lines[#lines + 1] = "  " .. k .. ": " .. (secret.is(v) and "***" or tostring(v))
  end
  local body = req.body or (req.json ~= nil and json.encode(req.json)) or nil
  if body then lines[#lines + 1] = "  " .. body end
  return table.concat(lines, "\n")
end

return http
