-- Phase connect (LIFECYCLE.md): open the SSH session to the run's host - the alias
-- from `gpurent host add`, through the ssh config recorded with the run. Nothing is
-- checked here beyond that the session opens (setup checks the box); every later
-- phase runs its commands through this session (or the environment phase's
-- proxy-hooked one).
--
--   needs {run} -> produces {inst}
--   opts: config (an ssh config file), connect_timeout
local connect = {name = "connect", needs = {"run"}, produces = {"inst"}}

function connect.run(ctx, o)
  local r = ctx.run
  local inst = r:connect(o)
  r:say("connect", "SSH session to %s open%s", r.host, r.ssh_config and (" (ssh config " .. r.ssh_config .. ")") or "")
  return {inst = inst}
end

return connect
