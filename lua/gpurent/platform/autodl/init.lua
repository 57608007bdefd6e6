-- gpurent.platform.autodl: everything AutoDL-specific that generic policy needs, behind
-- the interface gpurent.platform documents (platform.of(profile) returns this module
-- for `platform: autodl`). Its parts: the developer API client
-- (gpurent.platform.autodl.api), the gotcha entries AD1-AD9 and AD-DANGER
-- (gpurent.gotchas.autodl), the console's login string, the hints and the WeChat
-- channel. Generic code never requires this module by name.
--
--   autodl.client(o) -> client | nil, why      autodl.require_client{kind=, context=, dry_run=}
--   autodl.stop(o) -> {decision, status, item}  the guarded power-off / release (billing.stop)
--   autodl.parse_login("ssh -p 12345 root@connect.westDC2.seetacloud.com") -> {user, host, port}
--   autodl.hints.unreachable(host) / .teardown_reminder(host, instance) / .no_token
--   autodl.notify{title=, name=, content=} -> true | false, why   (WeChat)
--   autodl.notify_ready() -> true | false, why;  autodl.notify_limits() -> {per_minute=, per_day=}
--       (the profile's billing.api.endpoints.wechat.limits; gpurent.notify counts them in the ledger)
--   autodl.item_facts(item) -> {power_state=, meter=, powered_off=, stopped_at=, region=}
--   autodl.hints.release_clock(c) / .auto_released(c) / .clock_short(c)   the release clock's words
--   autodl.in_instance_power_off(inst [, verb])   `shutdown` on the box (关机, no token)
--   autodl.push_target() -> {url=, auth_header=}   the WeChat route, for an on-box push whose
--       token the person puts on the box (the autostop watchdog's budget warning)
--   autodl.create{client=, name=, gpu_spec=, image=, cuda=, gpus=, data_centers=, disk_gb=,
--                 start_command=, attempts=, max_wait=, backoff=, deadline=}
--       -> {uuid=, item=, ssh = {host, port, user}, attempts=}   (a new meter: callers gate it)
local api = require "gpurent.platform.autodl.api"
local errors = require "gpurent.util.errors"
local hosts = require "gpurent.hosts"

local autodl = {name = "autodl", title = "AutoDL", gotchas = "gpurent.gotchas.autodl"}

autodl.api = api

-- 关机 is reversible (every disk kept; the 15-day auto-release clock starts); 释放
-- deletes the system and data disks.
autodl.verbs = {
  power_on = {billable = true},
  create = {billable = true},
  power_off = {gated = true},
  release = {gated = true, irreversible = true},
}

autodl.login_example = "ssh -p PORT root@connect.REGION.seetacloud.com"

autodl.hints = {
  no_token = "no AutoDL token: set AUTODL_TOKEN or AUTODL_TOKEN_FILE (or autodl.token_file in ~/.config/gpurent/config.yaml)",
}

function autodl.hints.unreachable(host)
  return string.format("(a new AutoDL instance? gpurent host add %s '%s'; a re-created one? gpurent host set-port %s PORT)",
    host, autodl.login_example, host)
end

function autodl.hints.teardown_reminder(host, instance)
  instance = instance or host
  -- the short command when the alias is the instance's name or linked to it (host add)
  local cmd = instance == host and string.format("gpurent billing power-off %s --approve %s", host, host)
    or string.format("gpurent billing power-off %s --ssh %s --approve %s", instance, host, instance)
  return string.format("the meter is still ON for %s. When you are done, power it off " ..
    "(AutoDL's reversible 关机, disks kept): %s (or on the console)", host, cmd)
end

-- The client, whatever the token: callers that only read what it knows without one
-- (find by a linked alias) or print a dry run use it so.
-- Every client reports what it lists to the ledger's meter (gpurent.billing.meter) and the
-- release clock (gpurent.billing.clock), and
-- asks it why an instance it cannot find is gone; a ledger problem never fails a call.
local function make(o)
  local c = api.client(o)
  c.observe = function(items)
    -- every instance listed enters the ledger's meter (one started on the console too)
    local okm, errm = pcall(require("gpurent.billing.meter").observe, autodl, items, {per_yuan = c.per_yuan})
    if not okm then io.stderr:write("gpurent: (ledger meter: ", tostring(errm), ")\n") end
    local ok, err = pcall(function() require("gpurent.billing.clock").observe(autodl, items) end)
    if not ok then io.stderr:write("gpurent: (release clock: ", tostring(err), ")\n") end
  end
  c.explain_missing = function(ref)
    local ok, text = pcall(function() return require("gpurent.billing.clock").explain_missing(ref) end)
    return ok and text or nil
  end
  return c
end

function autodl.client(o)
  local ok, c = pcall(make, o)
  if not ok then return nil, "AutoDL client: " .. tostring(c) end
  if not c:has_token() then return nil, autodl.hints.no_token end
  return c
end

function autodl.require_client(o)
  o = o or {}
  local c = make{dry_run = o.dry_run, timeout = o.timeout, out = o.out}
  if not c:has_token() then
    errors.raise(o.kind or "usage", (o.context or "") .. autodl.hints.no_token .. (o.kind == "refusal"
      and ": power it off on the console" or ""), 0)
  end
  return c
end

function autodl.stop(o)
  o.platform = autodl
  return require("gpurent.billing.stop").run(o)
end

function autodl.parse_login(text)
  return hosts.parse_ssh_command(text, autodl.login_example)
end

autodl.notify_channel = "WeChat"

function autodl.notify(m)
  local c, why = autodl.client()
  if not c then return false, why end
  return c:wechat(m)
end

-- WeChat messages go to the account the token belongs to: configured = a token.
function autodl.notify_ready()
  local c, why = autodl.client()
  if not c then return false, why end
  return true
end

function autodl.notify_limits()
  local a = api.profile_api()
  local w = a and a.endpoints and a.endpoints.wechat or api.DEFAULTS.endpoints.wechat
  return w.limits
end

-- ---- the 15-day release clock (关机 15 天后释放) -----------------------------------------

-- What generic policy needs of one list item: its power, when it stopped, its region.
function autodl.item_facts(it)
  local billing = require "gpurent.billing"
  local off = it.status == "shutdown"
  return {power_state = it.status, meter = it.status == "running" and "on" or (off and "off" or nil), powered_off = off,
          running = it.status == "running", stopped_at = off and billing.parse_time(it.stopped_at) or nil,
          region = type(it.region_sign) == "string" and it.region_sign ~= "" and it.region_sign or nil}
end

local function day(t) return os.date("!%Y-%m-%d", t) end

-- c: {instance, started_at, deadline, days, days_off, days_left, survivor}
function autodl.hints.release_clock(c)
  return string.format("%s has been powered off (关机) for %d days, since %s: AutoDL releases (释放) it on %s, " ..
    "in %d day%s, deleting / and its data disk%s. Power it on to keep it (gpurent billing power-on %s), " ..
    "or sync what you need to the durable FS first", c.instance, c.days_off, day(c.started_at), day(c.deadline),
    c.days_left, c.days_left == 1 and "" or "s", c.survivor and ("; only " .. c.survivor .. " survives") or "", c.instance)
end

function autodl.hints.auto_released(c)
  return string.format("%s was powered off on %s, %d days ago: AutoDL released it with its data disk " ..
    "(a box powered off for %d days is released, 关机 15 天后释放)%s", c.instance, day(c.started_at), c.days_off, c.days,
    c.survivor and ("; only " .. c.survivor .. " of its region survives") or "")
end

-- For the REPL prompt and the connect warning: one short line.
function autodl.hints.clock_short(c)
  return string.format("%s off %dd: AutoDL releases it in %dd", c.instance, c.days_off, c.days_left)
end

autodl.in_instance_power_off = api.in_instance_power_off

autodl.push_target = api.push_target

-- Create an instance and wait until it runs; its ssh address from the snapshot.
function autodl.create(o)
  local c = o.client
  local params = {instance_name = o.name, gpu_spec_uuid = o.gpu_spec, image_uuid = o.image,
    cuda_v_from = o.cuda or 118, req_gpu_amount = o.gpus or 1, expand_system_disk_by_gb = o.disk_gb or 0,
    data_center_list = o.data_centers, start_command = o.start_command}
  local uuid, tries = c:create(params, {attempts = o.attempts, max_wait = o.max_wait, backoff = o.backoff})
  if c.dry_run then return nil end
  if type(uuid) ~= "string" or uuid == "" then
    errors.raise("provider", "AutoDL: create answered Success without an instance uuid", 0)
  end
  c:wait_status(uuid, "running", {deadline = o.deadline or 300})
  local snap = c:snapshot(uuid)
  local port = math.tointeger(tonumber(snap.ssh.port))
  if not snap.ssh.host or not port then
    errors.raise("provider", "AutoDL: the snapshot of the new instance " .. uuid .. " has no ssh host/port", 0)
  end
  return {uuid = uuid, item = c:find(uuid), attempts = tries, ssh = {host = snap.ssh.host, port = port, user = "root"}}
end

return autodl
