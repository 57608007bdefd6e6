-- gpurent.billing.cancel: `gpurent billing cancel HOST RUN_ID|JOB_ID|JOB_TASK`, a scheduler's stop
-- verb (Slurm's scancel) from the command line. The job is named by its id (JOB_TASK: one task
-- of a job array, a sweep's cell) or by the
-- run whose current attempt it is (the ledger's run: its host, profile and paths); the
-- scheduler is asked what the job is, then the platform's one guarded function sends
-- the verb (P.stop: the teardown gate's cancel_job, whose approval only the person
-- gives: --approve HOST, parsed by the C host, or the name typed on the terminal).
-- Without approval it is refused (exit 3) and nothing is sent; --dry-run names the job
-- and the gate's verdict and sends nothing; a job that already ended is left alone.
--
--   cancel.run(host, what, {profile=, dry_run=}) -> exit code
local errors = require "gpurent.util.errors"
local platform = require "gpurent.platform"
local profile_mod = require "gpurent.config.profile"

local cancel = {}

-- a job id, or one task of a job array (JOB_TASK: one cell of a Slurm sweep)
local function is_job_id(s) return s:match("^%d+$") ~= nil or s:match("^%d+_%d+$") ~= nil end

-- The profile of HOST: --profile, else the ledger's record of the host, else the default.
local function host_profile(host, explicit)
  if explicit then return explicit end
  local ledger = require "gpurent.state.ledger"
  if ledger.exists() then
    local L = ledger.open()
    local ok, row = pcall(function() return L.db:query("SELECT profile FROM instances WHERE name = ?", host)[1] end)
    L:close()
    if ok and row and row.profile then return row.profile end
  end
  return profile_mod.default_name()
end

-- -> r (nil for a job id), profile name, profile, the platform, the connected instance
local function target(host, what, opts)
  if is_job_id(what) then
    local name = host_profile(host, opts.profile)
    local p = profile_mod.load(name)
    return nil, name, p, platform.of(p)
  end
  require("gpurent.lifecycle.run").check_name("run id", what)
  local r = require("gpurent.lifecycle.run").load(what, {profile = opts.profile, out = io.stderr})
  if r.host ~= host then
    errors.usage(string.format("run %s is on %s, not %s: gpurent billing cancel %s %s", what, tostring(r.host), host,
      tostring(r.host), what), 0)
  end
  return r, opts.profile or r.profile_name, r.profile, platform.of(r.profile)
end

function cancel.run(host, what, opts)
  opts = opts or {}
  if type(what) ~= "string" or what == "" then
    errors.usage("usage: gpurent billing cancel HOST RUN_ID|JOB_ID [--approve HOST] [--dry-run]", 0)
  end
  local r, pname, _, P = target(host, what, opts)
  if not (P.verbs or {}).cancel_job then
    errors.usage(string.format("%s's profile %s (platform %s) has no scheduler job to cancel; name the cluster's " ..
      "profile with --profile NAME (slurm, or a site overlay extending it)", host, pname, P.name), 0)
  end
  local inst = r and r:connect() or require("gpurent.transport.instance").connect(host)
  local ok, code = pcall(function()
    local st
    if r then
      st = P.job_state(inst, r)
      if not st then errors.usage("run " .. r.id .. " on " .. host .. " has no scheduler job recorded (never launched)", 0) end
    else
      st = P.job_info(inst, what)
      if not st then errors.usage("job " .. what .. " is not known to the scheduler on " .. host .. "; nothing sent", 0) end
    end
    local label = string.format("job %s%s%s on %s: %s%s", st.id, st.name and (" (" .. st.name .. ")") or "",
      r and (" of run " .. r.id) or "", host, st.state, st.reason and (" (" .. st.reason .. ")") or "")
    if not st.active then
      io.write(label, ": already ended, nothing to cancel; nothing sent\n")
      return 0
    end
    io.write(label, "\n")
    local sok, res = pcall(P.stop, {inst = inst, host = host, job = st.id, run = r, dry_run = opts.dry_run,
      profile_name = pname, out = io.stderr})
    if opts.dry_run then
      if not sok and not errors.is_refusal(res) then error(res, 0) end
      io.write(string.format("dry run: would cancel job %s on %s%s; nothing sent\n", st.id, host,
        sok and "" or " (the gate would refuse now: see above)"))
      return 0
    end
    if not sok then error(res, 0) end
    io.write(string.format("%s: job %s cancelled (%s)\n", host, st.id, res.status))
    return 0
  end)
  pcall(inst.close, inst)
  if not ok then error(code, 0) end
  return code
end

return cancel
