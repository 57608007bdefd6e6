-- Phase environment (LIFECYCLE.md phase 1, after the audit): the job's environment
-- on the box - the proxy hook before any external call, the image's interpreter as
-- the env (never a new conda env on a rental), secrets over stdin into the
-- per-instance credential file, mirror settings where the profile needs them.
--
--   needs {run, inst} -> produces {box, python, env, hook, cred_file}
--     box: the session whose every sh() runs the profile's proxy hook first
--     python: the interpreter; env: the job's variables (mirrors, opts.env);
--     hook, cred_file: for the launch wrapper (only when there is one)
--   opts.secrets = {NAME = gpurent.secret(value), ...}   (plain strings are refused)
--   opts.env = {K = V}                                    (added to the job's env)
-- Secrets never reach argv, the ledger or a shared filesystem.
local secret = require "gpurent.util.secret"
local storage = require "gpurent.lifecycle.storage"
local errors = require "gpurent.util.errors"

local environment = {name = "environment", needs = {"run", "inst"},
  produces = {"box", "python", "env", "hook", "cred_file"}}
local q = storage.shell_path

-- An instance whose sh() runs `hook` first; every other method is the original's.
function environment.hooked(inst, hook)
  if not hook or hook == "" then return inst end
  local h = {inner = inst, hook = hook, profile = rawget(inst, "profile")}
  function h.sh(_, cmd, o) return inst:sh(hook .. "\n" .. cmd, o) end
  return setmetatable(h, {
    __index = function(_, k)
      local v = inst[k]
      if type(v) == "function" then return function(_, ...) return v(inst, ...) end end
      return v
    end,
    __tostring = function() return tostring(inst) end,
  })
end

local function cred_text(secrets)
  local names = {}
  for k in pairs(secrets) do names[#names + 1] = k end
  table.sort(names)
  local lines = {"# written by gpurent (environment phase); per-instance only, mode 600"}
  for _, k in ipairs(names) do
    if not k:match("^[%a_][%w_]*$") then errors.usage("secret name " .. k .. " is not a shell variable name", 0) end
    local v = secrets[k]
    if not secret.is(v) then
      errors.usage("secret " .. k .. " must be given as gpurent.secret(...), never a plain string", 0)
    end
    local s = secret.reveal(v)
    lines[#lines + 1] = "export " .. k .. "='" .. s:gsub("'", "'\\''") .. "'"
  end
  return table.concat(lines, "\n") .. "\n", names
end

function environment.run(ctx, o)
  o = o or {}
  local inst, r = ctx.inst, ctx.run
  local profile = r.profile
  local net = profile.network or {}
  local hook = net.proxy_hook
  if hook then
    r:say("environment", "proxy hook before every remote command: %s%s", hook,
      net.proxy_mandatory and " (mandatory on " .. profile.platform .. ")" or "")
  end
  local h = environment.hooked(inst, hook)
  -- the interpreter: the image's, checked, never a new env
  local py = (profile.env and profile.env.python) or (profile.overrides and profile.overrides.PY) or "python3"
  local res = h:sh(q(py) .. " -c 'import sys; print(sys.version.split()[0])'", {timeout = 60, idempotent = true})
  if res.code ~= 0 then
    error(string.format("environment: the profile's interpreter %s does not run on %s (exit %s): %s", py, r.host,
      tostring(res.code), (res.stderr or ""):match("[^\n]*")), 0)
  end
  r:say("environment", "interpreter %s (Python %s)%s", py, res.stdout:match("%S+") or "?",
    profile.env and profile.env.base_is_env and "; base IS the env: no conda create/clone on a rental" or "")
  -- mirrors (AD2) go into the job's environment
  local env = {}
  if profile.facts and profile.facts.china_mirror_needed then
    if net.hf_endpoint then env.HF_ENDPOINT = net.hf_endpoint end
    if net.hf_hub_disable_xet then env.HF_HUB_DISABLE_XET = tostring(net.hf_hub_disable_xet) end
    if profile.storage and profile.storage.hf_home then env.HF_HOME = profile.storage.hf_home end
    r:say("environment", "mirror settings for the job: HF_ENDPOINT=%s HF_HUB_DISABLE_XET=%s HF_HOME=%s",
      tostring(env.HF_ENDPOINT), tostring(env.HF_HUB_DISABLE_XET), tostring(env.HF_HOME))
  end
  for k, v in pairs(o.env or {}) do env[k] = v end
  local out = {box = h, python = py, env = env, hook = hook}
  -- credentials: one block over stdin into the per-instance file, mode 600
  local cred = profile.overrides and profile.overrides.CRED_FILE
  if o.secrets and next(o.secrets) then
    if not cred then errors.usage("environment: profile " .. profile.platform .. " names no CRED_FILE for secrets", 0) end
    local text, names = cred_text(o.secrets)
    -- umask only applies to a new file: a stale .tmp (an interrupted push) would keep
    -- its mode, so remove it first, create it exclusively (set -C), and chmod anyway
    local tmp = q(cred .. ".tmp")
    h:sh("umask 077 && rm -f " .. tmp .. " && (set -C && cat > " .. tmp .. ") && chmod 600 " .. tmp ..
      " && mv -f " .. tmp .. " " .. q(cred),
      {stdin = secret(text), timeout = 60, check = true})
    out.cred_file = cred
    r:say("environment", "secrets %s pushed over stdin to %s (per-instance, mode 600; never on the shared FS)",
      table.concat(names, ", "), cred)
  end
  return out
end

return environment
