-- Phase 1, connect + credentials (LIFECYCLE.md): the proxy hook before any
-- external call, the image's interpreter as the env (never a new conda env on a
-- rental), secrets over stdin into the per-instance credential file, mirror settings
-- where the profile needs them.
--
--   connect(inst, r, opts) -> hooked inst
--   opts.secrets = {NAME = gpurent.secret(value), ...}   (plain strings are refused)
-- The returned instance runs the profile's proxy hook before every later command
-- (inst:sh); r.env gets the mirror settings and r.python the interpreter, which the
-- launch wrapper uses. Secrets never reach argv, the ledger or a shared filesystem.
local secret = require "gpurent.util.secret"
local storage = require "gpurent.lifecycle.storage"
local errors = require "gpurent.util.errors"

local connect = {}
local q = storage.shell_path

-- An instance whose sh() runs `hook` first; every other method is the original's.
function connect.hooked(inst, hook)
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
  local lines = {"# written by gpurent (connect phase); per-instance only, mode 600"}
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

function connect.run(inst, r, o)
  o = o or {}
  local p = r.profile
  local net = p.network or {}
  local hook = net.proxy_hook
  if hook then
    r:say("connect", "proxy hook before every remote command: %s%s", hook,
      net.proxy_mandatory and " (mandatory on " .. p.platform .. ")" or "")
  end
  local h = connect.hooked(inst, hook)
  r.hook = hook
  -- the interpreter: the image's, checked, never a new env
  local py = (p.env and p.env.python) or (p.overrides and p.overrides.PY) or "python3"
  local res = h:sh(q(py) .. " -c 'import sys; print(sys.version.split()[0])'", {timeout = 60, idempotent = true})
  if res.code ~= 0 then
    error(string.format("connect: the profile's interpreter %s does not run on %s (exit %s): %s", py, r.host,
      tostring(res.code), (res.stderr or ""):match("[^\n]*")), 0)
  end
  r.python = py
  r:say("connect", "interpreter %s (Python %s)%s", py, res.stdout:match("%S+") or "?",
    p.env and p.env.base_is_env and "; base IS the env: no conda create/clone on a rental" or "")
  -- mirrors (AD2) go into the job's environment
  r.env = r.env or {}
  if p.facts and p.facts.china_mirror_needed then
    if net.hf_endpoint then r.env.HF_ENDPOINT = net.hf_endpoint end
    if net.hf_hub_disable_xet then r.env.HF_HUB_DISABLE_XET = tostring(net.hf_hub_disable_xet) end
    if p.storage and p.storage.hf_home then r.env.HF_HOME = p.storage.hf_home end
    r:say("connect", "mirror settings for the job: HF_ENDPOINT=%s HF_HUB_DISABLE_XET=%s HF_HOME=%s",
      tostring(r.env.HF_ENDPOINT), tostring(r.env.HF_HUB_DISABLE_XET), tostring(r.env.HF_HOME))
  end
  for k, v in pairs(o.env or {}) do r.env[k] = v end
  -- credentials: one block over stdin into the per-instance file, mode 600
  local cred = p.overrides and p.overrides.CRED_FILE
  if o.secrets and next(o.secrets) then
    if not cred then errors.usage("connect: profile " .. p.platform .. " names no CRED_FILE for secrets", 0) end
    local text, names = cred_text(o.secrets)
    -- umask only applies to a new file: a stale .tmp (an interrupted push) would keep
    -- its mode, so remove it first, create it exclusively (set -C), and chmod anyway
    local tmp = q(cred .. ".tmp")
    h:sh("umask 077 && rm -f " .. tmp .. " && (set -C && cat > " .. tmp .. ") && chmod 600 " .. tmp ..
      " && mv -f " .. tmp .. " " .. q(cred),
      {stdin = secret(text), timeout = 60, check = true})
    r.cred_file = cred
    r:say("connect", "secrets %s pushed over stdin to %s (per-instance, mode 600; never on the shared FS)",
      table.concat(names, ", "), cred)
  end
  return h
end

return setmetatable(connect, {__call = function(_, ...) return connect.run(...) end})
