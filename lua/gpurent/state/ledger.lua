-- gpurent.ledger: the run ledger, one SQLite file in the user's state directory
-- ($GPURENT_STATE_DIR, else $XDG_STATE_HOME/gpurent, else ~/.local/state/gpurent;
-- file ledger.sqlite). Owns the schema (ordered migrations recorded in
-- schema_version), the write API the lifecycle and billing code call for every phase,
-- transfer, billing call and gate decision, and the reads behind `gpurent status`,
-- `history` and `cost`.
--
-- Safety: WAL mode (readers never block the writer), synchronous=FULL, a bounded busy
-- wait, and every write in one BEGIN IMMEDIATE transaction, so two gpurent processes
-- can write at once and a crash (even kill -9) leaves only committed transactions.
--
-- Times are integer Unix seconds (UTC); every write takes an optional `at` so callers
-- that learned the time elsewhere (a billing API) can record it. Instances are named
-- by their gpurent name (the ssh alias / profile instance name).
--
--   local L = ledger.open([path])          L:close()
--   L:transaction(fn)                      group writes; nested writes join it
--   L:upsert_instance{name, profile, provider_id?, power_state?, meter?,
--                     price_per_hour?, currency?, at?} -> instance id
--   L:start_run{instance?, recipe?, params?, id?, at?} -> run id
--   L:end_run(run_id, status, at?)         status: succeeded|failed|interrupted|abandoned|detached
--   L:start_phase(run_id, name, at?) -> phase id
--   L:end_phase(phase_id, outcome, detail?, at?)   outcome: ok|failed|skipped|interrupted
--   L:record_transfer{run_id?, instance?, direction, local_path?, remote_path?, bytes?,
--                     sha256?, outcome, started_at?, at?} -> id
--   L:record_manifest{run_id, kind, path?, sha256?, files?, bytes?, at?} -> id
--   L:record_billing{instance, action, outcome, meter?, power_state?, price_per_hour?,
--                    run_id?, request_id?, detail?, at?} -> id  (also updates the instance)
--   L:record_gate{gate, action, decision, reason?, approved_by?, run_id?, instance?, at?} -> id
--   L:notify{kind, message, run_id?, instance?, channel?, push?, pushed_at?, detail?, at?} -> id
--   L:push_counts(channel, now) -> sent in the last minute, sent in the last day
--   L:held(channel) -> held rows, oldest first;  L:set_push(id, push, pushed_at?, detail?)
--   L:mark_summarized(ids, summary_id, at);  L:held_channels() -> {channel...}
--   L:set_danger_clock{instance, name, deadline, note?, at?}; L:clear_danger_clock(instance, name, at?)
--   L:open_clock{instance, name, started_at, deadline, note?, at?} -> clock id  (an open clock
--       of that name is moved in place: the same stretch keeps its id and its reminders)
--   L:open_clocks(name?) -> {{id, name, started_at, deadline, note, instance, region, provider_id}...}
--   L:last_clock(instance, name) -> the newest clock row (open or cleared) | nil
--   L:remind_once(clock_id, day, notification_id?, at?) -> true when not reminded before
--   L:set_region(instance, region)
--   L:status(now?) -> {instances...}; L:runs(limit?); L:run_history(run_id)
--   L:cost{since?, now?} -> {instances = {...}, runs = {...}, totals = {currency = amount}}
--       (a run a scheduler accounted for also has .usage = L:usage(id): its whole usage)
--   L:record_usage{run_id, instance?, jobs = {{id, state, elapsed, gpu_seconds, cpu_seconds,
--                  final}...}, price_per_gpu_hour?, currency?, replace?, at?}   (a scheduler's sacct)
--   L:usage(run_id) -> {jobs, gpu_seconds, cpu_seconds, final, cost?, currency?, states} | nil
--   L:usage_open({instance...}) -> runs whose accounting may still change
-- Formatting shared by the status/history/cost commands: ledger.time_text(at),
-- ledger.duration_text(seconds), ledger.money_text(amount, currency), ledger.table_text(rows).
local sqlite = require("gpurent.core").sqlite
local fs = require "gpurent.util.fs"
local json = require "gpurent.util.json"

local ledger = {}

-- Ordered migrations. Never edit a released one; append a new version instead.
ledger.MIGRATIONS = {
  {version = 1, description = "instances, runs, phases, transfers, manifests, billing, gates, notifications", sql = [[
CREATE TABLE instances (
  id             INTEGER PRIMARY KEY,
  name           TEXT NOT NULL UNIQUE,
  profile        TEXT NOT NULL,
  provider_id    TEXT,
  power_state    TEXT NOT NULL DEFAULT 'unknown',  -- running | stopped | released | unknown
  meter          TEXT NOT NULL DEFAULT 'unknown',  -- on | off | unknown
  price_per_hour REAL,
  currency       TEXT,
  created_at     INTEGER NOT NULL,
  updated_at     INTEGER NOT NULL
);
CREATE TABLE runs (
  id          TEXT PRIMARY KEY,
  instance_id INTEGER REFERENCES instances(id),
  recipe      TEXT,
  params_json TEXT,
  status      TEXT NOT NULL DEFAULT 'running'
              CHECK (status IN ('running', 'succeeded', 'failed', 'interrupted', 'abandoned')),
  pid         INTEGER,
  started_at  INTEGER NOT NULL,
  ended_at    INTEGER
);
CREATE INDEX runs_instance ON runs(instance_id, started_at);
CREATE TABLE phases (
  id         INTEGER PRIMARY KEY,
  run_id     TEXT NOT NULL REFERENCES runs(id),
  name       TEXT NOT NULL,
  started_at INTEGER NOT NULL,
  ended_at   INTEGER,
  outcome    TEXT CHECK (outcome IN ('ok', 'failed', 'skipped', 'interrupted')),
  detail     TEXT
);
CREATE INDEX phases_run ON phases(run_id, id);
CREATE TABLE transfers (
  id          INTEGER PRIMARY KEY,
  run_id      TEXT REFERENCES runs(id),
  instance_id INTEGER REFERENCES instances(id),
  direction   TEXT NOT NULL CHECK (direction IN ('put', 'get', 'sync')),
  local_path  TEXT,
  remote_path TEXT,
  bytes       INTEGER,
  sha256      TEXT,
  outcome     TEXT NOT NULL,
  started_at  INTEGER NOT NULL,
  ended_at    INTEGER NOT NULL
);
CREATE INDEX transfers_run ON transfers(run_id);
CREATE TABLE manifests (
  id         INTEGER PRIMARY KEY,
  run_id     TEXT REFERENCES runs(id),
  kind       TEXT NOT NULL,          -- pull_manifest | pull_verified | ...
  path       TEXT,
  sha256     TEXT,
  files      INTEGER,
  bytes      INTEGER,
  created_at INTEGER NOT NULL
);
CREATE TABLE billing_events (
  id             INTEGER PRIMARY KEY,
  instance_id    INTEGER NOT NULL REFERENCES instances(id),
  run_id         TEXT REFERENCES runs(id),
  action         TEXT NOT NULL,      -- power_on | power_off | release | status | price
  outcome        TEXT NOT NULL,      -- ok | accepted | failed
  meter          TEXT CHECK (meter IN ('on', 'off', 'unknown')),  -- state after the call, if known
  power_state    TEXT,
  price_per_hour REAL,
  request_id     TEXT,
  detail         TEXT,
  at             INTEGER NOT NULL
);
CREATE INDEX billing_instance ON billing_events(instance_id, at, id);
CREATE TABLE gate_decisions (
  id          INTEGER PRIMARY KEY,
  run_id      TEXT REFERENCES runs(id),
  instance_id INTEGER REFERENCES instances(id),
  gate        TEXT NOT NULL,         -- teardown | free_space | host_key | ...
  action      TEXT NOT NULL,         -- the verb the gate guarded
  decision    TEXT NOT NULL CHECK (decision IN ('allow', 'refuse')),
  reason      TEXT,
  approved_by TEXT,                  -- tty | flag | NULL (only the host grants approval)
  at          INTEGER NOT NULL
);
CREATE TABLE notifications (
  id          INTEGER PRIMARY KEY,
  run_id      TEXT REFERENCES runs(id),
  instance_id INTEGER REFERENCES instances(id),
  kind        TEXT NOT NULL,
  message     TEXT NOT NULL,
  at          INTEGER NOT NULL
);
CREATE TABLE danger_clocks (
  id          INTEGER PRIMARY KEY,
  instance_id INTEGER NOT NULL REFERENCES instances(id),
  name        TEXT NOT NULL,         -- e.g. release_after_stop
  deadline    INTEGER NOT NULL,
  note        TEXT,
  set_at      INTEGER NOT NULL,
  cleared_at  INTEGER
);
CREATE UNIQUE INDEX danger_open ON danger_clocks(instance_id, name) WHERE cleared_at IS NULL;
]]},
  -- "detached": Ctrl-C after the launch (or a bounded watch that ended) leaves the job
  -- running on the box. SQLite cannot alter a CHECK constraint; widening one in the
  -- stored schema is the documented way (sqlite.org/lang_altertable.html), followed
  -- by a schema_version bump so every connection re-reads it.
  {version = 2, description = "runs.status may be 'detached'", apply = function(db)
    db:exec([=[PRAGMA writable_schema = ON;
UPDATE sqlite_master SET sql = replace(sql, '''interrupted'', ''abandoned'')', '''interrupted'', ''abandoned'', ''detached'')')
  WHERE type = 'table' AND name = 'runs';
PRAGMA writable_schema = OFF;]=])
    local v = db:query("PRAGMA schema_version")[1].schema_version
    db:exec("PRAGMA schema_version = " .. math.tointeger(v + 1))
  end},
  {version = 3, description = "push accounting of notifications, reminders of danger clocks, instance regions", sql = [[
ALTER TABLE notifications ADD COLUMN channel TEXT;       -- the push channel's platform; NULL: terminal and ledger only
ALTER TABLE notifications ADD COLUMN push TEXT;          -- sent | held | summarized | failed | none
ALTER TABLE notifications ADD COLUMN pushed_at INTEGER;  -- when it (or the summary carrying it) went out
ALTER TABLE notifications ADD COLUMN summary_id INTEGER REFERENCES notifications(id);
ALTER TABLE notifications ADD COLUMN detail TEXT;        -- why it was held or failed
CREATE INDEX notifications_push ON notifications(channel, push, pushed_at);
ALTER TABLE danger_clocks ADD COLUMN started_at INTEGER; -- what starts the clock (e.g. the power-off)
CREATE TABLE clock_reminders (
  clock_id        INTEGER NOT NULL REFERENCES danger_clocks(id),
  day             INTEGER NOT NULL,
  notification_id INTEGER REFERENCES notifications(id),
  at              INTEGER NOT NULL,
  PRIMARY KEY (clock_id, day)
);
ALTER TABLE instances ADD COLUMN region TEXT;            -- the provider's region (peers share its durable FS)
]]},
  -- A scheduler's accounting (issue 19, Slurm's sacct): per job of a run (a sweep's run
  -- holds its array's tasks), the figures as last read; `final` once the job ended.
  {version = 4, description = "job_usage: GPU- and CPU-seconds per scheduler job of a run", sql = [[
CREATE TABLE job_usage (
  run_id             TEXT NOT NULL REFERENCES runs(id),
  job_id             TEXT NOT NULL,      -- the scheduler's id (an array task: 123_4)
  instance_id        INTEGER REFERENCES instances(id),
  state              TEXT,               -- the scheduler's word (COMPLETED, RUNNING, ...)
  elapsed_seconds    INTEGER NOT NULL,   -- every allocation of the job (a requeued one's too)
  gpu_seconds        INTEGER NOT NULL,   -- sum of elapsed x GPUs allocated
  cpu_seconds        INTEGER NOT NULL,   -- sum of elapsed x CPUs allocated
  final              INTEGER NOT NULL,   -- 1: the job ended, its figures no longer change
  price_per_gpu_hour REAL,               -- the profile's price when read (NULL: not priced)
  currency           TEXT,
  updated_at         INTEGER NOT NULL,
  PRIMARY KEY (run_id, job_id)
);
]]},
}

local function env(k)
  local v = os.getenv(k)
  return v ~= "" and v or nil
end

function ledger.state_dir() return require("gpurent.state.dir").path() end

function ledger.default_path() return ledger.state_dir() .. "/ledger.sqlite" end

local Ledger = {}
Ledger.__index = Ledger

local function schema_version(db)
  local t = db:query("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'")
  if #t == 0 then return 0 end
  return db:query("SELECT coalesce(max(version), 0) AS v FROM schema_version")[1].v
end

-- Apply pending migrations in one IMMEDIATE transaction; a second process opening a
-- fresh ledger at the same moment waits, then finds them applied.
local function migrate(db, path)
  local latest = ledger.MIGRATIONS[#ledger.MIGRATIONS].version
  local current = schema_version(db)
  if current > latest then
    error(string.format("ledger %s has schema version %d, newer than this gpurent knows (%d); upgrade gpurent",
      path, current, latest), 0)
  end
  if current == latest then return end
  db:transaction(function()
    db:exec([[CREATE TABLE IF NOT EXISTS schema_version (
      version INTEGER PRIMARY KEY, description TEXT NOT NULL, applied_at INTEGER NOT NULL)]])
    local now = schema_version(db)
    for _, m in ipairs(ledger.MIGRATIONS) do
      if m.version > now then
        if m.apply then m.apply(db) else db:exec(m.sql) end
        db:run("INSERT INTO schema_version (version, description, applied_at) VALUES (?, ?, ?)",
          m.version, m.description, os.time())
      end
    end
  end)
end

-- ledger.open([path [, {busy_timeout = ms}]]) creates the file and its directory.
function ledger.open(path, opts)
  path = path or ledger.default_path()
  opts = opts or {}
  local dir = path:match("^(.*)/[^/]*$")
  if dir and dir ~= "" then fs.mkdirs(dir) end
  local db = sqlite.open(path, {busy_timeout = opts.busy_timeout or 15000})
  -- switching to WAL needs a moment's exclusive lock; the busy handler waits for it
  local mode = db:query("PRAGMA journal_mode = WAL")[1].journal_mode
  if mode ~= "wal" then error("ledger " .. path .. ": cannot switch to WAL mode (got " .. tostring(mode) .. ")", 0) end
  db:exec("PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON")
  migrate(db, path)
  return setmetatable({db = db, path = path}, Ledger)
end

-- ledger.exists([path]): whether a ledger file is there (reads need not create one).
function ledger.exists(path)
  return fs.exists(path or ledger.default_path())
end

function Ledger:close()
  if self.db then self.db:close(); self.db = nil end
end
Ledger.__close = Ledger.close

function Ledger:schema_version() return schema_version(self.db) end

-- Run fn inside BEGIN IMMEDIATE, or inside the caller's transaction if one is open.
function Ledger:transaction(fn)
  if not self.db:autocommit() then return fn(self) end
  return self.db:transaction(function() return fn(self) end)
end

local function need(t, k, what)
  if t[k] == nil then error("ledger." .. what .. ": missing field " .. k, 3) end
  return t[k]
end

local function instance_id(self, name, what, optional)
  if name == nil then
    if optional then return nil end
    error("ledger." .. what .. ": missing field instance", 3)
  end
  local r = self.db:query("SELECT id FROM instances WHERE name = ?", name)[1]
  if not r then error("ledger." .. what .. ": unknown instance " .. tostring(name) .. " (record it with upsert_instance)", 3) end
  return r.id
end

function Ledger:upsert_instance(t)
  local at = t.at or os.time()
  return self:transaction(function()
    local row = self.db:query("SELECT id FROM instances WHERE name = ?", need(t, "name", "upsert_instance"))[1]
    if row then
      self.db:run([[UPDATE instances SET profile = coalesce(:profile, profile),
        provider_id = coalesce(:provider_id, provider_id), power_state = coalesce(:power_state, power_state),
        meter = coalesce(:meter, meter), price_per_hour = coalesce(:price_per_hour, price_per_hour),
        currency = coalesce(:currency, currency), updated_at = :at WHERE id = :id]],
        {profile = t.profile, provider_id = t.provider_id, power_state = t.power_state, meter = t.meter,
         price_per_hour = t.price_per_hour, currency = t.currency, at = at, id = row.id})
      return row.id
    end
    local _, id = self.db:run([[INSERT INTO instances (name, profile, provider_id, power_state, meter,
        price_per_hour, currency, created_at, updated_at)
      VALUES (:name, :profile, :provider_id, coalesce(:power_state, 'unknown'), coalesce(:meter, 'unknown'),
        :price_per_hour, :currency, :at, :at)]],
      {name = t.name, profile = need(t, "profile", "upsert_instance"), provider_id = t.provider_id,
       power_state = t.power_state, meter = t.meter, price_per_hour = t.price_per_hour,
       currency = t.currency, at = at})
    return id
  end)
end

-- A run id sorts by time and does not collide between processes started the same second.
function ledger.new_run_id(at)
  local pid = require("gpurent.core").sys.getpid()
  return string.format("%s-%d-%04x", os.date("!%Y%m%d-%H%M%S", at or os.time()), pid, math.random(0, 0xffff))
end

function Ledger:start_run(t)
  t = t or {}
  local at = t.at or os.time()
  local id = t.id or ledger.new_run_id(at)
  self:transaction(function()
    self.db:run([[INSERT INTO runs (id, instance_id, recipe, params_json, status, pid, started_at)
      VALUES (?, ?, ?, ?, 'running', ?, ?)]], id, instance_id(self, t.instance, "start_run", true), t.recipe,
      t.params and json.encode_stable(t.params) or nil, require("gpurent.core").sys.getpid(), at)
  end)
  return id
end

function Ledger:end_run(run_id, status, at)
  self:transaction(function()
    local n = self.db:run("UPDATE runs SET status = ?, ended_at = ? WHERE id = ?", status, at or os.time(), run_id)
    if n ~= 1 then error("ledger.end_run: unknown run " .. tostring(run_id), 0) end
  end)
end

function Ledger:start_phase(run_id, name, at)
  return self:transaction(function()
    local _, id = self.db:run("INSERT INTO phases (run_id, name, started_at) VALUES (?, ?, ?)",
      run_id, name, at or os.time())
    return id
  end)
end

function Ledger:end_phase(phase_id, outcome, detail, at)
  self:transaction(function()
    local n = self.db:run("UPDATE phases SET outcome = ?, detail = ?, ended_at = ? WHERE id = ?",
      outcome, detail, at or os.time(), phase_id)
    if n ~= 1 then error("ledger.end_phase: unknown phase " .. tostring(phase_id), 0) end
  end)
end

function Ledger:record_transfer(t)
  local at = t.at or os.time()
  return self:transaction(function()
    local _, id = self.db:run([[INSERT INTO transfers (run_id, instance_id, direction, local_path, remote_path,
        bytes, sha256, outcome, started_at, ended_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)]],
      t.run_id, instance_id(self, t.instance, "record_transfer", true), need(t, "direction", "record_transfer"),
      t.local_path, t.remote_path, t.bytes, t.sha256, need(t, "outcome", "record_transfer"), t.started_at or at, at)
    return id
  end)
end

function Ledger:record_manifest(t)
  return self:transaction(function()
    local _, id = self.db:run([[INSERT INTO manifests (run_id, kind, path, sha256, files, bytes, created_at)
      VALUES (?, ?, ?, ?, ?, ?, ?)]], t.run_id, need(t, "kind", "record_manifest"), t.path, t.sha256,
      t.files, t.bytes, t.at or os.time())
    return id
  end)
end

-- A billing call and the instance state it leaves, in one transaction.
function Ledger:record_billing(t)
  local at = t.at or os.time()
  return self:transaction(function()
    local iid = instance_id(self, t.instance, "record_billing")
    local price = t.price_per_hour
    if price == nil and t.meter == "on" then
      -- record the price in force, so later price changes do not rewrite past cost
      price = self.db:query("SELECT price_per_hour FROM instances WHERE id = ?", iid)[1].price_per_hour
    end
    local _, id = self.db:run([[INSERT INTO billing_events (instance_id, run_id, action, outcome, meter,
        power_state, price_per_hour, request_id, detail, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)]],
      iid, t.run_id, need(t, "action", "record_billing"), need(t, "outcome", "record_billing"), t.meter,
      t.power_state, price, t.request_id, t.detail, at)
    self.db:run([[UPDATE instances SET meter = coalesce(?, meter), power_state = coalesce(?, power_state),
      price_per_hour = coalesce(?, price_per_hour), updated_at = ? WHERE id = ?]],
      t.meter, t.power_state, t.price_per_hour, at, iid)
    return id
  end)
end

function Ledger:record_gate(t)
  return self:transaction(function()
    local _, id = self.db:run([[INSERT INTO gate_decisions (run_id, instance_id, gate, action, decision, reason,
        approved_by, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)]], t.run_id,
      instance_id(self, t.instance, "record_gate", true), need(t, "gate", "record_gate"),
      need(t, "action", "record_gate"), need(t, "decision", "record_gate"), t.reason, t.approved_by,
      t.at or os.time())
    return id
  end)
end

-- ---- a scheduler's accounting (job_usage) -----------------------------------------

-- One row per job (upserted: a job read again replaces its figures). t.jobs = {{id=,
-- state=, elapsed=, gpu_seconds=, cpu_seconds=, final=bool}...}; t.price_per_gpu_hour and
-- t.currency are the profile's at the time of the read (nil: not priced).
function Ledger:record_usage(t)
  local at = t.at or os.time()
  need(t, "run_id", "record_usage")
  return self:transaction(function()
    local iid = instance_id(self, t.instance, "record_usage", true)
    -- t.replace: the read covers all the run's jobs; a row it no longer names that had
    -- not ended (a pending array range, 123_[2-5], now its tasks) goes
    if t.replace then self.db:run("DELETE FROM job_usage WHERE run_id = ? AND final = 0", t.run_id) end
    for _, j in ipairs(need(t, "jobs", "record_usage")) do
      self.db:run([[INSERT INTO job_usage (run_id, job_id, instance_id, state, elapsed_seconds, gpu_seconds,
          cpu_seconds, final, price_per_gpu_hour, currency, updated_at)
        VALUES (:run, :job, :iid, :state, :elapsed, :gpu, :cpu, :final, :price, :currency, :at)
        ON CONFLICT (run_id, job_id) DO UPDATE SET instance_id = excluded.instance_id, state = excluded.state,
          elapsed_seconds = excluded.elapsed_seconds, gpu_seconds = excluded.gpu_seconds,
          cpu_seconds = excluded.cpu_seconds, final = excluded.final,
          price_per_gpu_hour = excluded.price_per_gpu_hour, currency = excluded.currency,
          updated_at = excluded.updated_at]],
        {run = t.run_id, job = tostring(need(j, "id", "record_usage")), iid = iid, state = j.state,
         elapsed = math.floor(j.elapsed or 0), gpu = math.floor(j.gpu_seconds or 0),
         cpu = math.floor(j.cpu_seconds or 0), final = j.final and 1 or 0, price = t.price_per_gpu_hour,
         currency = t.currency, at = at})
    end
  end)
end

-- The sum over a run's jobs: {jobs, gpu_seconds, cpu_seconds, final (every job ended),
-- cost (nil when no job is priced), currency, states = "COMPLETED" | "COMPLETED,FAILED"},
-- or nil when nothing was recorded for the run.
function Ledger:usage(run_id)
  local rows = self.db:query("SELECT * FROM job_usage WHERE run_id = ? ORDER BY job_id", run_id)
  if #rows == 0 then return nil end
  local u = {jobs = #rows, gpu_seconds = 0, cpu_seconds = 0, final = true, job_ids = {}}
  local states, seen = {}, {}
  for _, j in ipairs(rows) do
    u.gpu_seconds, u.cpu_seconds = u.gpu_seconds + j.gpu_seconds, u.cpu_seconds + j.cpu_seconds
    u.final = u.final and j.final == 1
    u.job_ids[#u.job_ids + 1] = j.job_id
    if j.price_per_gpu_hour then
      u.cost = (u.cost or 0) + j.gpu_seconds / 3600 * j.price_per_gpu_hour
      u.currency = u.currency or j.currency
    end
    if j.state and not seen[j.state] then seen[j.state] = true; states[#states + 1] = j.state end
    u.updated_at = math.max(u.updated_at or 0, j.updated_at)
  end
  u.states = table.concat(states, ",")
  return u
end

-- Runs on the named instances whose accounting may still change: a run still running
-- or detached (a relaunch adds a job), a job recorded not ended, or nothing recorded
-- for a run that succeeded (it had a job; a run that failed before its launch has none
-- to ask about, and the watch of one that failed after it recorded its jobs).
-- -> {{id, instance, status}...}
function Ledger:usage_open(instances)
  local out = {}
  for _, name in ipairs(instances) do
    for _, r in ipairs(self.db:query([[SELECT r.id, r.status, i.name AS instance FROM runs r
        JOIN instances i ON i.id = r.instance_id WHERE i.name = :name AND (
          r.status IN ('running', 'detached')
          OR EXISTS (SELECT 1 FROM job_usage u WHERE u.run_id = r.id AND u.final = 0)
          OR (r.status = 'succeeded' AND NOT EXISTS (SELECT 1 FROM job_usage u WHERE u.run_id = r.id)))
        ORDER BY r.started_at, r.rowid]], {name = name})) do
      out[#out + 1] = r
    end
  end
  return out
end

-- Work for the start of the next command (a held push, an open clock): the marker
-- beside the ledger tells it without opening SQLite (gpurent.state.dir).
function Ledger:mark_pending() pcall(require("gpurent.state.dir").mark_pending, self.path) end

-- Is there such work left? (else the caller clears the marker)
function Ledger:pending_work()
  local r = self.db:query([[SELECT (SELECT count(*) FROM danger_clocks WHERE cleared_at IS NULL)
    + (SELECT count(*) FROM notifications WHERE push = 'held') AS n]])[1]
  return (r and r.n or 0) > 0
end

function Ledger:notify(t)
  if t.push == "held" then self:mark_pending() end
  return self:transaction(function()
    local _, id = self.db:run([[INSERT INTO notifications (run_id, instance_id, kind, message, at, channel, push,
        pushed_at, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)]],
      t.run_id, instance_id(self, t.instance, "notify", true), need(t, "kind", "notify"),
      need(t, "message", "notify"), t.at or os.time(), t.channel, t.push, t.pushed_at, t.detail)
    return id
  end)
end

-- Pushes that went out on a channel (a summary counts once) in the last 60 s and 86400 s.
function Ledger:push_counts(channel, now)
  now = now or os.time()
  local r = self.db:query([[SELECT coalesce(sum(pushed_at > :now - 60), 0) AS minute, count(*) AS day
    FROM notifications WHERE channel = :channel AND push = 'sent' AND pushed_at > :now - 86400]],
    {channel = channel, now = now})[1]
  return r.minute, r.day
end

function Ledger:held(channel)
  return self.db:query([[SELECT n.id, n.kind, n.message, n.at, n.detail, i.name AS instance FROM notifications n
    LEFT JOIN instances i ON i.id = n.instance_id WHERE n.channel = ? AND n.push = 'held' ORDER BY n.at, n.id]], channel)
end

function Ledger:held_channels()
  local out = {}
  for _, r in ipairs(self.db:query("SELECT DISTINCT channel FROM notifications WHERE push = 'held' ORDER BY channel")) do
    out[#out + 1] = r.channel
  end
  return out
end

function Ledger:set_push(id, push, pushed_at, detail)
  if push == "held" then self:mark_pending() end
  self:transaction(function()
    self.db:run("UPDATE notifications SET push = ?, pushed_at = ?, detail = coalesce(?, detail) WHERE id = ?",
      push, pushed_at, detail, id)
  end)
end

function Ledger:mark_summarized(ids, summary_id, at)
  self:transaction(function()
    for _, id in ipairs(ids) do
      self.db:run("UPDATE notifications SET push = 'summarized', summary_id = ?, pushed_at = ? WHERE id = ? AND push = 'held'",
        summary_id, at, id)
    end
  end)
end

-- One open clock per (instance, name): setting it again moves the deadline.
function Ledger:set_danger_clock(t)
  local at = t.at or os.time()
  self:mark_pending()
  self:transaction(function()
    local iid = instance_id(self, t.instance, "set_danger_clock")
    self.db:run("UPDATE danger_clocks SET cleared_at = ? WHERE instance_id = ? AND name = ? AND cleared_at IS NULL",
      at, iid, need(t, "name", "set_danger_clock"))
    self.db:run("INSERT INTO danger_clocks (instance_id, name, deadline, note, set_at) VALUES (?, ?, ?, ?, ?)",
      iid, t.name, need(t, "deadline", "set_danger_clock"), t.note, at)
  end)
end

function Ledger:open_clock(t)
  local at = t.at or os.time()
  self:mark_pending()
  return self:transaction(function()
    local iid = instance_id(self, t.instance, "open_clock")
    local row = self.db:query("SELECT id FROM danger_clocks WHERE instance_id = ? AND name = ? AND cleared_at IS NULL",
      iid, need(t, "name", "open_clock"))[1]
    if row then
      self.db:run("UPDATE danger_clocks SET started_at = ?, deadline = ?, note = coalesce(?, note) WHERE id = ?",
        need(t, "started_at", "open_clock"), need(t, "deadline", "open_clock"), t.note, row.id)
      return row.id
    end
    local _, id = self.db:run([[INSERT INTO danger_clocks (instance_id, name, deadline, note, set_at, started_at)
      VALUES (?, ?, ?, ?, ?, ?)]], iid, t.name, t.deadline, t.note, at, t.started_at)
    return id
  end)
end

function Ledger:open_clocks(name)
  return self.db:query([[SELECT c.id, c.name, c.started_at, c.deadline, c.note, c.set_at, i.name AS instance,
      i.region, i.provider_id, i.profile FROM danger_clocks c JOIN instances i ON i.id = c.instance_id
    WHERE c.cleared_at IS NULL AND (:name IS NULL OR c.name = :name) ORDER BY c.deadline, c.id]], {name = name})
end

function Ledger:last_clock(instance, name)
  return self.db:query([[SELECT c.*, i.name AS instance, i.power_state, i.profile, i.region FROM danger_clocks c
    JOIN instances i ON i.id = c.instance_id WHERE (i.name = :inst OR i.provider_id = :inst) AND c.name = :name
    ORDER BY c.set_at DESC, c.id DESC LIMIT 1]], {inst = instance, name = name})[1]
end

function Ledger:remind_once(clock_id, day, notification_id, at)
  return self:transaction(function()
    local n = self.db:run([[INSERT OR IGNORE INTO clock_reminders (clock_id, day, notification_id, at)
      VALUES (?, ?, ?, ?)]], clock_id, day, notification_id, at or os.time())
    return n == 1
  end)
end

function Ledger:set_region(instance, region)
  self:transaction(function()
    self.db:run("UPDATE instances SET region = ? WHERE name = ?", region, instance)
  end)
end

function Ledger:clear_danger_clock(instance, name, at)
  self:transaction(function()
    self.db:run("UPDATE danger_clocks SET cleared_at = ? WHERE instance_id = ? AND name = ? AND cleared_at IS NULL",
      at or os.time(), instance_id(self, instance, "clear_danger_clock"), name)
  end)
end

-- ---- reads ------------------------------------------------------------------------

-- Metered intervals of an instance from its billing events: {from, to, price}. An
-- event with meter 'on' opens (or re-prices) an interval, 'off' closes it; an
-- interval still open runs to `now`. record_billing stores the price in force on
-- every 'on' event; the instance's current price is only a fallback.
function Ledger:meter_intervals(iid, now)
  local out, open = {}, nil
  local inst = self.db:query("SELECT price_per_hour FROM instances WHERE id = ?", iid)[1] or {}
  local price = nil
  for _, e in ipairs(self.db:query([[SELECT meter, price_per_hour, at FROM billing_events
      WHERE instance_id = ? AND meter IS NOT NULL ORDER BY at, id]], iid)) do
    price = e.price_per_hour or price
    if open then
      open.to = e.at
      out[#out + 1] = open
      open = nil
    end
    if e.meter == "on" then open = {from = e.at, price = price or inst.price_per_hour or 0} end
  end
  if open then open.to = math.max(open.from, now); open.open = true; out[#out + 1] = open end
  return out
end

-- Cost of the intervals clipped to [from, to] (either may be nil), and the seconds metered.
local function cost_in(intervals, from, to)
  local cost, secs = 0, 0
  for _, iv in ipairs(intervals) do
    local a, b = iv.from, iv.to
    if from and a < from then a = from end
    if to and b > to then b = to end
    if b > a then
      secs = secs + (b - a)
      cost = cost + (b - a) / 3600 * iv.price
    end
  end
  return cost, secs
end

local function round(x) return math.floor(x * 1e4 + 0.5) / 1e4 end

function Ledger:status(now)
  now = now or os.time()
  local out = {}
  for _, inst in ipairs(self.db:query("SELECT * FROM instances ORDER BY name")) do
    local cost = cost_in(self:meter_intervals(inst.id, now))
    local clocks = {}
    for _, c in ipairs(self.db:query([[SELECT name, deadline, note, started_at FROM danger_clocks
        WHERE instance_id = ? AND cleared_at IS NULL ORDER BY deadline]], inst.id)) do
      c.seconds_left = c.deadline - now
      clocks[#clocks + 1] = c
    end
    local run = self.db:query([[SELECT id, recipe, status, started_at FROM runs WHERE instance_id = ?
      AND status = 'running' ORDER BY started_at DESC, rowid DESC LIMIT 1]], inst.id)[1]
    local phase = run and self.db:query([[SELECT name, started_at, ended_at, outcome FROM phases
      WHERE run_id = ? ORDER BY id DESC LIMIT 1]], run.id)[1]
    out[#out + 1] = {
      name = inst.name, profile = inst.profile, provider_id = inst.provider_id,
      power_state = inst.power_state, meter = inst.meter, price_per_hour = inst.price_per_hour,
      currency = inst.currency, accrued_cost = round(cost), danger_clocks = clocks,
      run = run, phase = phase, updated_at = inst.updated_at, region = inst.region,
    }
  end
  return out
end

function Ledger:runs(limit)
  return self.db:query([[SELECT r.id, r.recipe, r.status, r.started_at, r.ended_at, i.name AS instance
    FROM runs r LEFT JOIN instances i ON i.id = r.instance_id
    ORDER BY r.started_at DESC, r.rowid DESC LIMIT ?]], limit or 50)
end

function Ledger:run(run_id)
  return self.db:query([[SELECT r.*, i.name AS instance FROM runs r
    LEFT JOIN instances i ON i.id = r.instance_id WHERE r.id = ?]], run_id)[1]
end

-- The checkpoints the box's load check passed before the seal of the runs run_ids
-- (close records each as a manifest row of kind box_load) -> {sha256 = path}.
function Ledger:box_loaded(run_ids)
  local out = {}
  for _, id in ipairs(run_ids) do
    for _, row in ipairs(self.db:query("SELECT path, sha256 FROM manifests WHERE kind = 'box_load' AND run_id = ?", id)) do
      out[row.sha256] = row.path
    end
  end
  return out
end

-- Everything recorded for one run, in time order: {at, kind, ...row}.
function Ledger:run_history(run_id)
  local events = {}
  local function add(kind, rows, at_field)
    for _, r in ipairs(rows) do r.kind = kind; r.at = r[at_field]; events[#events + 1] = r end
  end
  add("phase", self.db:query("SELECT * FROM phases WHERE run_id = ? ORDER BY id", run_id), "started_at")
  add("transfer", self.db:query("SELECT * FROM transfers WHERE run_id = ? ORDER BY id", run_id), "ended_at")
  add("manifest", self.db:query("SELECT * FROM manifests WHERE run_id = ? ORDER BY id", run_id), "created_at")
  add("billing", self.db:query("SELECT * FROM billing_events WHERE run_id = ? ORDER BY id", run_id), "at")
  add("gate", self.db:query("SELECT * FROM gate_decisions WHERE run_id = ? ORDER BY id", run_id), "at")
  add("notification", self.db:query("SELECT * FROM notifications WHERE run_id = ? ORDER BY id", run_id), "at")
  local order = {phase = 1, transfer = 2, manifest = 3, billing = 4, gate = 5, notification = 6}
  table.sort(events, function(a, b)
    if a.at ~= b.at then return a.at < b.at end
    if a.kind ~= b.kind then return order[a.kind] < order[b.kind] end
    return a.id < b.id
  end)
  return events
end

-- Cost per instance (metered time since `since`) and per run (the instance's metered
-- time inside the run's window). Runs without an instance cost nothing.
function Ledger:cost(opts)
  opts = opts or {}
  local now, since = opts.now or os.time(), opts.since
  local report = {instances = {}, runs = {}, totals = {}, since = since}
  local intervals = {}
  for _, inst in ipairs(self.db:query("SELECT id, name, currency FROM instances ORDER BY name")) do
    intervals[inst.id] = self:meter_intervals(inst.id, now)
    local cost, secs = cost_in(intervals[inst.id], since, now)
    if secs > 0 or not since then
      report.instances[#report.instances + 1] = {name = inst.name, currency = inst.currency,
        metered_seconds = secs, cost = round(cost)}
      if secs > 0 then
        local cur = inst.currency or "?"
        report.totals[cur] = (report.totals[cur] or 0) + cost
      end
    end
  end
  for _, r in ipairs(self.db:query([[SELECT r.id, r.recipe, r.status, r.started_at, r.ended_at, r.instance_id,
      i.name AS instance, i.currency FROM runs r LEFT JOIN instances i ON i.id = r.instance_id
      WHERE coalesce(r.ended_at, ?) >= ? ORDER BY r.started_at, r.rowid]], now, since or 0)) do
    local from = math.max(r.started_at, since or r.started_at)
    local cost, secs = 0, 0
    if r.instance_id then cost, secs = cost_in(intervals[r.instance_id], from, r.ended_at or now) end
    report.runs[#report.runs + 1] = {id = r.id, recipe = r.recipe, status = r.status, instance = r.instance,
      currency = r.currency, started_at = r.started_at, ended_at = r.ended_at, metered_seconds = secs,
      cost = round(cost), usage = self:usage(r.id)}
  end
  for cur, v in pairs(report.totals) do report.totals[cur] = round(v) end
  return report
end

-- ---- text formatting for the commands -------------------------------------------

function ledger.time_text(at)
  if not at then return "-" end
  return os.date("%Y-%m-%d %H:%M:%S", math.floor(at))
end

function ledger.duration_text(s)
  if not s then return "-" end
  s = math.floor(s)
  local neg = s < 0 and "-" or ""
  s = math.abs(s)
  if s < 60 then return neg .. s .. "s" end
  if s < 3600 then return string.format("%s%dm%02ds", neg, s // 60, s % 60) end
  if s < 86400 then return string.format("%s%dh%02dm", neg, s // 3600, s % 3600 // 60) end
  return string.format("%s%dd%02dh", neg, s // 86400, s % 86400 // 3600)
end

function ledger.money_text(amount, currency)
  if not amount then return "-" end
  return string.format("%.2f%s", amount, currency and (" " .. currency) or "")
end

-- rows: list of arrays of strings; the first row is the header. Columns are padded
-- to their widest cell (UTF-8 aware), the last column is not padded.
function ledger.table_text(rows)
  local widths = {}
  for _, r in ipairs(rows) do
    for i, cell in ipairs(r) do
      local w = utf8.len(cell) or #cell
      if w > (widths[i] or 0) then widths[i] = w end
    end
  end
  local out = {}
  for _, r in ipairs(rows) do
    local cells = {}
    for i, cell in ipairs(r) do
      cells[i] = i < #r and (cell .. string.rep(" ", widths[i] - (utf8.len(cell) or #cell))) or cell
    end
    out[#out + 1] = table.concat(cells, "  ")
  end
  return table.concat(out, "\n") .. "\n"
end

return ledger
