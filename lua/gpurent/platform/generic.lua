-- gpurent.platform.generic: the platform of a profile with no provider module
-- (generic-ssh, local, or a platform gpurent has no code for). It has no API: no
-- billing client, no meter-stop verb, no push channel; the person stops the meter
-- where they rent the box. It is also the reference for what a platform provides
-- (gpurent.platform's header lists every field).
local errors = require "gpurent.util.errors"
local hosts = require "gpurent.hosts"

local generic = {name = "generic", title = nil, gotchas = nil, verbs = {}}

generic.login_example = "ssh -p PORT user@host"

local NO_API = "this platform has no billing API in gpurent (the profile's billing.meter is manual or none)"

function generic.client() return nil, NO_API end

function generic.require_client(o)
  o = o or {}
  errors.raise(o.kind or "usage", (o.context or "") .. NO_API .. ": stop its meter where you rent it", 0)
end

-- No meter-stop verb to guard: say so, as a refusal when the caller asks for one.
function generic.stop(o)
  return generic.require_client{kind = o and o.without_client, context = o and o.context}
end

function generic.parse_login(text)
  return hosts.parse_ssh_command(text, generic.login_example)
end

generic.hints = {
  no_token = NO_API,
}

function generic.hints.unreachable(host)
  return string.format("(a new host? gpurent host add %s 'ssh -p PORT user@host'; a new port? gpurent host set-port %s PORT)",
    host, host)
end

function generic.hints.teardown_reminder(host)
  return string.format("the meter (if any) is still on for %s: stop it where you rent it", host)
end

function generic.notify() return false, "no push channel on this platform" end
function generic.notify_ready() return false, "no push channel on this platform" end

-- No API to create with: the person rents the box, then `gpurent host add` it.
function generic.create()
  errors.usage("this platform has no API to create instances with: rent the box where you rent it, " ..
    "then gpurent host add NAME 'ssh -p PORT user@host'", 0)
end

-- The profile's in-instance verb run on the box. The session may be cut as the box
-- goes down, so a lost connection after the command was sent is not an error.
function generic.in_instance_power_off(inst, verb)
  if not verb then errors.usage("this platform has no in-instance power-off verb (billing.meter_stop.in_instance_verb)", 0) end
  local ok, r = pcall(inst.sh, inst, verb, {timeout = 30})
  if ok and r.code ~= 0 then
    error(string.format("%s on %s exited %s: %s", verb, tostring(inst), tostring(r.code), r.stderr or ""), 0)
  end
  return true
end

return generic
