-- Phase 3, launch (LIFECYCLE.md): push the code resumably and verify it on the box,
-- start the job detached (tmux session named after the run; nohup + setsid when
-- tmux is absent) inside gpurent's wrapper (gpurent.detach: the on-box completion
-- chain), probe briefly (alive, first log line, no Traceback) and hand control back.
--
--   needs {run, inst, code} (uses box, python, env, hook, cred_file, run_json when
--   given) -> produces {job = {mode, attempt, pid, script, version}}
--   opts: command (the train command; {python} {out} {code} {run_id} are filled in),
--         mode ("auto" | "tmux" | "nohup"), probe_seconds (10), env {K=V},
--         budget (yuan: refused once the instance's spend reached it), instance,
--         roster (the capsule's files; capsule.DEFAULT_ROSTER), box_load (the checkpoint
--         load check on the box: capsule.load_check). When the run will produce
--         checkpoints (the roster's or the profile's sync list's *.pth/.pt/.ckpt), the
--         check is settled before anything is pushed: box_load, else the default torch
--         check, refused before launch when the box's interpreter has no torch. The
--         wrapper runs it before the durable sync; it is kept in .gpurent/load_check
--         for close (and `gpurent watch RUN --finish`).
--   launch.load_check(inst, r, o, python) -> {shell, how, default} | nil (no checkpoints)
--   launch.expand(r, command [, python]) -> the command with the placeholders filled in
local detach = require "gpurent.lifecycle.detach"
local monitor = require "gpurent.lifecycle.monitor"
local profile_mod = require "gpurent.config.profile"
local errors = require "gpurent.util.errors"
local sched = require "gpurent.transport.sched"
local capsule = require "gpurent.lifecycle.capsule"
local remote = require "gpurent.remote"

local launch = {name = "launch", needs = {"run", "inst", "code"}, produces = {"job"}}
local q = detach.q

function launch.expand(r, command, python)
  local vars = {python = python or (r.profile.env and r.profile.env.python) or "python",
                out = r.paths.out, code = r.paths.code, run_id = r.id, project = r.project}
  return (command:gsub("{([%a_]+)}", function(k)
    local v = vars[k]
    if v == nil then return nil end
    return (k == "run_id" or k == "project") and v or q(v)
  end))
end

-- An idempotent step (a resumable put, a read-only check) that stalls is retried once
-- on a fresh connection: a stalled SSH channel must not hang the launch for minutes.
function launch.retrying(inst, r, what, fn)
  return r:retrying(inst, "launch", what, fn)
end

-- Push every file of the prepared tree (resumable .part transfers, SHA-256 checked
-- per file), then prove the whole tree on the box with one sha256sum listing.
function launch.push_code(inst, r, code)
  local files = code.files
  local dirs, seen = {q(r.paths.code), q(r.paths.out), q(r.paths.meta)}, {}
  for _, f in ipairs(files) do
    local d = f.path:match("^(.*)/[^/]*$")
    if d and not seen[d] then seen[d] = true; dirs[#dirs + 1] = q(r.paths.code .. "/" .. d) end
  end
  inst:sh("mkdir -p " .. table.concat(dirs, " "), {timeout = 60, check = true, idempotent = true})
  local bytes = 0
  for _, f in ipairs(files) do
    launch.retrying(inst, r, "put " .. f.path, function()
      return inst:put(code.dir .. "/" .. f.path, r.paths.code .. "/" .. f.path,
        {verify = true, progress = false, stall_timeout = 30})
    end)
    bytes = bytes + f.bytes
  end
  local list = {}
  for _, f in ipairs(files) do list[#list + 1] = q(f.path) end
  local res = launch.retrying(inst, r, "the code check", function()
    return inst:sh("cd " .. q(r.paths.code) .. " && sha256sum -- " .. table.concat(list, " "),
      {timeout = 60, idempotent = true})
  end)
  local remote = {}
  for hex, path in res.stdout:gmatch("(%x+)  ([^\n]+)") do remote[path] = hex end
  local bad = {}
  for _, f in ipairs(files) do
    if remote[f.path] ~= f.sha256 then bad[#bad + 1] = f.path end
  end
  if #bad > 0 or res.code ~= 0 then
    error(string.format("launch: the code on %s differs from the local tree after the push: %s", r.host,
      #bad > 0 and table.concat(bad, ", ") or (res.stderr or "")), 0)
  end
  pcall(r.ledger, r, function(L)
    L:record_transfer{run_id = r.id, instance = r.host, direction = "put", local_path = code.dir,
      remote_path = r.paths.code, bytes = bytes, sha256 = code.tree_sha256, outcome = "ok"}
  end)
  return #files, bytes
end

-- After a start: alive, a first line from the program, no Traceback - or it died.
function launch.probe(inst, r, o)
  local deadline = require("gpurent.util.sys").now() + (o.probe_seconds or 10)
  local f, v
  for _ = 1, 200 do
    f = launch.retrying(inst, r, "the launch probe", function() return monitor.probe(inst, r, {timeout = 15}) end)
    v = monitor.classify(f, {stall_seconds = 1e9})
    if v.state == "finished" then
      r:say("launch", "probe: already finished (exit 0): %s", f.last_line or "")
      return v
    end
    if v.state == "dead" then
      error(string.format("launch: the job died right after the start: %s\n  evidence: %s\n  remedy: %s",
        v.triage.cause, tostring(v.triage.evidence), v.triage.remedy), 0)
    end
    if f.alive and f.last_line and f.last_line ~= "" then
      if f.last_line:find("Traceback", 1, true) then
        error("launch: Traceback in the first log lines: " .. f.last_line, 0)
      end
      r:say("launch", "probe: alive (pid %s%s), first log line: %s", tostring(f.pid),
        f.session and (", tmux session " .. r.session) or "", f.last_line)
      return v
    end
    if require("gpurent.util.sys").now() > deadline then break end
    sched.sleep(0.2)
  end
  r:say("launch", "probe: alive=%s but no log line yet after %ss (watch will tell)", tostring(f and f.alive), tostring(o.probe_seconds or 10))
  return v
end

-- The checkpoint load check this run's checkpoints will go through, settled before
-- the push: a default that cannot run on this box is a refusal now, not a failure
-- after the paid training.
function launch.load_check(inst, r, o, python)
  local cks = capsule.checkpoints(r, o.roster)
  if #cks == 0 then return nil end
  local lc = capsule.load_check{command = o.box_load, python = python}
  if lc.default then
    local res = inst:sh(q(python) .. " -c 'import torch' 2>&1", {timeout = 120, idempotent = true})
    if res.code ~= 0 then
      errors.refuse(string.format("launch: the run will produce checkpoints (%s) and no box_load= was given; the " ..
        "default load check (torch.load, weights_only=True, on the box) needs torch in %s on %s, which has none " ..
        "(%s): give box_load=CMD (run on the box in the code dir; {} = the checkpoint, {python} = %s), or install " ..
        "torch; nothing was launched", table.concat(cks, ", "), python, r.host,
        ((res.stdout or "") .. (res.stderr or "")):match("([^\n]*Error[^\n]*)") or ("exit " .. tostring(res.code)),
        python), 0)
    end
  end
  return lc
end

local function wrapper_opts(ctx, o)
  local r, profile = ctx.run, ctx.run.profile
  local durable = profile_mod.durable_tier(profile)
  local env = {}
  for k, v in pairs(ctx.env or {}) do env[k] = v end
  for k, v in pairs(o.env or {}) do env[k] = v end
  return {
    command = launch.expand(r, o.command, ctx.python), env = env, hook = ctx.hook, cred_file = ctx.cred_file,
    sync = profile.checkpoints.sync or {}, scratch = profile.checkpoints.scratch or {},
    durable_dir = r.paths.durable_ckpt, durable_tier = durable and durable.path,
  }
end

function launch.run(ctx, o)
  o = o or {}
  local inst, r = require("gpurent.lifecycle").session(ctx), ctx.run
  if not o.command or o.command == "" then errors.usage("launch: no train command", 0) end
  -- every launch passes the budget gate (a budget set with `gpurent billing budget`, or budget=)
  local budget_line = r:check_budget(o.budget, o.instance, "launch")
  if budget_line then r:say("launch", "%s", budget_line) end
  local python = ctx.python or (r.profile.env and r.profile.env.python) or "python3"
  local lc = launch.load_check(inst, r, o, python)
  local n, bytes = launch.push_code(inst, r, ctx.code)
  r:say("launch", "pushed %d files (%d bytes) to %s; every SHA-256 re-read on the box and matching", n, bytes, r.paths.code)
  if lc then
    inst:sh(remote.script("put_file", {FILE = r.paths.meta .. "/load_check"}), {stdin = lc.shell, timeout = 60, check = true})
    r:say("launch", "checkpoint load check on the box before the durable sync and the seal: %s", lc.how)
  end
  if ctx.run_json then
    inst:put(ctx.run_json.path, r.paths.active .. "/run.json", {verify = true, progress = false})
  end
  local wo = wrapper_opts(ctx, o)
  wo.load_check = lc and lc.shell or nil
  local script, version, new = detach.install(inst, r, function(v)
    wo.version = v
    return detach.wrapper(r, wo)
  end)
  r:say("launch", "wrapper %s (v%d, %s; never rewritten under a live job)", script, version, new and "new" or "unchanged")
  r:say("launch", "command: %s", wo.command)
  local st = detach.start(inst, r, {script = script, mode = o.mode})
  st.script, st.version = script, version
  -- a nohup job is named as such: nothing here mentions a session it does not have
  r:say("launch", "started attempt %d under %s; outputs and checkpoints in %s; log %s", st.attempt,
    st.how or st.mode == "tmux" and ("tmux (session " .. r.session .. ")") or (st.mode .. " + setsid (detached from this SSH session)"),
    r.paths.out, r.paths.log)
  launch.probe(inst, r, o)
  return {job = st}
end

return setmetatable(launch, {__call = function(_, ...) return launch.run(...) end})
