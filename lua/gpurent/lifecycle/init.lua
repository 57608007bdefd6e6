-- gpurent.lifecycle: the engine that owns a run's life, as Nmap's NSE owns a
-- script's: a recipe gives it the run and an ordered list of phases, and the engine
-- owns what every recipe used to write by hand - the errors, the ledger (the run's
-- row and one row per phase), the notification, Ctrl-C, and the ending (teardown or
-- the reminder that the meter still runs).
--
-- A phase is a table that declares what it needs and what it produces:
--
--   {name = "environment", needs = {"run", "inst"}, produces = {"box", "python", "env"},
--    run = function(ctx, opts) ... return {box = ..., python = ...} end}
--
-- The engine checks the whole list before anything runs (every need produced by an
-- earlier phase or given in the context), checks each need again before its phase,
-- passes the phase a read-only view of the context and its options, and merges what
-- the phase returns into the context passed forward. A phase that returns a key it
-- did not declare, or one another phase produced, is refused: no phase writes fields
-- for another to find. Optional flags of a phase:
--   finishes = true   close/pull/teardown: from the first of them to the ledger's
--                     final status the engine holds the run's finish lock (run_lock)
--   ending = true     teardown: its failure or refusal is reported with the run's
--                     success, never as FAILED; when skipped, the reminder is said
--   report = fn(ctx)  the text of the success line ("verified results in DIR")
--
--   lifecycle.run(r, list, o) -> ctx          (raises the run's error after recording it)
--   lifecycle.attempt(r, list, o) -> outcome  {ok, ctx, error, phase, status}: the run's
--                                  error returned, not raised (a composition mistake is)
--     o.options = {PHASE = opts}   each phase's options (a name no phase has: usage
--                                  error); opts.skip = true | fn(ctx) skips the phase
--     o.context = {k = v}          keys given before the first phase (lifecycle.inherit)
--     o.push = bool                also send the outcome through the platform's push channel
--     o.tell = false               no notification line (sweep cells)
--     o.partial = true             success leaves the run's ledger status alone
--                                  (`gpurent watch RUN` without --finish)
--     o.record_status = false      the run's ledger status is left alone whatever
--                                  happens (pulling again a run that ended earlier)
--   lifecycle.phase(t) -> t        checks a phase's declaration
--   lifecycle.replace(list, name, phase) / insert_after(list, name, phase) /
--   insert_before(list, name, phase) / remove(list, name) -> a new list
--   lifecycle.names(list) -> {"connect", ...}
--   lifecycle.session(ctx) -> the session later phases run commands through (ctx.box,
--                             the proxy-hooked one, else ctx.inst)
--   lifecycle.inherit(ctx) -> the context a child run starts from (a sweep cell)
--   lifecycle.teardown_reminder(r, instance, why) -> the text said when teardown is
--                             skipped ("not requested") or refused
local errors = require "gpurent.util.errors"
local sys = require "gpurent.util.sys"

local lifecycle = {}

-- ---- declaring and composing ------------------------------------------------------

local function list_of(v, what, name)
  if v == nil then return {} end
  if type(v) ~= "table" then errors.usage(string.format("lifecycle: phase %s: %s must be a list of keys", name, what), 0) end
  for _, k in ipairs(v) do
    if type(k) ~= "string" then errors.usage(string.format("lifecycle: phase %s: %s holds a non-string key", name, what), 0) end
  end
  return v
end

function lifecycle.phase(t)
  if type(t) ~= "table" then errors.usage("lifecycle: a phase is a table {name =, needs =, produces =, run =}", 0) end
  if type(t.name) ~= "string" or not t.name:match("^[%a_][%w_%-]*$") then
    errors.usage("lifecycle: a phase needs a name (letters, digits, _ and -), got " .. tostring(t.name), 0)
  end
  if type(t.run) ~= "function" then errors.usage("lifecycle: phase " .. t.name .. " has no run function", 0) end
  list_of(t.needs, "needs", t.name)
  list_of(t.produces, "produces", t.name)
  return t
end

function lifecycle.names(list)
  local out = {}
  for i, ph in ipairs(list) do out[i] = ph.name end
  return out
end

local function index_of(list, name)
  for i, ph in ipairs(list) do if ph.name == name then return i end end
  errors.usage(string.format("lifecycle: no phase %q in the list (%s)", tostring(name), table.concat(lifecycle.names(list), ", ")), 0)
end

local function copy(list)
  local out = {}
  for i, ph in ipairs(list) do out[i] = ph end
  return out
end

function lifecycle.replace(list, name, phase)
  local out = copy(list)
  out[index_of(list, name)] = lifecycle.phase(phase)
  return out
end

function lifecycle.insert_after(list, name, phase)
  local out = copy(list)
  table.insert(out, index_of(list, name) + 1, lifecycle.phase(phase))
  return out
end

function lifecycle.insert_before(list, name, phase)
  local out = copy(list)
  table.insert(out, index_of(list, name), lifecycle.phase(phase))
  return out
end

function lifecycle.remove(list, name)
  local out = copy(list)
  table.remove(out, index_of(list, name))
  return out
end

function lifecycle.session(ctx) return ctx.box or ctx.inst end

-- A child run (a sweep cell) starts from its parent's context: its own run, and the
-- parent's session, interpreter, environment and secrets file - given, not produced,
-- so the child's phases cannot overwrite them and the child does not close them.
function lifecycle.inherit(ctx)
  local out = {}
  for k, v in pairs(ctx) do if k ~= "run" then out[k] = v end end
  return out
end

-- The one place the teardown reminder is worded.
function lifecycle.teardown_reminder(r, instance, why)
  local P = require("gpurent.platform").of(r.profile)
  return (why or "not requested") .. ": " .. P.hints.teardown_reminder(r.host, instance or r.host)
end

-- ---- checking a composition before anything runs ----------------------------------

-- Every need is given in the context or produced by an earlier phase; names are
-- unique; every options key names a phase of the list. A composition mistake is the
-- recipe author's: a usage error, raised before the first phase touches anything.
local function check_list(list, o)
  if type(list) ~= "table" or #list == 0 then errors.usage("lifecycle: the phase list is empty", 0) end
  local have, seen = {run = "the engine"}, {}
  for k in pairs(o.context or {}) do have[k] = "the context" end
  for _, ph in ipairs(list) do
    lifecycle.phase(ph)
    if seen[ph.name] then errors.usage("lifecycle: phase " .. ph.name .. " is in the list twice", 0) end
    seen[ph.name] = true
    for _, k in ipairs(ph.needs or {}) do
      if not have[k] then
        errors.usage(string.format("lifecycle: phase %s needs %q, which no earlier phase produces " ..
          "(the list: %s); put a phase that produces it before %s", ph.name, k,
          table.concat(lifecycle.names(list), ", "), ph.name), 0)
      end
    end
    for _, k in ipairs(ph.produces or {}) do have[k] = have[k] or ph.name end
  end
  for name in pairs(o.options or {}) do
    if not seen[name] then
      errors.usage(string.format("lifecycle: options for %q, which is not a phase of the list (%s)", tostring(name),
        table.concat(lifecycle.names(list), ", ")), 0)
    end
  end
end

-- ---- running one phase ------------------------------------------------------------

local function interrupted(e)
  return errors.is(e, "interrupted") or sys.interrupted()
end

-- Ctrl-C leaves a flag that interrupts every later SQLite or SSH call: forget it so
-- the ledger can be written and the locks let go (the exit code comes from the error).
local function forget_interrupt()
  sys.clear_interrupt()
end

-- One line for the ledger's phase detail: the whole reason, not just a heading.
local function detail_of(e)
  if type(e) == "table" and type(e.detail) == "string" then return e.detail end
  local text = errors.message(e):gsub("%s*\n%s*", "; ")
  return #text > 500 and (text:sub(1, 497) .. "...") or text
end

-- The context a phase sees: reads through, writes refused.
local function view(ctx, name)
  return setmetatable({}, {
    __index = ctx,
    __newindex = function(_, k)
      errors.usage(string.format("lifecycle: phase %s writes ctx.%s: a phase returns what it produces " ..
        "(declared in produces), it never writes the context", name, tostring(k)), 2)
    end,
    __pairs = function() return next, ctx, nil end,
  })
end

local function merge(st, ph, produced)
  if produced == nil then return end
  if type(produced) ~= "table" then
    errors.usage(string.format("lifecycle: phase %s returned a %s; a phase returns a table of what it produces",
      ph.name, type(produced)), 0)
  end
  local declared = {}
  for _, k in ipairs(ph.produces or {}) do declared[k] = true end
  for k, v in pairs(produced) do
    if not declared[k] then
      errors.usage(string.format("lifecycle: phase %s returned %q, which it does not declare in produces {%s}",
        ph.name, tostring(k), table.concat(ph.produces or {}, ", ")), 0)
    end
    if st.ctx[k] ~= nil then
      errors.usage(string.format("lifecycle: phase %s would overwrite %q, produced by %s", ph.name, k,
        st.from[k] or "an earlier phase"), 0)
    end
    st.ctx[k], st.from[k] = v, ph.name
  end
end

local function skipped(st, ph, opts)
  local s = opts.skip
  if type(s) == "function" then return s(view(st.ctx, ph.name)) end
  return s == true
end

local function run_one(st, ph)
  local r, ctx = st.r, st.ctx
  local opts = (st.o.options or {})[ph.name] or {}
  if skipped(st, ph, opts) then
    if ph.ending then r:say(ph.name, "%s", lifecycle.teardown_reminder(r, opts.instance)) end
    local pid = r:ledger(function(L) return L:start_phase(r.id, ph.name) end)
    r:ledger(function(L) L:end_phase(pid, "skipped", ph.ending and "not requested" or nil) end)
    return
  end
  for _, k in ipairs(ph.needs or {}) do
    if ctx[k] == nil then
      errors.usage(st.producer_of[k] and string.format("lifecycle: phase %s needs %q, but %s did not produce it",
        ph.name, k, st.producer_of[k]) or string.format("lifecycle: phase %s needs %q, which no phase produces", ph.name, k), 0)
    end
  end
  st.current = ph.name
  local pid = r:ledger(function(L) return L:start_phase(r.id, ph.name) end)
  local res = table.pack(pcall(ph.run, view(ctx, ph.name), opts))
  local outcome, detail = "ok", nil
  if not res[1] then
    if interrupted(res[2]) then
      forget_interrupt()
      st.interrupted = true
      outcome = "interrupted"
    else
      outcome = "failed"
    end
    detail = detail_of(res[2])
  else
    detail = type(res[3]) == "string" and res[3] or nil
  end
  pcall(r.ledger, r, function(L) L:end_phase(pid, outcome, detail) end)
  if not res[1] then
    st.failed_phase = ph
    error(res[2], 0)
  end
  merge(st, ph, res[2])
  st.done[#st.done + 1] = ph
end

-- ---- the ending -------------------------------------------------------------------

local function set_status(st, status)
  if st.o.record_status == false then return end
  local ok, err = pcall(st.r.ledger, st.r, function(L) L:end_run(st.r.id, status) end)
  if not ok then st.r:say("run", "(ledger: %s)", errors.message(err)) end
end

local function success_text(st)
  for i = #st.done, 1, -1 do
    local ph = st.done[i]
    if ph.report then return ph.report(st.ctx) end
  end
  return nil
end

local function tell(st, message)
  if st.o.tell == false then return end
  st.r:tell(message, st.o.push)
end

-- Decide, record and say how the run ended; returns the error to raise (or nil).
local function conclude(st, ok, err)
  local r = st.r
  if ok and st.o.partial then
    -- a part of the run's life went well; the run itself is not finished by it
    local names = {}
    for _, ph in ipairs(st.done) do names[#names + 1] = ph.name end
    r:say("run", "run %s: %s done (the run's status is left to the phases that finish it)", r.id, table.concat(names, ", "))
    return nil
  end
  if ok then
    local text = success_text(st)
    set_status(st, "succeeded")
    r:say("run", "run %s succeeded%s", r.id, text and (": " .. text) or "")
    tell(st, "run " .. r.id .. " succeeded" .. (text and (": " .. text) or ""))
    st.status = "succeeded"
    return nil
  end
  -- another gpurent finishing this run owns its ledger status
  if require("gpurent.lifecycle.run_lock").is_busy(err) then return err end
  if st.interrupted or interrupted(err) then
    forget_interrupt()
    local msg
    if st.ctx.job ~= nil then
      st.status = "detached"
      msg = string.format("run %s detached: the training keeps running on %s; re-attach from any shell with " ..
        "`gpurent watch %s` (add --finish to seal and pull it when it is done)", r.id, r.host, r.id)
    else
      st.status = "interrupted"
      msg = string.format("run %s interrupted during %s, before the job was launched%s", r.id, st.current or "the start",
        st.current == "launch" and " (it may have started: `gpurent watch " .. r.id .. " --once` tells)" or
        ": nothing runs on the box for it")
    end
    set_status(st, st.status)
    r:say("run", "%s", msg)
    tell(st, msg)
    return errors.new("interrupted", msg)
  end
  -- a refused or failed ending (teardown) does not undo results already verified
  if st.failed_phase and st.failed_phase.ending then
    local text = success_text(st)
    st.status = "succeeded"
    set_status(st, "succeeded")
    r:say("run", "run %s succeeded%s; %s %s: %s", r.id, text and (": " .. text) or "", st.failed_phase.name,
      errors.is(err, "refusal") and "refused" or "failed", errors.message(err))
    r:say(st.failed_phase.name, "%s", lifecycle.teardown_reminder(r, ((st.o.options or {})[st.failed_phase.name] or {}).instance,
      errors.is(err, "refusal") and "refused" or "not done"))
    tell(st, "run " .. r.id .. " succeeded; " .. st.failed_phase.name .. " not done: " .. detail_of(err))
    return err
  end
  st.status = (type(err) == "table" and err.still_running) and "detached" or "failed"
  set_status(st, st.status)
  r:say("run", "run %s %s: %s", r.id, st.status == "detached" and "detached (still running on the box)" or "FAILED",
    errors.message(err))
  tell(st, "run " .. r.id .. (st.status == "detached" and " detached: " or " failed: ") .. detail_of(err))
  return err
end

-- Phases from i on; from the first finishing phase the rest and the conclusion run
-- under the run's finish lock, so no second finisher slips in before the final status.
local function execute(st, list, i)
  for j = i, #list do
    local ph = list[j]
    if ph.finishes and not st.locked then
      local run_lock = require "gpurent.lifecycle.run_lock"
      if not lifecycle.session(st.ctx) then
        errors.usage("lifecycle: phase " .. ph.name .. " finishes the run, which needs a session (inst) to lock it", 0)
      end
      return run_lock.hold(st.r, lifecycle.session(st.ctx), function()
        st.locked = true
        -- a finisher that comes after another one finished the run says so and stops
        -- (a lifecycle that does not record the run's status pulls again on purpose)
        local row = st.o.record_status ~= false and st.r:ledger(function(L) return L:run(st.r.id) end)
        if row and row.status == "succeeded" then
          st.already = true
          st.r:say("run", "run %s was already finished by another gpurent (ledger status succeeded): " ..
            "not finished again", st.r.id)
          return
        end
        local ok, err = pcall(execute, st, list, j)
        st.final = conclude(st, ok, err)
        st.concluded = true
      end)
    end
    run_one(st, ph)
  end
end

function lifecycle.attempt(r, list, o)
  o = o or {}
  check_list(list, o)
  local st = {r = r, o = o, ctx = {run = r}, from = {run = "the engine"}, producer_of = {}, done = {}}
  for k, v in pairs(o.context or {}) do st.ctx[k], st.from[k] = v, "the context" end
  for _, ph in ipairs(list) do
    for _, k in ipairs(ph.produces or {}) do st.producer_of[k] = st.producer_of[k] or ("phase " .. ph.name) end
  end
  local ok, err = pcall(execute, st, list, 1)
  if not st.concluded then
    if not ok and not st.interrupted and interrupted(err) then st.interrupted = true end
    if ok and st.already then st.final = nil else st.final = conclude(st, ok, err) end
  elseif not ok then
    st.final = err     -- the lock itself failed after the conclusion
  end
  -- a session this run opened is closed; one given in the context belongs to the caller
  if st.from.inst and st.from.inst ~= "the context" and st.ctx.inst then pcall(st.ctx.inst.close, st.ctx.inst) end
  return {ok = st.final == nil, ctx = st.ctx, error = st.final, status = st.status,
          phase = st.failed_phase and st.failed_phase.name, already = st.already}
end

function lifecycle.run(r, list, o)
  local out = lifecycle.attempt(r, list, o)
  if not out.ok then error(out.error, 0) end
  return out.ctx
end

return lifecycle
