-- gpurent.billing.autostop: the on-box autostop watchdog (issue 6). Arming it is the
-- person's explicit approval of ONE reversible action: the profile's in-instance
-- power-off verb (billing.meter_stop.in_instance_verb: the meter stops, every disk stays). It
-- never releases. The watchdog itself is lua/gpurent/remote/autostop.sh (POSIX sh,
-- no python3 on the box); this module pushes it, configures, starts, stops and
-- reads it over SSH.
--
-- On-box contract (STATE = $HOME/.gpurent/autostop, on the system disk: survives a power-off):
--   STATE/autostop-<sha256:16>.sh  the watchdog, content-addressed: a different script is
--                                  a new file; an existing one is never rewritten
--   STATE/config                   KEY='value' lines the watchdog sources once at start
--                                  (INSTANCE IDLE TTL INTERVAL STALL STOP_STALLED THRESHOLD
--                                  STOP_VERB JOB_GLOB LOG_REL OUT_REL SESSION SESSION_PREFIX
--                                  STATE DURABLE ARMED_AT; with --budget also BUDGET_MILLI
--                                  SPENT_MILLI PRICE_MILLI BUDGET_WARN CKPT_GLOB PUSH_URL
--                                  PUSH_AUTH_HEADER PUSH_TOKEN_FILE), replaced only with no live watchdog
--                                  (the sweep queue, remote/run_queue.sh, reads the budget
--                                  keys and `readings` before each cell while it lives)
--   STATE/push.token               the platform's push token, when the PERSON puts it there
--                                  (gpurent never copies its token to a box): the budget
--                                  warning and the budget stop are then pushed too
--   STATE/pid                      "PID STARTTIME" written by the watchdog itself; it is
--                                  signalled only while /proc/PID matches both and its
--                                  cmdline names STATE/autostop-
--   STATE/mode                     tmux (session `gpurent-autostop`) | nohup (setsid)
--   STATE/readings                 the last tick: verdict, why, gpu, idle_since, jobs ...
--   STATE/watchdog.log             verdict changes, stalls, stops (~256 KiB, one rotation)
--   STATE/last-stop                why it powered the box off (also on the durable tier)
--   DURABLE = <durable tier>/.gpurent/autostop/<instance>: last-stop + events.log (the
--                                  durable tier is region-shared: one dir per instance)
-- Jobs of ours are the lifecycle's (gpurent.run / gpurent.detach, read not changed):
--   every <run_root>/active/<id>/.gpurent with `current`, `aN/pid` (wrapper PID, cmdline
--   holds .gpurent/run-v), `aN/started`, `aN/DONE|FAILED` ("exit=N stage=S at=T"), tmux
--   session run.session_name(id). A job is running while its session or wrapper PID is
--   alive; its durable sync is verified when DONE says stage=done (the wrapper writes
--   DONE only after the checked sync). The glob, log and out names come from run.paths.
--
--   autostop.parse_duration("30m") -> 1800       (s, m, h, d; a bare number is refused)
--   autostop.layout(profile, instance) -> {state=, durable=, verb=, job_glob=, ...}
--   autostop.config_text(cfg) -> text            autostop.script_text() -> text, sha256
--   autostop.arm(inst, {instance=, idle=, ttl=, interval=, stop_stalled=, threshold=,
--                        stall=, mode=, profile=, budget=, budget_warn=}) -> {pid=, mode=, script=, reused=}
--       budget (yuan): the watchdog parks the box when the spend reaches it (after the
--       durable copy of each running job's newest checkpoint), warning at budget_warn %;
--       the price and the spend so far come from the platform's API at arming
--       (autostop.budget_config), so the on-box script stays generic
--   autostop.off(inst, {instance=, profile=}) -> {pid=, session=, removed=, text=}
--   autostop.status(inst, {instance=, profile=}) -> {armed=, alive=, pid=, config=, readings=, ...}
--   autostop.command(ref, opts) -> exit code     (`gpurent billing autostop`)
local errors = require "gpurent.util.errors"
local hash = require "gpurent.util.hash"
local profile_mod = require "gpurent.config.profile"
local json = require "gpurent.util.json"
local remote = require "gpurent.remote"

local autostop = {}

autostop.SESSION = "gpurent-autostop"
-- expanded by the box's shell, inside double quotes (the same as ST in remote/autostop_lib.sh)
autostop.STATE = "${HOME:-/root}/.gpurent/autostop"
autostop.DEFAULT_INTERVAL = 60
autostop.DEFAULT_STALL = 1800

local q = require("gpurent.util.shell").quote

-- ---- durations and layout ------------------------------------------------------------

local UNITS = {s = 1, m = 60, h = 3600, d = 86400}

function autostop.parse_duration(s, what)
  what = what or "duration"
  local n, u = tostring(s or ""):match("^(%d+%.?%d*)([smhd])$")
  if not n then
    errors.usage(string.format("%s %q: give a number with a unit, e.g. 30s, 30m, 6h (s, m, h, d)", what,
      tostring(s)), 0)
  end
  local secs = math.floor(tonumber(n) * UNITS[u] + 0.5)
  if secs < 1 then errors.usage(what .. " must be at least 1s", 0) end
  return secs
end

local function instance_slug(name)
  local s = tostring(name):gsub("[^%w._-]", "_")
  return s
end

-- Everything the watchdog needs to know about the platform, from the profile.
function autostop.layout(p, instance)
  local run = require "gpurent.lifecycle.run"
  local ms = p.billing and p.billing.meter_stop
  local verb = type(ms) == "table" and ms.in_instance_verb
  if not verb or verb == "" then
    errors.refuse(string.format("profile %s has no in-instance power-off verb (billing.meter_stop.in_instance_verb): " ..
      "an on-box autostop cannot stop its meter", tostring(p.platform)), 0)
  end
  if require("gpurent.platform").power_off_irreversible(p) then
    errors.refuse(string.format("profile %s: its in-instance power-off is irreversible; autostop only arms a reversible stop",
      tostring(p.platform)), 0)
  end
  local P, I = "\1P\1", "\1I\1"
  local paths = run.paths(p, P, I)
  local function rel(path)
    local prefix = paths.active .. "/"
    assert(path:sub(1, #prefix) == prefix, "run path outside the run dir: " .. path)
    return path:sub(#prefix + 1)
  end
  local glob = paths.meta:gsub("\1P\1", "*"):gsub("\1I\1", "*")
  local durable = profile_mod.durable_tier(p)
  return {
    state = autostop.STATE, verb = verb, job_glob = glob, log_rel = rel(paths.log), out_rel = rel(paths.out),
    session_prefix = run.session_name(""), session = autostop.SESSION,
    durable = durable and (durable.path .. "/.gpurent/autostop/" .. instance_slug(instance)) or "",
    instance = instance_slug(instance),
  }
end

-- ---- the files pushed ------------------------------------------------------------------

function autostop.script_path() return remote.path("autostop") end

-- The watchdog as pushed: the file itself, unfilled (it takes its values from CONFIG).
function autostop.script_text()
  local text = remote.text("autostop")
  return text, hash.sha256(text)
end

local CONFIG_KEYS = {"INSTANCE", "IDLE", "TTL", "INTERVAL", "STALL", "STOP_STALLED", "THRESHOLD", "STOP_VERB",
  "JOB_GLOB", "LOG_REL", "OUT_REL", "SESSION", "SESSION_PREFIX", "DURABLE"}

-- Written only when set (the watchdog has a default for each: no budget).
local OPTIONAL_KEYS = {"BUDGET_MILLI", "SPENT_MILLI", "PRICE_MILLI", "BUDGET_WARN", "CKPT_GLOB", "PUSH_URL",
  "PUSH_AUTH_HEADER", "PUSH_TOKEN_FILE"}
autostop.CKPT_GLOB = "*.pth *.pt *.ckpt *.safetensors"

function autostop.config_text(c)
  local lines = {"# gpurent autostop config (written by lua/gpurent/billing/autostop.lua); sourced by the watchdog",
    'STATE="' .. autostop.STATE .. '"'}
  for _, k in ipairs(CONFIG_KEYS) do
    local v = c[k]
    if v == nil then error("autostop.config_text: no " .. k, 2) end
    lines[#lines + 1] = k .. "=" .. q(v)
  end
  for _, k in ipairs(OPTIONAL_KEYS) do
    if c[k] ~= nil then lines[#lines + 1] = k .. "=" .. q(c[k]) end
  end
  return table.concat(lines, "\n") .. "\n"
end

-- ---- on-box scripts: lua/gpurent/remote/autostop_{install,arm,off,status}.sh -----------

local function run_box(inst, what, script, opts)
  opts = opts or {}
  local res = inst:sh(script, {stdin = opts.stdin, timeout = opts.timeout or 60, idempotent = opts.idempotent})
  local out = res.stdout or ""
  local refuse = out:match("gr_refuse ([^\n]*)")
  if refuse then errors.refuse(string.format("autostop %s on %s: %s", what, tostring(inst), refuse), 0) end
  if res.code ~= 0 then
    error(string.format("autostop %s on %s: exited %s: %s%s", what, tostring(inst), tostring(res.code),
      out:match("gr_error ([^\n]*)") or out, res.stderr or ""), 0)
  end
  return out
end

-- ---- verbs -------------------------------------------------------------------------------

local function load_profile(o)
  if type(o.profile) == "table" then return o.profile end
  return profile_mod.load(o.profile or profile_mod.default_name())
end

-- The budget's inputs, from the platform's API (the price) and the ledger refreshed
-- from it (the spend so far on this box, every linked name): money in thousandths.
function autostop.budget_config(p, o)
  local P = require("gpurent.platform").of(p)
  local c, why = P.client()
  if not c then
    errors.usage("--budget needs the platform's API for the price and the spend so far: " .. tostring(why), 0)
  end
  local meter = require "gpurent.billing.meter"
  local it = c:find(o.instance)
  meter.refresh(c, {profile = type(o.profile) == "string" and o.profile or profile_mod.default_name()})
  local price = require("gpurent.billing").price_per_hour(it, c.per_yuan)
  if not price then error("autostop --budget: the API gives no price for " .. tostring(o.instance), 0) end
  local spent = meter.spent(o.instance)
  local push = P.push_target and P.push_target() or {}
  return {BUDGET_MILLI = math.floor(o.budget * 1000 + 0.5), SPENT_MILLI = math.floor(spent * 1000 + 0.5),
    PRICE_MILLI = math.floor(price * 1000 + 0.5), BUDGET_WARN = o.budget_warn or 80, CKPT_GLOB = autostop.CKPT_GLOB,
    PUSH_URL = push.url or "", PUSH_AUTH_HEADER = push.auth_header or "Authorization", PUSH_TOKEN_FILE = "push.token"},
    {spent = spent, price = price}
end

function autostop.arm(inst, o)
  local p = load_profile(o)
  local L = autostop.layout(p, o.instance or inst.target or "instance")
  if not o.idle and not o.ttl and not o.budget then
    errors.usage("autostop: give --idle DURATION and/or --ttl DURATION and/or --budget YUAN", 0)
  end
  local bcfg, bfacts = {}, nil
  if o.budget then bcfg, bfacts = autostop.budget_config(p, o) end
  local interval = o.interval or autostop.DEFAULT_INTERVAL
  local text, sha = autostop.script_text()
  local short = sha:sub(1, 16)
  local installed = run_box(inst, "install", remote.script("autostop_install", {SHORT = short, HASH = sha}),
    {stdin = text, idempotent = true})
  local cfg = autostop.config_text{
    INSTANCE = L.instance, IDLE = o.idle or 0, TTL = o.ttl or 0, INTERVAL = interval,
    STALL = o.stall or o.idle or autostop.DEFAULT_STALL, STOP_STALLED = o.stop_stalled and 1 or 0,
    THRESHOLD = o.threshold or 5, STOP_VERB = L.verb, JOB_GLOB = L.job_glob, LOG_REL = L.log_rel,
    OUT_REL = L.out_rel, SESSION = L.session, SESSION_PREFIX = L.session_prefix, DURABLE = L.durable,
    BUDGET_MILLI = bcfg.BUDGET_MILLI, SPENT_MILLI = bcfg.SPENT_MILLI, PRICE_MILLI = bcfg.PRICE_MILLI,
    BUDGET_WARN = bcfg.BUDGET_WARN, CKPT_GLOB = bcfg.CKPT_GLOB, PUSH_URL = bcfg.PUSH_URL,
    PUSH_AUTH_HEADER = bcfg.PUSH_AUTH_HEADER, PUSH_TOKEN_FILE = bcfg.PUSH_TOKEN_FILE}
  -- one round trip: stop the live watchdog (exact PID), replace the config, start
  local out = run_box(inst, "arm", remote.script("autostop_arm",
    {SESSION = autostop.SESSION, SHORT = short, MODE = o.mode or "auto"}), {stdin = cfg})
  return {pid = tonumber(out:match("gr_pid (%d+)")), starttime = out:match("gr_pid %d+ (%d+)"),
    mode = out:match("gr_mode (%a+)"), armed_at = tonumber(out:match("gr_armed_at (%d+)")),
    script = installed:match("gr_script %a+ (%S+)"), reused = installed:match("gr_script reused") ~= nil,
    replaced = tonumber(out:match("gr_stopped_pid (%d+)")), layout = L, interval = interval, budget = bfacts}
end

function autostop.off(inst, o)
  o = o or {}
  local L = autostop.layout(load_profile(o), o.instance or inst.target or "instance")
  local out = run_box(inst, "off", remote.script("autostop_off", {SESSION = autostop.SESSION, DURABLE = L.durable}))
  return {pid = tonumber(out:match("gr_stopped_pid (%d+)")), session = out:match("gr_stopped_session (%S+)"),
          removed = out:match("gr_removed (%S+)"), text = out}
end

function autostop.parse_status(out)
  local s = {config = {}, readings = {}, last_stop = {}, last_stop_text = {}, log = {}, scripts = {}}
  for line in out:gmatch("[^\n]+") do
    local tag, rest = line:match("^gr_(%a+) ?(.*)$")
    if tag == "now" then s.now = tonumber(rest)
    elseif tag == "dir" then s.dir = rest == "1"
    elseif tag == "alive" then
      local a, pid = rest:match("^(%d) (%S+)")
      s.alive, s.pid = a == "1", tonumber(pid)
    elseif tag == "mode" then s.mode = rest
    elseif tag == "cfg" then local k, v = rest:match("^(%S+) (.*)$"); if k then s.config[k] = v:gsub("^'(.*)'$", "%1") end
    elseif tag == "read" then local k, v = rest:match("^(%S+) ?(.*)$"); if k then s.readings[k] = v end
    elseif tag == "stop" then
      s.last_stop_text[#s.last_stop_text + 1] = rest
      local k, v = rest:match("^([%w_]+)=(.*)$")
      if k then s.last_stop[k] = v end
    elseif tag == "log" then s.log[#s.log + 1] = rest
    elseif tag == "script" then s.scripts[#s.scripts + 1] = rest
    end
  end
  s.armed = s.alive == true
  if not next(s.last_stop) then s.last_stop = nil end
  return s
end

function autostop.status(inst, o)
  o = o or {}
  local L = autostop.layout(load_profile(o), o.instance or inst.target or "instance")
  local out = run_box(inst, "status", remote.script("autostop_status", {DURABLE = L.durable}), {idempotent = true})
  local s = autostop.parse_status(out)
  s.durable = L.durable
  return s
end

-- ---- rendering -----------------------------------------------------------------------------

local function dur(s)
  s = tonumber(s)
  if not s then return "?" end
  if s <= 0 then return "off" end
  if s % 3600 == 0 then return (s // 3600) .. "h" end
  if s % 60 == 0 and s >= 60 then return (s // 60) .. "m" end
  return s .. "s"
end

function autostop.render_status(name, s)
  local lines = {}
  local c, r = s.config, s.readings
  if s.armed then
    local ttl = tonumber(c.TTL) or 0
    local left = ""
    if ttl > 0 and s.now and tonumber(c.ARMED_AT) then
      left = string.format(" (%s left)", dur(math.max(0, tonumber(c.ARMED_AT) + ttl - s.now)))
    end
    lines[#lines + 1] = string.format("autostop on %s: ARMED, watchdog PID %d under %s; idle window %s, TTL %s%s, interval %s, stop-stalled %s; verb '%s'",
      name, s.pid, s.mode or "?", dur(c.IDLE), dur(c.TTL), left, dur(c.INTERVAL),
      c.STOP_STALLED == "1" and "on" or "off", c.STOP_VERB or "?")
  elseif s.dir then
    lines[#lines + 1] = string.format("autostop on %s: NOT RUNNING (files left in the state dir%s)", name,
      s.pid and (", last watchdog PID " .. s.pid) or "")
  else
    lines[#lines + 1] = string.format("autostop on %s: not armed", name)
  end
  if next(r) then
    local ago = (s.now and tonumber(r.at)) and (" " .. dur(math.max(0, s.now - tonumber(r.at))) .. " ago") or ""
    lines[#lines + 1] = string.format("  last reading%s: %s: %s", ago, r.verdict or "?", r.why or "")
    lines[#lines + 1] = string.format("  GPU %s; sessions %s; running %s; last job %s %s",
      r.gpu ~= "" and r.gpu or "?", (r.sessions or "") ~= "" and r.sessions or "none",
      (r.running or "") ~= "" and r.running or "none", (r.last_job or "") ~= "" and r.last_job or "none",
      r.last_job_state or "")
    if (r.stalled or "") ~= "" then lines[#lines + 1] = "  STALLED: " .. r.stalled .. " (alive, GPU idle, nothing new on disk)" end
    if (r.budget or "") ~= "" then
      lines[#lines + 1] = "  budget: " .. r.budget .. ((r.budget_warned or "") ~= "" and
        string.format("; WARNING given at %s%%", c.BUDGET_WARN or "?") or "")
    end
  end
  if s.last_stop then
    lines[#lines + 1] = string.format("  last stop: %s", s.last_stop_text[1] or "")
    lines[#lines + 1] = string.format("    reason %s: %s", s.last_stop.reason or "?", s.last_stop.why or "")
  end
  return table.concat(lines, "\n") .. "\n"
end

-- ---- the command ------------------------------------------------------------------------------

-- Options of the arming form, checked before any connection is made.
local function arm_options(ref, opts)
  local o = {instance = ref, profile = opts.profile}
  o.idle = opts.idle and autostop.parse_duration(opts.idle, "--idle")
  o.ttl = opts.ttl and autostop.parse_duration(opts.ttl, "--ttl")
  o.interval = opts.interval and autostop.parse_duration(opts.interval, "--interval")
  o.stop_stalled, o.mode = opts.stop_stalled, opts.mode
  if opts.budget then
    o.budget = tonumber(opts.budget)
    if not o.budget or o.budget <= 0 then errors.usage("--budget wants a positive number of yuan, not " .. opts.budget, 0) end
  end
  if opts.budget_warn then
    o.budget_warn = math.tointeger(tonumber(opts.budget_warn))
    if not o.budget or not o.budget_warn or o.budget_warn < 1 or o.budget_warn > 100 then
      errors.usage("--budget-warn wants an integer percent 1..100, with --budget", 0)
    end
  end
  if not o.idle and not o.ttl and not o.budget then
    errors.usage("gpurent billing autostop " .. ref .. ": give --idle DURATION and/or --ttl DURATION and/or --budget YUAN"
      .. " (or --status, --off)", 0)
  end
  if opts.threshold then
    o.threshold = tonumber(opts.threshold)
    if not o.threshold or o.threshold < 0 or o.threshold > 100 or o.threshold % 1 ~= 0 then
      errors.usage("--threshold wants an integer percent 0..100", 0)
    end
  end
  if o.mode and o.mode ~= "tmux" and o.mode ~= "nohup" and o.mode ~= "auto" then
    errors.usage("--mode wants tmux, nohup or auto", 0)
  end
  return o
end

local function print_armed(ref, o, r)
  local conds = {}
  if o.idle then conds[#conds + 1] = "idle for " .. dur(o.idle) .. " (GPU at or under " .. (o.threshold or 5) ..
    "%, no job of ours running, no SSH session) with the last job's durable sync verified" end
  if o.ttl then conds[#conds + 1] = "the TTL of " .. dur(o.ttl) .. " has passed with no job running and the last job synced" end
  if o.stop_stalled then conds[#conds + 1] = "every live job is stalled (--stop-stalled)" end
  if o.budget then
    conds[#conds + 1] = string.format("the spend reaches %.2f yuan (now %.2f at %.2f yuan/h; warning at %d%%), " ..
      "jobs or not, after copying each running job's newest checkpoint to its durable dir", o.budget,
      r.budget.spent, r.budget.price, o.budget_warn or 80)
  end
  io.write(string.format("autostop on %s: ARMED, watchdog PID %d under %s%s (script %s%s)\n", ref, r.pid or -1,
    r.mode or "?", r.mode == "tmux" and (" session " .. autostop.SESSION) or " (tmux absent: nohup + setsid)",
    r.script or "?", r.reused and ", unchanged" or ""))
  if r.replaced then io.write(string.format("  replaced the earlier watchdog PID %d\n", r.replaced)) end
  io.write(string.format("  it runs '%s' on the box (reversible power-off: the meter stops, the disks stay; nothing is released) when %s.\n",
    r.layout.verb, table.concat(conds, ", or ")))
  io.write("  Arming it is your approval of that power-off. Every " .. dur(r.interval) ..
    ". Why it stopped goes to " .. (r.layout.durable ~= "" and r.layout.durable or "the box") .. "/last-stop.\n")
  io.write(string.format("  status: gpurent billing autostop %s --status; disarm: gpurent billing autostop %s --off\n", ref, ref))
end

function autostop.command(ref, opts)
  if not ref then errors.usage("gpurent billing autostop needs INSTANCE (an ssh_config alias or user@host:port)", 0) end
  local arming = not opts.off and not opts.status
  local o = arming and arm_options(ref, opts) or {instance = ref, profile = opts.profile}
  local okc, inst = pcall(require("gpurent.transport.instance").connect, ref)
  if not okc then
    if not errors.is(inst, "transport") then error(inst, 0) end
    -- most often a powered-off box: say where its watchdog's account of the stop lives
    local okl, lay = pcall(autostop.layout, profile_mod.load(opts.profile or profile_mod.default_name()), ref)
    local durable = okl and lay.durable ~= "" and lay.durable or nil
    local where = durable and string.format("its watchdog wrote why it stopped to %s/last-stop on the durable tier: " ..
      "read it from a running peer of the same region (gpurent exec PEER -- cat %s/last-stop), or ", durable, durable)
      or "its watchdog wrote why it stopped on the box itself: "
    errors.raise("transport", string.format("cannot reach %s (%s).\n  A powered-off box has no SSH: %spower it on " ..
      "(gpurent billing power-on) to %s the watchdog.", ref, errors.message(inst):match("[^\n]*"), where,
      arming and "arm" or (opts.off and "disarm" or "read")), 0, {code = inst.code})
  end
  local ok, rc = pcall(function()
    if opts.off then
      local r = autostop.off(inst, o)
      if r.pid then io.write(string.format("autostop on %s: stopped watchdog PID %d%s; removed %s\n", ref, r.pid,
        r.session and (" (tmux session " .. r.session .. ")") or "", r.removed or "nothing"))
      else io.write(string.format("autostop on %s: no live watchdog; removed %s\n", ref, r.removed or "nothing")) end
      return 0
    end
    if opts.status then
      local s = autostop.status(inst, o)
      if s.last_stop then                    -- told once per stop (gpurent.notify: terminal, ledger, push)
        require("gpurent.notify").send{kind = "autostop", instance = ref, once = true, profile_name = opts.profile,
          message = string.format("autostop powered the box off: %s (reason %s: %s)", s.last_stop_text[1] or "?",
            s.last_stop.reason or "?", s.last_stop.why or "")}
      end
      if opts.json then
        s.instance = ref
        io.write(json.encode_stable(s), "\n")
      else
        io.write(autostop.render_status(ref, s))
      end
      return 0
    end
    print_armed(ref, o, autostop.arm(inst, o))
    return 0
  end)
  pcall(inst.close, inst)
  if not ok then error(rc, 0) end
  return rc
end

return autostop
