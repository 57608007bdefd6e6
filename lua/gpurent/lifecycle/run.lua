-- gpurent.run: the state of one lifecycle run, shared by the phases.
--
-- A run is a plain table: its id, the host and profile it runs on, where everything
-- lives on the box (derived from the profile, never literals), and the options the
-- watcher needs. Everything a new shell needs to pick the run up again is in the
-- ledger (the run row's params) and on the box (active/<id>/.gpurent/), never only in
-- this process: `gpurent watch RUN` rebuilds the same table with run.load(RUN).
--
--   run.new{host=, project=, profile=NAME (default: the default profile), id=?, recipe=, ...} -> r   (records it)
--   run.load(id [, {ledger_path=}]) -> r              (from the ledger)
--   run.paths(profile, project, id) -> {root, active, out, meta, log, partial, export,
--                                       quarantine, durable_ckpt, results}
--   r:say(phase, fmt, ...)        one "[phase] text" line on stdout (flushed); with
--                                 run.new{label = HOST} each line starts "[HOST] "
--   r:phase(name, fn, ...)        run fn with the phase recorded in the ledger
--   r:ledger(fn)                  fn(L) with the ledger open (closed after)
--   r:finish(status)              ledger end_run: succeeded|failed|interrupted|detached
--   r:relaunch(inst [, {mode}])   the identical wrapper again (watch's fixed remedy)
-- A run's life (its phases, errors, Ctrl-C, ending) is gpurent.lifecycle's.
local profile_mod = require "gpurent.config.profile"
local ledger = require "gpurent.state.ledger"
local json = require "gpurent.util.json"
local errors = require "gpurent.util.errors"

local run = {}
local Run = {}
Run.__index = Run
run.Run = Run

local NAME = "^[%w][%w._%-]*$"

function run.check_name(kind, v)
  if type(v) ~= "string" or not v:match(NAME) or #v > 100 then
    errors.usage(string.format("%s %q: use letters, digits, '.', '_', '-' (max 100, starting with a letter or digit)",
      kind, tostring(v)), 0)
  end
  return v
end

-- A fresh run id: project, UTC time, pid and a random tag (sorts by time, never reused).
function run.new_id(project)
  return project .. "-" .. ledger.new_run_id()
end

local function load_profile(p)
  if type(p) == "table" then return p end
  return profile_mod.load(p or profile_mod.default_name())
end

-- Where a run lives, from the profile's run_root and checkpoint templates.
function run.paths(p, project, id)
  local ck = p.checkpoints
  local root = profile_mod.expand(ck.run_root, {project = project})
  local active = root .. "/active/" .. id
  local durable = profile_mod.durable_tier(p)
  local out = {
    root = root,
    active = active,
    out = active .. "/out",
    code = active .. "/code",
    meta = active .. "/.gpurent",
    log = active .. "/train.log",
    partial = root .. "/export/.partial/" .. id,
    export = root .. "/export/" .. id,
    export_dir = root .. "/export",
    quarantine = root .. "/quarantine",
    cache = root .. "/cache",
  }
  if durable then
    out.durable_tier = durable.name
    out.durable_ckpt = ck.durable_dir and profile_mod.expand(ck.durable_dir, {name = id, project = project})
      or (durable.path .. "/final_ckpts/" .. id)
    out.results = durable.path .. "/" .. project .. "/results"
  end
  return out
end

-- tmux session names cannot hold '.' or ':' (tmux rewrites them): keep ours exact.
function run.session_name(id) return "gr-" .. id:gsub("[.:]", "_") end

local function attach(r)
  r.paths = run.paths(r.profile, r.project, r.id)
  r.session = run.session_name(r.id)
  return setmetatable(r, Run)
end

-- Fields kept in the ledger (never secrets): what `gpurent watch RUN` needs.
local PERSIST = {"host", "project", "profile_name", "local_dir", "expected_seconds", "stall_seconds",
  "interval", "max_relaunches", "max_wait", "ssh_config", "kind", "parent", "roster", "load_cmd", "nodes"}

function run.new(o)
  o = o or {}
  run.check_name("host", o.host)
  run.check_name("project", o.project)
  local p = load_profile(o.profile)
  -- the name given (a site overlay, `extends: slurm`) is the one `gpurent watch RUN` loads again
  local r = {host = o.host, project = o.project, profile = p,
             profile_name = type(o.profile) == "string" and o.profile or o.profile_name or p.platform,
             id = o.id or run.new_id(o.project), recipe = o.recipe, out = o.out or io.stdout, label = o.label}
  run.check_name("run id", r.id)
  for _, k in ipairs(PERSIST) do if o[k] ~= nil and r[k] == nil then r[k] = o[k] end end
  -- the ssh config this shell uses is the one `gpurent watch RUN` must use later
  local cfg = os.getenv("GPURENT_SSH_CONFIG")
  if r.ssh_config == nil and cfg and cfg ~= "" then r.ssh_config = cfg end
  attach(r)
  if o.record ~= false then
    local params = {}
    for _, k in ipairs(PERSIST) do params[k] = r[k] end
    params.session = r.session
    r:ledger(function(L)
      -- a reused id (a rerun after gpurent was killed) is the same run: refuse clearly
      -- instead of failing on the ledger's primary key, and say how to pick it up
      local old = L:run(r.id)
      if old then
        errors.refuse(string.format("run id %s is already in the ledger (status %s, instance %s): pick it up with " ..
          "`gpurent watch %s --finish`, or start a new run without id=", r.id, tostring(old.status),
          tostring(old.instance), r.id), 0)
      end
      L:upsert_instance{name = r.host, profile = r.profile_name}
      L:start_run{id = r.id, instance = r.host, recipe = r.recipe, params = params}
    end)
  end
  return r
end

-- Rebuild a run from the ledger (a new shell, after gpurent itself was killed).
function run.load(id, o)
  o = o or {}
  local L = ledger.open(o.ledger_path)
  local row = L:run(id)
  L:close()
  if not row then errors.usage("no run " .. tostring(id) .. " in the ledger " .. ledger.default_path() ..
    " (see gpurent history)", 0) end
  local params = row.params_json and json.decode(row.params_json, "run " .. id .. " params") or {}
  local r = {id = id, recipe = row.recipe, status = row.status, out = o.out or io.stdout}
  for _, k in ipairs(PERSIST) do
    local v = params[k]
    if v ~= json.null then r[k] = v end
  end
  r.host = r.host or row.instance
  r.profile = load_profile(o.profile or r.profile_name)
  return attach(r)
end

function Run:ledger(fn)
  local L = ledger.open()
  local ok, res = pcall(fn, L)
  L:close()
  if not ok then error(res, 0) end
  return res
end

function Run:say(phase, fmt, ...)
  local text = select("#", ...) > 0 and string.format(fmt, ...) or fmt
  local out = self.out or io.stdout
  local label = self.label and ("[" .. self.label .. "] ") or ""
  for line in (tostring(text) .. "\n"):gmatch("([^\n]*)\n") do
    out:write(label, "[", phase, "] ", line, "\n")
  end
  out:flush()
end

-- Run fn(...) as phase `name`: recorded in the ledger with its outcome; an error
-- is recorded (its first line) and raised again unchanged.
function Run:phase(name, fn, ...)
  local pid = self:ledger(function(L) return L:start_phase(self.id, name) end)
  local res = table.pack(pcall(fn, ...))
  local outcome, detail = "ok", nil
  if not res[1] then
    local e = res[2]
    outcome = errors.is(e, "interrupted") and "interrupted" or "failed"
    detail = errors.message(e):match("^[^\n]*")
  elseif type(res[2]) == "table" and res[2].state then
    detail = res[2].state
  end
  pcall(self.ledger, self, function(L) L:end_phase(pid, outcome, detail) end)
  if not res[1] then error(res[2], 0) end
  return table.unpack(res, 2, res.n)
end

function Run:finish(status)
  local ok, err = pcall(self.ledger, self, function(L) L:end_run(self.id, status) end)
  if not ok then self:say("run", "(ledger: %s)", tostring(err)) end
end

-- Connect to the run's host (the ssh_config recorded with the run, if any).
function Run:connect(o)
  o = o or {}
  local cfg = o.config or os.getenv("GPURENT_SSH_CONFIG")
  if not cfg or cfg == "" then cfg = self.ssh_config end
  local ok, inst = pcall(require("gpurent.transport.instance").connect, self.host, {config = cfg ~= "" and cfg or nil,
    connect_timeout = o.connect_timeout})
  if not ok then
    -- a refusal (an unknown or changed host key) stays a refusal: exit 3, its own words
    if errors.is_refusal(inst) or (type(inst) == "table" and inst.exit == 3) then error(inst, 0) end
    error(string.format("cannot reach %s: %s\n  %s", self.host, tostring(inst),
      require("gpurent.platform").of(self.profile).hints.unreachable(self.host)), 0)
  end
  inst.profile = self.profile
  -- the platform's look at the box once the session opens (Slurm: the profile's ~ paths
  -- made absolute with the login node's $HOME)
  local P = require("gpurent.platform").of(self.profile)
  if P.connected then P.connected(inst, self) end
  return inst
end

-- secrets=NAME,NAME: values read from this process's environment, wrapped as secrets.
function run.secrets_from_env(names)
  local out = {}
  for _, n in ipairs(names or {}) do
    local v = os.getenv(n)
    if not v or v == "" then errors.usage("secret " .. n .. " is not set in the environment", 0) end
    out[n] = require("gpurent.util.secret")(v)
  end
  return out
end

-- Tell the person: terminal + ledger always; the platform's push channel (P.notify)
-- when asked (push: true) and it has one.
function Run:tell(message, push)
  pcall(require("gpurent.notify").send, {kind = "run", instance = self.host, run_id = self.id, message = message,
    push = push and true or false, profile_name = self.profile_name, out = self.out})
end

-- The stored budgets, with the recipe's `yuan` (budget=) on this box when it gives one.
local function budgets_with(yuan, name)
  if not yuan then return nil end
  local budgets = require("gpurent.billing").budgets()
  budgets[name] = {yuan = yuan}
  return budgets
end

-- budget=YUAN: refuse a launch once the instance's spend reached it (needs the API).
-- The budget gate of a launch or a sweep (billing.budget_gate): the ledger refreshed
-- from the provider, the budget set with `gpurent billing budget` on any name of the
-- box, the account's, and `yuan` when the recipe gives one (budget=). A refusal (exit
-- 3) names spent and budget. -> the line to say, or nil when no budget applies.
function Run:check_budget(yuan, instance, action)
  local billing = require "gpurent.billing"
  local name = instance or self.host
  local budgets = budgets_with(yuan, name)
  local state, text = billing.budget_gate{instance = name, action = action or "launch", profile = self.profile_name,
    budgets = budgets}
  if state == "none" then return nil end
  return "budget " .. state .. ": " .. text
end

-- What a loop on the box needs to keep the budget itself (billing.box_budget: budget,
-- spend at a time, price) -> facts | nil, why (no budget, or no price without the API).
function Run:box_budget(yuan, instance)
  local name = instance or self.host
  return require("gpurent.billing").box_budget{instance = name, budgets = budgets_with(yuan, name),
    profile = self.profile_name}
end

-- A queue file (LIFECYCLE.md queue semantics): one cell per line, `<config> <task>
-- [epochs]`; blank and # lines are skipped and not counted; cells are numbered 1..N.
function run.parse_queue(text)
  local cells, n, lineno = {}, 0, 0
  for line in (text .. "\n"):gmatch("([^\n]*)\n") do
    lineno = lineno + 1
    line = line:gsub("\r$", ""):match("^%s*(.-)%s*$")
    if line ~= "" and line:sub(1, 1) ~= "#" then
      local w = {}
      for x in line:gmatch("%S+") do w[#w + 1] = x end
      if #w < 2 or #w > 3 or (w[3] and not math.tointeger(tonumber(w[3]))) then
        errors.usage(string.format("queue line %d: %q: expected <config> <task> [epochs]", lineno, line), 0)
      end
      n = n + 1
      cells[n] = {index = n, config = w[1], task = w[2], epochs = w[3] and math.tointeger(tonumber(w[3])), line = lineno}
    end
  end
  return cells
end

-- An idempotent remote step (a resumable transfer, a read-only probe, a checked copy)
-- that stalls is retried once on a fresh connection, so a stalled SSH channel costs a
-- bounded timeout instead of hanging the phase.
function Run:retrying(inst, phase, what, fn)
  local ssh = require "gpurent.transport.ssh"
  local out = table.pack(pcall(fn))
  if out[1] then return table.unpack(out, 2, out.n) end
  local res = out[2]
  local msg = errors.message(res)
  -- by the error's kind, never its text: every stall the transport raises is one of these
  if not (ssh.is_error(res, "timeout") or ssh.is_error(res, "transfer")) then
    error(res, 0)
  end
  self:say(phase, "%s stalled (%s); reconnecting and retrying once (the step is idempotent)", what, msg:match("[^\n]*"))
  inst:reconnect()
  return fn()
end

-- Start the identical wrapper again (it resumes from the latest checkpoint);
-- detach.start refuses while this run's job is alive.
function Run:relaunch(inst, o)
  o = o or {}
  local detach = require "gpurent.lifecycle.detach"
  local cur = detach.current(inst, self)
  if not cur.script then error("relaunch: no earlier attempt of " .. self.id .. " on " .. self.host, 0) end
  local st = detach.start(inst, self, {script = cur.script, mode = o.mode or cur.mode})
  st.script = cur.script
  self:say("launch", "relaunched the identical command as attempt %d under %s (%s): it resumes from the latest checkpoint",
    st.attempt, st.mode, cur.script)
  return st
end

function Run:notify(kind, message)
  pcall(self.ledger, self, function(L) L:notify{kind = kind, message = message, run_id = self.id, instance = self.host} end)
end

return run
