-- gpurent.repl.helpers: the short functions a `gpurent repl` line can call, bound
-- into the session's environment. A helper that prints its result returns it
-- "shown" (session.shown), so the REPL does not print it a second time; assigning it
-- (`r = df()`) keeps the full table for a later look.
--
--   sh "cmd"  put(l, r)  get(r, l)  df()  check([ids])  gotchas()  meter()
--   power_off([name])  release([name], {discard =, pulled =})  help()  exit()  quit()
local ledger_text = function(rows) return require("gpurent.state.ledger").table_text(rows) end

local helpers = {}

helpers.HELP = [[
  expr, =expr        evaluate and print (tables pretty-printed)
  statements         run Lua; an incomplete statement continues on the next line
  !cmd               run cmd on the instance, streaming; Ctrl-C interrupts it
  sh "cmd"           run cmd, print its output, return its result table
  t = secret.ask("label")   type a value without echo; t prints as ***
  df()               the profile's storage tiers: bytes and inodes
  check([ids])       the profile's gotcha probes, as `gpurent check` (ids: "AD1" or {"AD1", ...})
  gotchas()          the gotchas the profile checks: id, severity, title
  meter()            the instance's meter: the platform's API when it has a token, else the ledger
  put(local, remote)  get(remote, local)    SFTP transfers (Tab completes both paths)
  power_off([name])  release([name], {discard = {"GLOB"}, pulled = {"DIR"}})
                     through the teardown gate: you type the name to approve
  help  exit  quit   (bare or called)       :help :check :df :gotchas :meter :reconnect :quit
  Ctrl-D leaves, Ctrl-C cancels; Tab completes names, and paths inside strings
]]

local function shown(session, v)
  if type(v) == "table" then session.shown[v] = true end
  return v
end

local function need_inst(session)
  if not session.inst then error("no instance: start the REPL with `gpurent repl HOST`", 3) end
  return session.inst
end

---------------------------------------------------------------- df

local function human(n) return n and require("gpurent.lifecycle.storage").human(n) or "?" end
local function pct(x) return x and (tostring(x) .. "%") or "?" end

local function df(session)
  local storage = require "gpurent.lifecycle.storage"
  local reading = storage.measure(need_inst(session), {profile = session.profile})
  local rows = {{"TIER", "PATH", "SIZE", "USED", "FREE", "USE%", "INODES", "IUSE%"}}
  for _, t in ipairs(require("gpurent.config.profile").tier_list(session.profile)) do
    local r = reading.tiers[t.name]
    if r and r.exists ~= false then
      rows[#rows + 1] = {t.name, r.path or t.path, human(r.bytes_total), human(r.bytes_used), human(r.bytes_free),
        pct(r.bytes_pct), r.inodes_total and tostring(r.inodes_total) or "?", pct(r.inodes_pct)}
    else
      rows[#rows + 1] = {t.name, t.path, "absent", "", "", "", "", ""}
    end
  end
  io.write(ledger_text(rows))
  return shown(session, reading)
end

---------------------------------------------------------------- check, gotchas

local function only_ids(ids)
  if ids == nil then return nil end
  if type(ids) == "string" then return {ids} end
  if type(ids) ~= "table" then error('check: ids must be a gotcha id or a list of them, e.g. check("AD1")', 3) end
  return ids
end

local function print_check(results)
  local rows = {{"ID", "STATUS", "EVIDENCE"}}
  for _, r in ipairs(results) do
    rows[#rows + 1] = {r.id, r.status, r.evidence}
    if r.status == "warn" or r.status == "fail" then rows[#rows + 1] = {"", "", "fix: " .. r.fix} end
  end
  io.write(ledger_text(rows))
end

local function check(session, ids)
  local gotchas = require "gpurent.gotchas"
  local results = gotchas.run(need_inst(session), {profile = session.profile, only = only_ids(ids)})
  print_check(results)
  return shown(session, results)
end

local function list_gotchas(session)
  if not session.profile then error("no profile: start the REPL with `gpurent repl HOST [--profile NAME]`", 3) end
  local list = require("gpurent.gotchas").list(session.profile)
  local rows = {{"ID", "SEVERITY", "TITLE"}}
  for _, g in ipairs(list) do rows[#rows + 1] = {g.id, g.severity, g.title} end
  io.write(ledger_text(rows))
  io.write("(profile ", session.profile.platform, "; check() runs them, check(\"ID\") one)\n")
  return shown(session, list)
end

---------------------------------------------------------------- meter

local function money(v, cur) return require("gpurent.state.ledger").money_text(v, cur) end

local function meter(session)
  need_inst(session)
  local m, why = session.box:meter()
  session.box:remember(m)
  if not m then error("meter of " .. session.host .. " unknown: " .. why, 3) end
  if m.source == "api" then
    local it = m.item
    local P = session.box:platform()
    io.write(string.format("%s (%s): %s, meter %s, %s/h, accrued %s (%s API)\n", it.name, it.uuid, it.status,
      m.meter, money(m.price_per_hour, m.currency), money(m.accrued, m.currency), P.title or P.name))
  else
    local _, why = session.box:client()
    io.write(string.format("%s: meter %s, %s, accrued %s (the ledger; %s)\n",
      session.host, m.meter, tostring(m.status), money(m.accrued, m.currency), tostring(why or "the API was not asked")))
  end
  return shown(session, m)
end

---------------------------------------------------------------- stop

-- The platform's one guarded stop (P.stop), as `gpurent billing` and teardown use it:
-- the gate asks the person on the terminal, and C refuses what they did not approve.
local function stop(session, verb, ref, o)
  o = o or {}
  if ref == nil and session.host then
    local it = session.box:item()
    ref = it and it.uuid or session.host
  end
  if type(ref) ~= "string" then error(verb .. ': name the instance, e.g. ' .. verb .. '("a1")', 3) end
  session.box:invalidate()
  -- a session whose platform has no such verb (the local machine, a bare SSH host) may
  -- still name an instance of the default profile's platform
  -- (then the session's box is not that instance: no inventory is taken over it)
  local P, profile, inst, target = session.box:platform(), session.profile, session.inst, session.host
  if not (P.verbs and P.verbs[verb]) then
    P, profile = session.box:default_platform()
    inst, target = nil, nil
  end
  return shown(session, P.stop{verb = verb, ref = ref, inst = inst, target = target,
    pulled = o.pulled, discard = o.discard, profile = profile,
    profile_name = profile and profile.platform})
end

---------------------------------------------------------------- binding

function helpers.bind(session)
  local env = session.env
  env.secret = require("gpurent.util.secret")  -- secret.ask("label"), secret("value")
  -- Ctrl-C TERMs the command's remote process group (inst:sh's default) and the
  -- error says so; opts as inst:sh's (to=FILE for more than the capture cap)
  env.sh = function(cmd, o)
    local r = need_inst(session):sh(cmd, o)
    if r.stdout ~= "" then io.write(r.stdout) end
    if r.stderr ~= "" then io.stderr:write(r.stderr) end
    return shown(session, r)
  end
  env.put = function(l, r, o) return need_inst(session):put(l, r, o) end
  env.get = function(r, l, o) return need_inst(session):get(r, l, o) end
  env.df = function() return df(session) end
  env.check = function(ids) return check(session, ids) end
  env.gotchas = function() return list_gotchas(session) end
  env.meter = function() return meter(session) end
  env.power_off = function(ref, o) return stop(session, "power_off", ref, o) end
  env.release = function(ref, o) return stop(session, "release", ref, o) end
  env.help = function() io.write(helpers.HELP) end
  env.exit = function() session.leaving = true end
  env.quit = env.exit
  session.builtins = {help = env.help, exit = env.exit, quit = env.quit}
end

return helpers
