-- gpurent.notify: the one way gpurent tells the person something that matters after the
-- command ends (a sweep finished, a run was watched to its end, autostop fired, a box
-- sat idle, a budget was crossed, the release clock of a powered-off box ran down).
-- Every notification is a terminal line and a ledger row, always; it is also pushed
-- through the platform's channel (gpurent.platform: P.notify, e.g. a chat message)
-- when the platform has one and it is configured (P.notify_ready). The channel's rate
-- limits (P.notify_limits(): per_minute, per_day, from the profile) are counted
-- locally in the ledger; a message over them is held, never dropped: held messages go
-- out as ONE summary at the next notification or gpurent command that finds the
-- window open, and the terminal line says what was held.
--
--   notify.send{kind=, message=, instance=?, run_id=?, profile=? (table), profile_name=?,
--               platform=? (P), push=? (true default | false | fn{title,name,content} -> ok, why),
--               channel=? (a name for a push function), limits=? ({per_minute=, per_day=}),
--               once=? (skip when the same kind+instance+message is in the ledger),
--               out=? (default stderr), ledger_path=?, now=?}
--       -> {id=, push = "sent" | "held" | "summarized" | "failed" | "none" | "skipped", why=}
--   notify.flush{out=, ledger_path=, now=} -> number of summaries sent
--       (every channel with held messages whose window is open; cli.main calls it)
local ledger = require "gpurent.state.ledger"

local notify = {}

local function say(out, instance, text)
  out:write("gpurent: ", instance and (instance .. ": ") or "", text, "\n")
end

local function resolve_platform(o)
  if o.platform then return o.platform, o.profile end
  local profile_mod = require "gpurent.config.profile"
  local p = o.profile
  if not p then
    local ok, loaded = pcall(profile_mod.load, o.profile_name or profile_mod.default_name())
    p = ok and loaded or nil
  end
  local ok, P = pcall(require("gpurent.platform").of, p)
  return ok and P or require("gpurent.platform").of(nil), p
end

-- The pusher, its channel name and its limits; nil when nothing is pushed.
local function channel_of(o)
  if o.push == false then return nil end
  if type(o.push) == "function" then return o.push, o.channel or "push", o.limits end
  local P = resolve_platform(o)
  if not P.notify then return nil end
  if P.notify_ready then
    local ready = P.notify_ready()
    if not ready then return nil end
  end
  return P.notify, P.name, o.limits or (P.notify_limits and P.notify_limits()) or nil, P.notify_channel
end

local function label(P_label, channel) return P_label or channel end

-- Whether one more push fits the window, and why not.
local function window_open(L, channel, limits, now)
  if not limits then return true end
  local minute, day = L:push_counts(channel, now)
  if limits.per_day and day >= limits.per_day then
    return false, string.format("%d a day reached", limits.per_day)
  end
  if limits.per_minute and minute >= limits.per_minute then
    return false, string.format("%d a minute reached", limits.per_minute)
  end
  return true
end

local function try_push(pusher, m)
  local ok, sent, why = pcall(pusher, m)
  if not ok then return false, tostring(sent) end
  if not sent then return false, tostring(why or "not sent") end
  return true
end

local function summary_text(rows)
  local lines = {}
  for _, r in ipairs(rows) do
    lines[#lines + 1] = string.format("%s %s%s", os.date("!%m-%d %H:%M", r.at), r.instance and (r.instance .. ": ") or "",
      r.message)
  end
  return table.concat(lines, "\n")
end

-- Send the held rows (plus `extra`, a row just written) as one summary push.
local function send_summary(L, pusher, channel, rows, now)
  local title = string.format("gpurent: %d notification%s (held by the rate limit)", #rows, #rows == 1 and "" or "s")
  local ok, why = try_push(pusher, {title = title, name = "gpurent", content = summary_text(rows)})
  if not ok then return false, why end
  local sid = L:notify{kind = "summary", message = title .. "\n" .. summary_text(rows), channel = channel, push = "sent",
    pushed_at = now, at = now}
  local ids = {}
  for _, r in ipairs(rows) do ids[#ids + 1] = r.id end
  L:mark_summarized(ids, sid, now)
  return true
end

local function open_ledger(o)
  return ledger.open(o.ledger_path)
end

local function ensure_instance(L, o)
  if not o.instance then return end
  local known = L.db:query("SELECT 1 FROM instances WHERE name = ?", o.instance)[1]
  if known then return end
  local profile_mod = require "gpurent.config.profile"
  L:upsert_instance{name = o.instance, profile = o.profile_name or profile_mod.default_name()}
end

function notify.send(o)
  assert(type(o) == "table" and o.message and o.kind, "notify.send{kind=, message=}")
  local out = o.out or io.stderr
  local now = o.now or os.time()
  local L = open_ledger(o)
  local ok, res = pcall(function()
    ensure_instance(L, o)
    if o.once then
      local seen = L.db:query([[SELECT 1 FROM notifications n LEFT JOIN instances i ON i.id = n.instance_id
        WHERE n.kind = ? AND n.message = ? AND coalesce(i.name, '') = ?]], o.kind, o.message, o.instance or "")[1]
      if seen then return {push = "skipped"} end
    end
    say(out, o.instance, o.message)
    local pusher, channel, limits, P_label = channel_of(o)
    if not pusher then
      return {id = L:notify{kind = o.kind, message = o.message, instance = o.instance, run_id = o.run_id, push = "none", at = now},
              push = "none"}
    end
    local name = label(P_label, channel)
    local id = L:notify{kind = o.kind, message = o.message, instance = o.instance, run_id = o.run_id, channel = channel,
      push = "held", at = now}
    local open, why = window_open(L, channel, limits, now)
    if not open then
      L:set_push(id, "held", nil, why)
      say(out, nil, string.format("%s limit (%s): this message is held; it goes out in one summary when the limit allows",
        name, why))
      return {id = id, push = "held", why = why}
    end
    local held = L:held(channel)
    if #held > 1 then                        -- earlier held messages and this one: one summary
      local sent, err = send_summary(L, pusher, channel, held, now)
      if sent then
        say(out, nil, string.format("%s: sent with %d held notification%s in one summary", name, #held - 1,
          #held == 2 and "" or "s"))
        return {id = id, push = "summarized"}
      end
      L:set_push(id, "held", nil, err)
      say(out, nil, string.format("%s: not sent (%s); %d message(s) held for a later summary", name, err, #held))
      return {id = id, push = "held", why = err}
    end
    local sent, err = try_push(pusher, {title = "gpurent: " .. (o.instance or o.kind), name = o.instance or o.kind,
      content = o.message})
    if sent then
      L:set_push(id, "sent", now)
      return {id = id, push = "sent"}
    end
    L:set_push(id, "held", nil, err)
    say(out, nil, string.format("%s: not sent (%s); held for a later summary", name, err))
    return {id = id, push = "held", why = err}
  end)
  L:close()
  if not ok then
    -- the ledger failing must not hide the message itself
    say(out, o.instance, o.message)
    say(out, nil, "(notification not recorded: " .. tostring(res) .. ")")
    return {push = "failed", why = tostring(res)}
  end
  return res
end

-- Held messages of every channel whose window is open go out as one summary each.
function notify.flush(o)
  o = o or {}
  if not ledger.exists(o.ledger_path) then return 0 end
  local out, now = o.out or io.stderr, o.now or os.time()
  local L = open_ledger(o)
  local sent = 0
  local ok, err = pcall(function()
    for _, channel in ipairs(L:held_channels()) do
      local okp, P = pcall(require("gpurent.platform").of, channel)
      if okp and P.notify and P.name == channel and (not P.notify_ready or P.notify_ready()) then
        local limits = P.notify_limits and P.notify_limits() or nil
        if window_open(L, channel, limits, now) then
          local held = L:held(channel)
          local done, why = send_summary(L, P.notify, channel, held, now)
          if done then
            sent = sent + 1
            say(out, nil, string.format("%s: sent a summary of %d held notification%s", P.notify_channel or channel,
              #held, #held == 1 and "" or "s"))
          else
            say(out, nil, string.format("%s: %d held notification(s) still not sent: %s", P.notify_channel or channel,
              #held, why))
          end
        end
      end
    end
  end)
  L:close()
  if not ok then say(out, nil, "(held notifications not flushed: " .. tostring(err) .. ")") end
  return sent
end

return notify
