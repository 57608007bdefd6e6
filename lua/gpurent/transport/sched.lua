-- gpurent.sched: the coroutine scheduler. Tasks are coroutines; a task that must
-- wait for a socket calls sched.wait(fd, dirs, deadline), which yields to the loop;
-- the loop poll()s every waiting fd at once (core.sched.poll) and resumes the
-- ready ones. Code not running in a task (the main coroutine, or a coroutine the
-- user made) waits with a direct poll() instead, so every primitive works the same
-- inside and outside gpurent.parallel.
--
--   sched.spawn(fn, ...) -> task        sched.join(tasks)    sched.wait(fd, dirs, deadline)
--   sched.sleep(seconds)                sched.in_task()      sched.parallel(items, fn, {limit=})
-- dirs: 1 readable, 2 writable (3 both). wait returns the ready bits, 0 on deadline.
local core = require("gpurent.core")
local cs, now = core.sched, core.sys.now

local sched = {}
local TOKEN = {}          -- marks our yields, so user coroutines' yields are not confused
local tasks = {}          -- coroutine -> task
local ready = {}          -- tasks to resume, FIFO
local waiting = {}        -- task -> true while blocked on fd/timer/join
local looping = false

local function task_of_running()
  local co = coroutine.running()
  return tasks[co]
end

function sched.in_task() return task_of_running() ~= nil end

local function make_ready(t, ...)
  waiting[t] = nil
  t.resume_args = table.pack(...)
  ready[#ready + 1] = t
end

local function finish(t, ok, ...)
  t.done, t.ok = true, ok
  t.results = table.pack(...)
  tasks[t.co] = nil
  for _, j in ipairs(t.joiners) do
    if j.join_left then
      j.join_left = j.join_left - 1
      if j.join_left == 0 then j.join_left = nil; make_ready(j) end
    end
  end
end

local function traceback_handler(e)
  if type(e) == "string" then return debug.traceback(e, 2) end
  return e
end

-- sched.spawn(fn, ...) -> task. The task runs when the loop next turns (a join
-- from the main coroutine turns it). Errors are kept in the task, not raised.
function sched.spawn(fn, ...)
  local args = table.pack(...)
  local t = {joiners = {}}
  t.co = coroutine.create(function()
    return xpcall(fn, traceback_handler, table.unpack(args, 1, args.n))
  end)
  tasks[t.co] = t
  make_ready(t)
  return t
end

local function resume(t)
  local a = t.resume_args or {n = 0}
  t.resume_args = nil
  local res = table.pack(coroutine.resume(t.co, table.unpack(a, 1, a.n)))
  if not res[1] then                       -- the wrapper itself failed: cannot happen
    finish(t, false, res[2])
  elseif coroutine.status(t.co) == "dead" then
    finish(t, table.unpack(res, 2, res.n))
  elseif res[2] == TOKEN then
    local kind = res[3]
    if kind == "wait" then
      t.fd, t.dirs, t.deadline = res[4], res[5], res[6]
      waiting[t] = true
    elseif kind == "join" then
      waiting[t] = true
    elseif kind == "yield" then
      make_ready(t)
    end
  else
    finish(t, false, "sched: a task yielded outside the scheduler (coroutine.yield in a task)")
  end
end

-- One turn: resume the ready tasks, then poll the waiting ones.
local function turn()
  local batch = ready
  ready = {}
  for _, t in ipairs(batch) do resume(t) end
  -- Poll even when tasks are ready (timeout 0) so a task that keeps yielding
  -- cannot starve timers and sockets.
  local fds, dirs, owners, nearest = {}, {}, {}, nil
  for t in pairs(waiting) do
    if t.fd then fds[#fds + 1], dirs[#dirs + 1], owners[#owners + 1] = t.fd, t.dirs, t end
    if t.deadline and (not nearest or t.deadline < nearest) then nearest = t.deadline end
  end
  if #fds == 0 and not nearest then
    if #ready == 0 and next(waiting) then error("sched: deadlock: tasks wait on each other and nothing else", 0) end
    return
  end
  local timeout = #ready > 0 and 0 or (nearest and math.max(0, nearest - now()) or -1)
  local rev = cs.poll(fds, dirs, timeout)
  local t_now = now()
  for i, t in ipairs(owners) do
    if rev[i] ~= 0 then t.fd = nil; t.deadline = nil; make_ready(t, rev[i]) end
  end
  for t in pairs(waiting) do
    if t.deadline and t.deadline <= t_now and not t.join_left then
      t.fd = nil; t.deadline = nil; make_ready(t, 0)
    end
  end
end

-- Run the loop from the main coroutine until done() says so.
local function run_until(done)
  if looping then error("sched: the loop is already running", 2) end
  looping = true
  local ok, err = pcall(function()
    while not done() do turn() end
  end)
  looping = false
  if not ok then error(err, 0) end
end

-- sched.wait(fd, dirs, deadline) -> ready bits (0: the deadline passed)
function sched.wait(fd, dirs, deadline)
  if task_of_running() then
    return coroutine.yield(TOKEN, "wait", fd, dirs, deadline)
  end
  local timeout = deadline and math.max(0, deadline - now()) or -1
  return cs.wait_fd(fd, dirs, timeout)
end

function sched.sleep(seconds)
  if task_of_running() then
    coroutine.yield(TOKEN, "wait", nil, nil, now() + seconds)
  else
    core.sys.sleep(seconds)
  end
end

-- Let the other ready tasks run (long CPU-bound steps call this).
function sched.yield()
  if task_of_running() then coroutine.yield(TOKEN, "yield") end
end

-- sched.join(list_of_tasks): returns when all are done.
function sched.join(list)
  local left = 0
  for _, t in ipairs(list) do if not t.done then left = left + 1 end end
  if left == 0 then return end
  local me = task_of_running()
  if me then
    me.join_left = left
    for _, t in ipairs(list) do if not t.done then t.joiners[#t.joiners + 1] = me end end
    coroutine.yield(TOKEN, "join")
  else
    run_until(function()
      for _, t in ipairs(list) do if not t.done then return false end end
      return true
    end)
  end
end

-- sched.parallel(items, fn, {limit=}) -> results: results[i] = {ok=, value=,
-- error=, item=} in item order; results.failed counts the errors. fn(item, i)
-- runs in its own task, at most limit at a time.
function sched.parallel(items, fn, opts)
  local limit = (opts and opts.limit) or 64
  local n, nexti, results = #items, 1, {failed = 0}
  local function worker()
    while nexti <= n do
      local i = nexti
      nexti = i + 1
      local tb
      local ok, v = xpcall(fn, function(e) tb = debug.traceback(nil, 2); return e end, items[i], i)
      if ok then results[i] = {ok = true, value = v, item = items[i]}
      else
        results[i] = {ok = false, error = v, item = items[i], traceback = tb}
        results.failed = results.failed + 1
      end
    end
  end
  local workers = {}
  for w = 1, math.min(limit, n) do workers[w] = sched.spawn(worker) end
  sched.join(workers)
  for _, w in ipairs(workers) do
    if not w.ok then error(w.results[1], 0) end
  end
  return results
end

return sched
