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
--   autodl.notify{title=, name=, content=} -> true | false, why   (WeChat: 5/min, 50/day)
--   autodl.in_instance_power_off(inst [, verb])   `shutdown` on the box (关机, no token)
local api = require "gpurent.platform.autodl.api"
local errors = require "gpurent.util.errors"
local hosts = require "gpurent.hosts"

local autodl = {name = "autodl", title = "AutoDL", gotchas = "gpurent.gotchas.autodl"}

autodl.api = api

-- 关机 is reversible (every disk kept; the 15-day auto-release clock starts); 释放
-- deletes the system and data disks.
autodl.verbs = {
  power_on = {billable = true},
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
local function make(o) return api.client(o) end

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

function autodl.notify(m)
  local c, why = autodl.client()
  if not c then return false, why end
  return c:wechat(m)
end

autodl.in_instance_power_off = api.in_instance_power_off

return autodl
