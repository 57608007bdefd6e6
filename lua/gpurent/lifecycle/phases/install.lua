-- Phase install (between prepare and launch; seed AD9): the project's requirements
-- installed into the image's interpreter without replacing its framework build. The
-- requirements file is pushed first (SHA-256 checked), so the pins probe
-- (gpurent.gotchas, the profile's AD9-style entry when it has one) reads the file that
-- will be installed; then the install keeps every line but the ones whose package
-- matches the profile's env.install_filter globs (default env.framework_pins), pip
-- installs the rest, and the framework's version is compared before and after: a
-- changed build fails the phase before anything is launched.
--
--   needs {run, inst, code} (uses python when given) -> produces {installed =
--         {skipped = bool, requirements =, filtered = {lines}, kept =, torch_before =, torch_after =}}
--   opts: requirements (a path relative to the code dir; "requirements.txt"; skipped
--         when the code holds no such file, unless opts.requirements names it: then
--         it is a usage error), probe (true: run the pins probe on the pushed file)
--   install.filter(profile) -> the globs a line's package is dropped by
local errors = require "gpurent.util.errors"
local remote = require "gpurent.remote"

local install = {name = "install", needs = {"run", "inst", "code"}, produces = {"installed"}}

function install.filter(profile)
  local env = profile.env or {}
  return env.install_filter or env.framework_pins or {}
end

-- The profile's pins probe on the pushed requirements: its verdict, said; n/a when
-- the profile has no such probe.
local function probe(inst, r, code_dir)
  local ok, gotchas = pcall(require, "gpurent.gotchas")
  if not ok then return end
  local id
  for _, e in ipairs(gotchas.for_profile(r.profile)) do
    if e.title and e.title:find("requirements pin", 1, true) then id = e.id end
  end
  if not id then return end
  local rok, results = pcall(gotchas.run, inst, {profile = r.profile, only = {id}, code_dir = code_dir, timeout = 120})
  if not rok then r:say("install", "pins probe could not run: %s", tostring(results)); return end
  local x = results[1]
  r:say("install", "pins probe %s on the pushed requirements: %s: %s", x.id, x.status, x.evidence)
  return x
end

function install.run(ctx, o)
  o = o or {}
  local inst, r = require("gpurent.lifecycle").session(ctx), ctx.run
  local req = o.requirements or "requirements.txt"
  local have = false
  for _, f in ipairs(ctx.code.files or {}) do if f.path == req then have = true end end
  if not have then
    if o.requirements then
      errors.usage("install: requirements " .. req .. " is not a file of the code dir " .. tostring(ctx.code.dir), 0)
    end
    r:say("install", "no %s in the code: nothing to install (the image's environment is used as it is)", req)
    return {installed = {skipped = true}}
  end
  local dir = (r.paths.code .. "/" .. req):match("^(.*)/[^/]*$")
  inst:sh("mkdir -p " .. require("gpurent.util.shell").quote(dir), {timeout = 60, check = true, idempotent = true})
  r:retrying(inst, "install", "put " .. req, function()
    return inst:put(ctx.code.dir .. "/" .. req, r.paths.code .. "/" .. req, {verify = true, progress = false, stall_timeout = 30})
  end)
  if o.probe ~= false then probe(inst, r, r.paths.code) end
  local globs = install.filter(r.profile)
  local python = ctx.python or (r.profile.env and r.profile.env.python) or "python3"
  local out_file = r.paths.meta .. "/requirements.remote.txt"
  local res = inst:sh(remote.script("install_reqs", {CODE = r.paths.code, REQ = req,
    FILTER = remote.lines(globs, "install: filter"), PY = python, OUT = out_file}), {timeout = o.timeout or 3600})
  local got = {filtered = {}, requirements = req, file = out_file}
  local pip_lines = {}
  for line in res.stdout:gmatch("[^\n]+") do
    local k, v = line:match("^(%S+) ?(.*)$")
    if k == "torch_before" then got.torch_before = v
    elseif k == "torch_after" then got.torch_after = v
    elseif k == "filtered" then got.filtered[#got.filtered + 1] = v
    elseif k == "kept" then got.kept = tonumber(v)
    elseif k == "pip_exit" then got.pip_exit = tonumber(v)
    elseif k == "pip|" then pip_lines[#pip_lines + 1] = v end
  end
  if not got.torch_after then
    error(string.format("install: the install script on %s gave no result (exit %s): %s", r.host, tostring(res.code),
      (res.stderr or ""):match("[^\n]*")), 0)
  end
  r:say("install", "filtered out of %s (%s; the image's build is kept): %s", req, table.concat(globs, ", "),
    #got.filtered > 0 and table.concat(got.filtered, "; ") or "none")
  if (got.kept or 0) == 0 then
    r:say("install", "nothing else to install: pip not run")
  elseif got.pip_exit ~= 0 then
    error(string.format("install: pip install -r %s exited %s on %s:\n  %s", out_file, tostring(got.pip_exit), r.host,
      table.concat(pip_lines, "\n  ")), 0)
  else
    r:say("install", "pip installed %d requirement line(s) from %s", got.kept, out_file)
  end
  if got.torch_before ~= got.torch_after then
    error(string.format("install: the install changed the image's torch from %s to %s on %s (a dependency pulled it " ..
      "in): pin that dependency or add it to env.install_filter; nothing was launched", got.torch_before, got.torch_after,
      r.host), 0)
  end
  r:say("install", "torch %s before and after (the image's build)", got.torch_after)
  return {installed = got}
end

return setmetatable(install, {__call = function(_, ...) return install.run(...) end})
