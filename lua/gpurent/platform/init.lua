-- gpurent.platform: the seam between generic policy and one provider. A profile names
-- its platform (`platform:` in profiles/*.yaml); platform.of(profile) returns the
-- module gpurent/platform/<name>.lua (or <name>/init.lua), or the generic platform
-- (platform/generic.lua) for a profile without a provider module (generic-ssh, local).
-- Generic code (lifecycle, commands, repl, billing policy) reaches provider knowledge
-- only through here: it never requires a platform module by name, so a second
-- platform (Slurm, RunPod, vast.ai) plugs in by adding its file and its profile.
--
--   platform.of(profile | platform_name) -> P      (raises naming the profile when the
--                                                    module exists but fails to load)
--   platform.names() -> {name, ...}   the platform modules installed beside this file
--   platform.power_off_irreversible(profile) -> bool   the one definition: the profile's
--       billing.meter_stop.irreversible, or billing.verbs.power_off.reversible == false
--   platform.profile_fits(profile, alias, hostname) -> why | nil   its connect.alias_pattern
--       or host_pattern matches ("its alias matches gpu-{project}-{n}")
--   platform.profile_for_host(alias, hostname) -> name, why | nil   the first of gpurent's
--       own profiles and the person's config dir's that fits (a project's profile would
--       ask for trust the person did not come to give)
--
-- What a platform module P provides (every field; generic.lua is the reference):
--   P.name                       "generic", or the platform's own name
--   P.title                      the provider's name for messages (nil: generic)
--   P.client(o) -> client | nil, why
--       its billing client (o: timeout, dry_run, out): has_token(), find(ref) -> item
--       {name, uuid, status, payg_price, started_at, stopped_at}, instances(), balance(),
--       status(uuid), snapshot(uuid) -> {ssh = {host, port, user}}, power_on(uuid, o),
--       power_off(uuid, o), release(uuid, o) (the gated verbs: C refuses them without
--       the person's approval); nil, why when the platform has no API or no token
--   P.require_client(o) -> client, or raises o.kind ("usage" default, "refusal") with
--       o.context prefixed, naming what the person sets to get one (the token variables)
--   P.stop(o) -> {decision, status, item}
--       the guarded meter-stop: o.verb = "power_off" | "release", as gpurent.billing.stop
--       documents (ref, inst | target, pulled, discard, ...); the client is made when
--       o.client is absent. Teardown, `gpurent billing` and the REPL call only this.
--   P.create(o) -> {uuid, item, ssh, attempts}   a new instance (a new meter): o.client,
--       name, gpu_spec, image, data_centers, gpus, ...; waits for stock within a printed bound,
--       then for `running`; generic refuses (no API). `gpurent billing create` gates it.
--   P.parse_login(text) -> {user, host, port}  the console's login string, for
--       `gpurent host add NAME 'TEXT'`; raises a usage error quoting P.login_example
--   P.login_example               the login string as the console shows it
--   P.gotchas                     module name of its gotcha entries (nil: none)
--   P.verbs                       the gated and billable verbs it has: {power_on =
--       {billable = true}, power_off = {gated = true}, release = {gated = true,
--       irreversible = true}}; {} when there is none
--   P.hints.unreachable(host) -> text   what to do when the host does not answer
--   P.hints.teardown_reminder(host, instance) -> text   the meter is still on: how to stop it
--   P.hints.no_token -> text             how to give it its API token
--   P.notify{title=, name=, content=} -> true | false, why   a push channel beyond the
--       terminal and the ledger (a chat message); false, why when it has none
--   P.in_instance_power_off(inst, verb) -> true   the token-less stop from inside the box
--   P.notify_ready() -> true | false, why   its push channel is configured (gpurent.notify)
--   P.notify_limits() -> {per_minute=, per_day=} | nil   the channel's limits, from the profile
--   P.notify_channel              the channel's name for messages (nil: none)
--   P.item_facts(item) -> {power_state, meter, powered_off, running, stopped_at, region}
--       what the release clock reads of a list item (optional: gpurent.billing.clock)
--   P.hints.release_clock(v) / .auto_released(v) / .clock_short(v)   the release clock's
--       words (optional; v = gpurent.billing.clock.view)
--
-- A scheduler platform (issue 19, Slurm) fits this shape: its client reads accounting
-- (sacct), P.stop is scancel behind the same gate and approval (gate.check needs an
-- action for it), P.gotchas its quota and partition probes, P.parse_login the login
-- node's string (platform/slurm.lua). Two optional fields let it drive the generic lifecycle:
--   P.start_detached(inst, r, {script=}) -> {mode=, attempt=, how=}   the detach starter
--       (sbatch instead of tmux/nohup; gpurent.lifecycle.detach.start calls it when present)
--   P.job_state(inst, r) -> {id, state, reason, pending, active} | nil   read by every
--       monitor.probe: active counts as alive, pending is the verdict "pending" (not stalled)
--       (and note: words the watch line shows beside the state, e.g. "requeued (attempt 2), ...";
--       ended = {class=, cause=}: the scheduler ended the job itself, not requeued (a Slurm
--       PREEMPTED or NODE_FAIL): the run's end, class and cause named, never relaunched)
-- and, for a scheduler's accounting and its stop verb from the command line:
--   P.usage(inst, r) -> {jobs = {{id, state, elapsed, gpu_seconds, cpu_seconds, final}...},
--       price_per_gpu_hour=, currency=}   what the run's jobs used (gpurent.billing.usage:
--       the watch's end, the close and `gpurent cost` record it in the ledger)
--   P.job_info(inst, job_id) -> {id, state, name, reason, active} | nil   one job by its id
--       (`gpurent billing cancel HOST JOB_ID`, with P.verbs.cancel_job and P.stop)
--   P.connected(inst, r)   called by Run:connect once the session is open (Slurm: the
--       profile's ~ paths made absolute with the login node's $HOME)
local fs = require "gpurent.util.fs"

local platform = {}

local GENERIC = "gpurent.platform.generic"
local loaded = {}

local function module_name(name)
  return "gpurent.platform." .. name
end

-- A platform name is a module name part: letters, digits, '_' and '-' (mapped to '_').
local function platform_name(x)
  if type(x) == "table" then return x.platform end
  return x
end

function platform.of(p)
  local name = platform_name(p)
  if type(name) ~= "string" or name == "" then return require(GENERIC) end
  if loaded[name] ~= nil then return loaded[name] end
  local mod = module_name(name:gsub("%-", "_"))
  local P = require(GENERIC)
  if name:match("^[%w_-]+$") and name ~= "generic" and name ~= "init" and package.searchpath(mod, package.path) then
    local ok, m = pcall(require, mod)
    if not ok then error(string.format("platform %s (profile %s): %s", name, name, tostring(m)), 0) end
    P = m
  end
  loaded[name] = P
  return P
end

-- The platform modules beside this file: each <name>.lua and <name>/init.lua but this
-- one and the generic one. The gotcha catalog reads every platform's entries.
function platform.names()
  local here = package.searchpath("gpurent.platform", package.path)
  local dir = here and here:match("^(.*)/init%.lua$")
  local names = {}
  if not dir or not fs.is_dir(dir) then return names end
  for f in fs.dir(dir) do
    local n = f:match("^([%w_]+)%.lua$")
    if not n and fs.exists(dir .. "/" .. f .. "/init.lua") then n = f:match("^([%w_]+)$") end
    if n and n ~= "init" and n ~= "generic" then names[#names + 1] = n end
  end
  table.sort(names)
  return names
end

function platform.power_off_irreversible(p)
  local b = type(p) == "table" and p.billing or {}
  return (type(b.meter_stop) == "table" and b.meter_stop.irreversible == true)
    or (type(b.verbs) == "table" and type(b.verbs.power_off) == "table" and b.verbs.power_off.reversible == false)
    or false
end

local function pattern_of(template, any)
  local p = template:gsub("[%^%$%(%)%%%.%[%]%*%+%-%?]", "%%%0")
  return "^" .. p:gsub("{[%w_]+}", any) .. "$"
end

function platform.profile_fits(p, alias, hostname)
  local c = type(p) == "table" and p.connect or {}
  if c.alias_pattern and alias and alias:match(pattern_of(c.alias_pattern, "[%%w_.-]+")) then
    return "its alias matches " .. c.alias_pattern
  end
  if c.host_pattern and hostname and hostname:match(pattern_of(c.host_pattern, "[%%w_-]+")) then
    return "its HostName matches " .. c.host_pattern
  end
  return nil
end

function platform.profile_for_host(alias, hostname)
  local profile = require "gpurent.config.profile"
  for _, e in ipairs(profile.search_entries()) do
    if (e.kind == "installed" or e.kind == "config") and fs.is_dir(e.dir) then
      local files = {}
      for f in fs.dir(e.dir) do files[#files + 1] = f end
      table.sort(files)
      for _, f in ipairs(files) do
        local name = f:match("^(.+)%.yaml$")
        if name and name ~= "schema" then
          local ok, p = pcall(profile.load, name)
          local why = ok and platform.profile_fits(p, alias, hostname)
          if why then return name, why end
        end
      end
    end
  end
  return nil
end

return platform
