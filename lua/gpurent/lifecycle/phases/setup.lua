-- Phase -1, one-time setup (LIFECYCLE.md): the key, the durable tier, the
-- first-contact notice. The host alias itself is gpurent.hosts (`gpurent host add`).
--
--   the phase: needs {run, inst} (connect opened the session) -> produces {durable}
--   setup.check(inst, r, opts) -> {durable = path, notice_shown = bool}
--     checks the alias answers, the durable tier exists and is writable, and shows
--     the profile's conveniences and danger clocks once per host.
--   setup.install_key(inst, pubkey_text) -> "added" | "present"
local fs = require "gpurent.util.fs"
local errors = require "gpurent.util.errors"
local ledger = require "gpurent.state.ledger"
local profile_mod = require "gpurent.config.profile"

local setup = {name = "setup", needs = {"run", "inst"}, produces = {"durable"}}

-- Like ssh-copy-id: append the key once, with the right modes, over stdin.
function setup.install_key(inst, pub)
  pub = pub:match("^%s*(.-)%s*$")
  if not pub:match("^ssh%-") and not pub:match("^ecdsa%-") then error("install_key: not an OpenSSH public key", 2) end
  local res = inst:sh(require("gpurent.remote").script("install_key"),
    {stdin = pub .. "\n", timeout = 60, check = true})
  return res.stdout:match("(%a+)")
end

-- ---- the phase ------------------------------------------------------------------

local function notice_marker(host)
  return ledger.state_dir() .. "/first-contact/" .. host
end

function setup.notice_text(p)
  local s = p.surface or {}
  local lines = {"first contact with this " .. p.platform .. " host: things most people miss (shown once)"}
  for _, c in ipairs(s.conveniences or {}) do lines[#lines + 1] = "  convenience: " .. c.name .. ": " .. c.text end
  for _, d in ipairs(s.danger_clocks or {}) do lines[#lines + 1] = "  DANGER " .. d.id .. ": " .. d.text end
  return table.concat(lines, "\n")
end

function setup.check(inst, r, o)
  o = o or {}
  local profile = r.profile
  local durable = profile_mod.durable_tier(profile)
  local res = inst:sh("echo alive; hostname", {timeout = o.timeout or 60, idempotent = true})
  if res.code ~= 0 then error("setup: " .. r.host .. " does not answer: " .. (res.stderr or ""), 0) end
  r:say("setup", "%s answers (%s)", r.host, (res.stdout:match("alive\n([^\n]*)") or "?"))
  local out = {}
  if durable then
    local q = require("gpurent.lifecycle.storage").shell_path
    local d = inst:sh("test -d " .. q(durable.path) .. " && test -w " .. q(durable.path) .. " && echo ok",
      {timeout = 60, idempotent = true})
    if not d.stdout:find("ok", 1, true) then
      errors.refuse(string.format("setup: the durable tier %s (%s) is missing or not writable on %s: create it on the console first",
        durable.name, durable.path, r.host), 0)
    end
    r:say("setup", "durable tier %s present and writable (survives release: %s)", durable.path,
      tostring(durable.survives and durable.survives.release))
    out.durable = durable.path
  else
    r:say("setup", "profile %s has no durable tier: results live only on the box until pulled", profile.platform)
  end
  local marker = notice_marker(r.host)
  if not fs.exists(marker) or o.show_notice then
    r:say("setup", setup.notice_text(profile))
    fs.mkdirs(marker:match("^(.*)/[^/]*$"))
    fs.atomic_write(marker, os.date("!%Y-%m-%dT%H:%M:%SZ") .. "\n")
    r:notify("first_contact", "first-contact notice shown for " .. r.host)
    out.notice_shown = true
  else
    r:say("setup", "first-contact notice already shown for %s (%s)", r.host, marker)
  end
  return out
end

function setup.run(ctx, o)
  return {durable = setup.check(ctx.inst, ctx.run, o).durable}
end

return setmetatable(setup, {__call = function(_, ...) return setup.run(...) end})
