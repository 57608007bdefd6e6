-- gpurent.platform.autodl.api: AutoDL's developer API (../shared/design/AUTODL-API.md).
-- Every request goes through gpurent.core.provider (runtime/provider.c), which holds
-- the token (never handed to Lua: c.token is a handle printing ***), sends only to the
-- URLs of the installed profile and the person's config dir (GPURENT_AUTODL_BASE_URL
-- points every endpoint at another https or loopback server: the testbed), and refuses
-- a gated verb (release, power_off) the person did not approve for that instance,
-- whatever this module passes. This module owns envelopes, errors and retries.
--
--   local c = autodl.client{timeout=, dry_run=, out=, sleep=, now=, state_dir=}
--   c:balance() -> {assets=, accumulate=, voucher_balance=} in yuan (API: thousandths)
--   c:list{page_index=, page_size=} -> page;  c:instances() -> every instance
--   c:find(name_or_uuid) -> list item (raises when unknown)
--   c:status(uuid) -> "running" | "shutdown" | "starting" | "shutting_down" | ...
--   c:snapshot(uuid) -> data + ssh = {host=, port=, user="root"}
--   c:wait_status(uuid, want, {deadline=, interval=}) -> status
--   c:power_on(uuid, {retries=, backoff=, max_backoff=, wait=true, deadline=})
--   c:power_off(uuid, {wait=true, deadline=})      -- C refuses both without the person's
--   c:release(uuid)                                -- approval (gpurent.billing.stop gates them)
--   c:create(params, {attempts=, max_wait=, backoff=, max_backoff=}) -> uuid, tries
--       POST create (billable: gpurent.platform.autodl.create gates it), retried while the
--       API answers GpuStockNotEnough: at most `attempts` tries within `max_wait` seconds,
--       each wait printed with the bound
--   c:wechat{title=, name=, content=} -> true | false, why   (limits: gpurent.notify, in the ledger)
--   autodl.in_instance_power_off(inst [, verb]) -- the token-less verb: `shutdown` on the box
--
-- Errors are gpurent.errors objects (kind transport or provider) with code=, failure=,
-- api_msg=, request_id=, status=, method=, url=, printing as one line; the token
-- stays in C and appears in none of them.
local http = require "gpurent.util.http"
local json = require "gpurent.util.json"
local core = require "gpurent.core"

local autodl = {}

autodl.DEFAULTS = {
  base_url = "https://api.autodl.com",
  auth_header = "Authorization",
  ok_code = "Success",
  endpoints = {
    balance = {method = "POST", path = "/api/v1/dev/wallet/balance"},
    instance_list = {method = "POST", path = "/api/v1/dev/instance/pro/list"},
    instance_status = {method = "GET", path = "/api/v1/dev/instance/pro/status"},
    instance_snapshot = {method = "GET", path = "/api/v1/dev/instance/pro/snapshot"},
    create = {method = "POST", path = "/api/v1/dev/instance/pro/create", billable = true},
    power_on = {method = "POST", path = "/api/v1/dev/instance/pro/power_on", billable = true},
    power_off = {method = "POST", path = "/api/v1/dev/instance/pro/power_off"},
    release = {method = "POST", path = "/api/v1/dev/instance/pro/release", irreversible = true},
    wechat = {method = "POST", base_url = "https://www.autodl.com", path = "/api/v1/wechat/message/send",
              limits = {per_minute = 5, per_day = 50}},
  },
  per_yuan = 1000,
}

-- ---- errors ----------------------------------------------------------------------

-- An API failure is a gpurent.errors object: kind transport when the API was not
-- reached (e.failure "timeout" or "transport"), provider when it answered with an
-- error (e.failure "http", "malformed" or "api"); e.code is the API's code (or
-- Timeout, TransportError, HTTP<status>, MalformedResponse), e.api_msg its message,
-- with e.status, e.request_id, e.method, e.url.
local errors = require "gpurent.util.errors"

local function api_error_text(e)
  local parts = {string.format("AutoDL %s %s: %s", e.method, e.url, e.code or e.failure)}
  if e.api_msg and e.api_msg ~= "" then parts[#parts + 1] = e.api_msg end
  if e.status then parts[#parts + 1] = "HTTP " .. e.status end
  if e.request_id then parts[#parts + 1] = "request_id " .. e.request_id end
  return table.concat(parts, "; ")
end

local function api_error(t)
  t.api_msg, t.msg, t.provider = t.msg, nil, "autodl"
  local kind = (t.failure == "timeout" or t.failure == "transport") and "transport" or "provider"
  error(errors.new(kind, api_error_text(t), t), 0)
end
function autodl.is_error(e) return errors.is_error_object(e) and e.provider == "autodl" end

-- ---- configuration ---------------------------------------------------------------

local function merge(base, over)
  local out = {}
  for k, v in pairs(base) do out[k] = v end
  for k, v in pairs(over or {}) do
    if type(v) == "table" and type(out[k]) == "table" then out[k] = merge(out[k], v) else out[k] = v end
  end
  return out
end

-- billing.api of profiles/autodl.yaml, or nil when it cannot be read.
function autodl.profile_api()
  local ok, prof = pcall(function()
    local okp, profile = pcall(require, "gpurent.config.profile")
    if okp and type(profile) == "table" and profile.load then
      local p = profile.load("autodl")
      return p and (p.data or p)
    end
    return require("gpurent.util.yaml").load_file(core.host.share_dir .. "/profiles/autodl.yaml")
  end)
  -- a refusal (an untrusted profile, a provider key outside the config dir) is never
  -- swallowed into the defaults: the person wrote something, so they hear why it is refused
  if not ok and require("gpurent.util.errors").is_refusal(prof) then error(prof, 0) end
  if ok and type(prof) == "table" and type(prof.billing) == "table" then return prof.billing.api, prof.billing end
  return nil
end

local PROVIDER = "autodl"     -- the profile whose billing.api runtime/provider.c reads

-- Options that once steered the token or its destination; now C decides both.
local MOVED = {
  token = "the token is read by gpurent's C host from $AUTODL_TOKEN or a 0600 file ($AUTODL_TOKEN_FILE, "
    .. "or autodl.token_file in ~/.config/gpurent/config.yaml)",
  token_file = "set $AUTODL_TOKEN_FILE or autodl.token_file in ~/.config/gpurent/config.yaml",
  base_url = "the API URL comes from the installed profile or ~/.config/gpurent/profiles/autodl.yaml; "
    .. "for a test server set $GPURENT_AUTODL_BASE_URL (https, or a loopback address)",
  api = "endpoints come from the installed profile or ~/.config/gpurent/profiles/autodl.yaml",
}

local Client = {}
Client.__index = Client

function autodl.client(opts)
  opts = opts or {}
  for k, why in pairs(MOVED) do
    if opts[k] ~= nil then error("autodl.client: option " .. k .. "= is not accepted: " .. why, 2) end
  end
  local api = merge(autodl.DEFAULTS, autodl.profile_api() or {})
  return setmetatable({
    api = api, token = core.provider.token(PROVIDER), timeout = opts.timeout or 20, dry_run = opts.dry_run,
    out = opts.out or io.stdout, sleep = opts.sleep or require("gpurent.transport.sched").sleep,
    now = opts.now or core.sys.now, per_yuan = api.per_yuan or 1000, state_dir = opts.state_dir,
  }, Client)
end

function Client:has_token() return self.token ~= nil end

-- The request as C will send it, for --dry-run and error messages (token: ***).
function Client:request_for(name, params)
  local method, url, auth = core.provider.describe(PROVIDER, name)
  return {method = method, url = url, body = json.encode(params or {}),
          headers = {["Content-Type"] = self.api.content_type or "application/json", [auth] = self.token}}
end

-- Send through C: stepped inside a gpurent.sched task, blocking outside one.
local function send(name, body, timeout)
  return http.drive(function() return core.provider.start(PROVIDER, name, body, timeout) end,
                    function() return core.provider.request(PROVIDER, name, body, timeout) end)
end

-- One call: the envelope's data, or an API error (api_error). A refusal from C passes through.
function Client:call(name, params)
  if not self.token then
    error("AutoDL: no developer token (set AUTODL_TOKEN, or autodl.token_file in ~/.config/gpurent/config.yaml)", 0)
  end
  local req = self:request_for(name, params)
  local ok, res = pcall(send, name, req.body, self.timeout)
  if not ok then
    if errors.has_own_exit(res) then error(res, 0) end     -- a refusal from C, Ctrl-C
    local failure = type(res) == "table" and res.code == "timeout" and "timeout" or "transport"
    api_error{failure = failure, code = failure == "timeout" and "Timeout" or "TransportError",
              msg = errors.message(res), method = req.method, url = req.url}
  end
  local okj, env = pcall(json.decode, res.body, req.method .. " " .. req.url)
  if (not okj or type(env) ~= "table") and res.status >= 400 then
    api_error{failure = "http", code = "HTTP" .. res.status, status = res.status, method = req.method, url = req.url,
              msg = string.format("not a JSON envelope (%d bytes, content-type %s)", #res.body,
                tostring(res.headers["content-type"]))}
  end
  if not okj or type(env) ~= "table" then
    api_error{failure = "malformed", code = "MalformedResponse", status = res.status, method = req.method, url = req.url,
              msg = string.format("the answer is not a JSON envelope (%d bytes, content-type %s)", #res.body,
                tostring(res.headers["content-type"]))}
  end
  local rid = env.request_id ~= json.null and env.request_id or nil
  if env.code ~= (self.api.ok_code or "Success") then
    api_error{failure = res.status >= 400 and "http" or "api", code = tostring(env.code), status = res.status,
              msg = env.msg ~= json.null and tostring(env.msg or "") or "", request_id = rid,
              method = req.method, url = req.url}
  end
  if res.status >= 300 then
    api_error{failure = "http", code = "HTTP" .. res.status, status = res.status, method = req.method, url = req.url,
              request_id = rid, msg = "a Success envelope with an HTTP error status"}
  end
  local data = env.data
  if data == json.null then data = nil end
  return data, rid
end

-- A mutating call: printed instead of sent under --dry-run.
function Client:act(name, params)
  if self.dry_run then
    local req = self:request_for(name, params)
    self.out:write("dry run: would send ", http.describe(req), "\n")
    return nil, nil, true
  end
  return self:call(name, params)
end

local function yuan(self, v) return type(v) == "number" and v / self.per_yuan or nil end

function Client:balance()
  local d = self:call("balance", {})
  return {assets = yuan(self, d.assets), accumulate = yuan(self, d.accumulate),
          voucher_balance = yuan(self, d.voucher_balance), raw = d}
end

function Client:list(p)
  p = p or {}
  return self:call("instance_list", {page_index = p.page_index or 1, page_size = p.page_size or 100})
end

function Client:instances()
  local out, page = {}, 1
  for _ = 1, 100 do                       -- bounded: 100 pages of 100
    local d = self:list{page_index = page, page_size = 100}
    for _, it in ipairs(d.list or {}) do out[#out + 1] = it end
    if page >= (d.max_page or 1) then break end
    page = page + 1
  end
  if self.observe then self.observe(out) end      -- the whole account, seen now (gpurent.billing.clock)
  return out
end

-- One name per box: `gpurent host add ALIAS --uuid UUID` links an ssh alias to its
-- instance in the ledger, so the alias finds the instance too.
local function linked_uuid(alias)
  local ok, uuid = pcall(function()
    local ledger = require "gpurent.state.ledger"
    if not ledger.exists() then return nil end
    local L = ledger.open()
    local row = L.db:query("SELECT provider_id FROM instances WHERE name = ? AND provider_id IS NOT NULL", alias)[1]
    L:close()
    return row and row.provider_id
  end)
  return ok and uuid or nil
end

function Client:find(ref)
  local all = self:instances()
  for _, it in ipairs(all) do
    if it.uuid == ref or it.name == ref then return it end
  end
  local uuid = linked_uuid(ref)
  for _, it in ipairs(uuid and all or {}) do
    if it.uuid == uuid then it.alias = ref; return it end
  end
  local gone = self.explain_missing and self.explain_missing(ref)
  if gone then error(errors.new("provider", gone, {code = "RecordNotFoundError", provider = "autodl"}), 0) end
  error("AutoDL: no instance " .. tostring(ref) .. " in this account (by uuid or name"
    .. (uuid and (", nor its linked uuid " .. uuid) or "; link an ssh alias with gpurent host add ALIAS --uuid UUID")
    .. ")", 0)
end

function Client:status(uuid) return self:call("instance_status", {instance_uuid = uuid}) end

function Client:snapshot(uuid)
  local d = self:call("instance_snapshot", {instance_uuid = uuid})
  d.ssh = {host = d.proxy_host, port = d.ssh_port, user = "root"}
  return d
end

-- Poll until the status is `want` (or one of a list); raises at the deadline.
function Client:wait_status(uuid, want, o)
  o = o or {}
  local wants = type(want) == "table" and want or {want}
  local deadline = self.now() + (o.deadline or 180)
  local interval, last = o.interval or 0.5, nil
  local transient = 0
  for _ = 1, 10000 do
    -- status is a read, so a transient failure (5xx, timeout, transport, garbled
    -- body) is retried at the next tick, up to 5 in a row; an API refusal is not
    local ok, st = pcall(self.status, self, uuid)
    if ok then
      last, transient = st, 0
    elseif autodl.is_error(st) and (st.failure == "http" and (st.status or 0) >= 500 or st.failure == "timeout"
        or st.failure == "transport" or st.failure == "malformed") and transient < 5 and self.now() < deadline then
      transient = transient + 1
      self.out:write(string.format("AutoDL: reading the status of %s failed (%s); retrying %d/5\n", uuid,
        errors.message(st):match("[^\n]*"), transient))
    else
      error(st, 0)
    end
    for _, w in ipairs(wants) do if last == w then return last end end
    if self.now() >= deadline then break end
    self.sleep(math.min(interval, math.max(0, deadline - self.now())))
    interval = math.min(interval * 1.5, o.max_interval or 5)
  end
  error(string.format("AutoDL: instance %s did not reach %s before the deadline (last status %s)",
    uuid, table.concat(wants, "|"), tostring(last)), 0)
end

-- Power on with a bounded retry when stock is out (AutoDL's only "preemption").
function Client:power_on(uuid, o)
  o = o or {}
  local retries, backoff = o.retries or 5, o.backoff or 5
  for attempt = 0, retries do
    local ok, err = pcall(self.act, self, "power_on", {instance_uuid = uuid, payload = "gpu"})
    if ok then break end
    if not (autodl.is_error(err) and err.code == "GpuStockNotEnough") or attempt == retries then error(err, 0) end
    self.out:write(string.format("AutoDL: out of GPU stock for %s (request_id %s); retry %d/%d in %gs\n",
      uuid, tostring(err.request_id), attempt + 1, retries, backoff))
    self.sleep(backoff)
    backoff = math.min(backoff * 2, o.max_backoff or 120)
  end
  if self.dry_run or o.wait == false then return nil end
  return self:wait_status(uuid, "running", o)
end

function Client:create(params, o)
  o = o or {}
  local attempts, max_wait = o.attempts or 6, o.max_wait or 600
  local backoff, started = o.backoff or 10, self.now()
  for attempt = 1, attempts do
    local ok, res = pcall(self.act, self, "create", params)
    if ok then return res, attempt end
    if not (autodl.is_error(res) and res.code == "GpuStockNotEnough") then error(res, 0) end
    local waited = self.now() - started
    if attempt == attempts or waited + backoff > max_wait then
      errors.raise("provider", string.format("AutoDL: no stock for %s in %s after %d attempt(s) over %ds " ..
        "(bound: %d attempts, %ds); nothing was created (last request_id %s)", tostring(params.gpu_spec_uuid),
        table.concat(params.data_center_list or {"any data centre"}, ", "), attempt, math.floor(waited + 0.5),
        attempts, max_wait, tostring(res.request_id)), 0, {code = res.code})
    end
    self.out:write(string.format("AutoDL: out of stock for %s in %s (request_id %s); attempt %d/%d, next in %gs " ..
      "(gives up after %d attempts or %ds)\n", tostring(params.gpu_spec_uuid),
      table.concat(params.data_center_list or {"any data centre"}, ", "), tostring(res.request_id), attempt, attempts,
      backoff, attempts, max_wait))
    self.sleep(backoff)
    backoff = math.min(backoff * 2, o.max_backoff or 120)
  end
end

function Client:power_off(uuid, o)
  o = o or {}
  local _, _, dry = self:act("power_off", {instance_uuid = uuid})
  if dry or o.wait == false then return nil end
  return self:wait_status(uuid, "shutdown", o)
end

function Client:release(uuid)
  return self:act("release", {instance_uuid = uuid})
end

-- ---- WeChat ---------------------------------------------------------------------

-- Sends one message; the API's answer decides (its limits, 5 a minute and 50 a day,
-- are counted before sending by gpurent.notify, in the ledger). false, why on refusal.
function Client:wechat(m)
  local ok, err = pcall(self.act, self, "wechat", {title = m.title, name = m.name or "", content = m.content or ""})
  if not ok then return false, errors.message(err) end
  return true
end

-- The WeChat route as C would send it (URL after the base-URL override, the auth
-- header's name): for an on-box push whose token the person puts on the box.
function autodl.push_target()
  local ok, _, url, auth = pcall(core.provider.describe, PROVIDER, "wechat")
  if not ok then return {} end
  return {url = url, auth_header = auth}
end

-- ---- the token-less verb ----------------------------------------------------------

-- Power the box off from inside, without a token: the profile's in-instance verb
-- (AutoDL: `shutdown`; the meter stops, the disks stay). inst is a gpurent.instance.
-- The session may be cut as the box goes down, so a lost connection after the
-- command was sent is not an error; callers confirm the state (API or reconnect).
function autodl.in_instance_power_off(inst, verb)
  if not verb then
    local _, b = autodl.profile_api()
    verb = b and b.meter_stop and b.meter_stop.in_instance_verb or "shutdown"
  end
  return require("gpurent.platform.generic").in_instance_power_off(inst, verb)
end

return autodl
