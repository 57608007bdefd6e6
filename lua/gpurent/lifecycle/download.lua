-- gpurent.lifecycle.download: the download retry loop recipes call for datasets and
-- models on the box (seed AD1/AD2: behind a slow or flaky link a stall is not a
-- failure): each attempt under `timeout`, the partial file resumed, retried with a
-- doubling pause; a Hugging Face repo through the profile's mirror (HF_ENDPOINT) with
-- HF_HUB_DISABLE_XET set. Run it through the proxy-hooked session (ctx.box, the
-- environment phase's) so the profile's proxy hook is sourced first. On-box steps:
-- lua/gpurent/remote/download_retry.sh.
--
--   download.fetch(session, profile, {url= | hf=, dest=, tries=5, timeout=600,
--                  backoff=5, python=}) -> {attempts =, bytes =, dest =, failures = {lines}}
--     url: a file URL, dest the file on the box; hf: a repo id, dest a directory.
--     Raises (kind remote) naming every attempt when all of them failed.
--   download.wandb_sync(session, profile, {dir=, tries=3, timeout=120, backoff=5, depth=4,
--                       cred_file=, wandb="wandb", max_seconds=3600}) -> {runs = {{dir=, status=, attempts=,
--                       failures = {lines}}...}, synced = n, failed = n, skipped = n}
--     `wandb sync` recovery for offline runs (seed AD1): every wandb/offline-run-* dir
--     under `dir` on the box, each sync under `timeout`, retried with a doubling pause,
--     through the profile's proxy hook (sourced here when the session is not the
--     environment phase's hooked one); a synced run is marked (download.WANDB_MARK in
--     it), so a second call syncs only what is left. status: ok | failed | skipped.
--     A run that failed every try is reported, not raised: the others still sync.
local errors = require "gpurent.util.errors"
local remote = require "gpurent.remote"

local download = {}

local function positive(v, name, default)
  if v == nil then return default end
  if type(v) ~= "number" or v < 0 or v ~= v then errors.usage("download: " .. name .. " must be a number >= 0, got " .. tostring(v), 0) end
  return v
end

function download.fetch(session, profile, o)
  o = o or {}
  if (o.url == nil) == (o.hf == nil) then errors.usage("download: give exactly one of url= (a file) or hf= (a repo id)", 0) end
  if type(o.dest) ~= "string" or not o.dest:match("^/") then
    errors.usage("download: dest must be an absolute path on the box, got " .. tostring(o.dest), 0)
  end
  local tries = math.tointeger(positive(o.tries, "tries", 5))
  if not tries or tries < 1 then errors.usage("download: tries must be a whole number >= 1", 0) end
  local net = profile.network or {}
  local mirror = profile.facts and profile.facts.china_mirror_needed
  local res = session:sh(remote.script("download_retry", {KIND = o.hf and "hf" or "url", SRC = o.hf or o.url,
    DEST = o.dest, TRIES = tries, TIMEOUT = math.ceil(positive(o.timeout, "timeout", 600)),
    BACKOFF = math.ceil(positive(o.backoff, "backoff", 5)),
    PY = o.python or (profile.env and profile.env.python) or "python3",
    HF_ENDPOINT = mirror and net.hf_endpoint or "", HF_XET_OFF = mirror and net.hf_hub_disable_xet and "1" or ""}),
    {timeout = tries * (math.ceil(positive(o.timeout, "timeout", 600)) + 60) + 2 ^ math.min(tries, 12) * (o.backoff or 5)})
  local failures = {}
  for line in res.stdout:gmatch("[^\n]+") do
    if line:match("^attempt ") then failures[#failures + 1] = line end
  end
  local n, bytes = res.stdout:match("\nok (%d+) (%d+)")
  if not n then n, bytes = res.stdout:match("^ok (%d+) (%d+)") end
  if not n then
    errors.raise("remote", string.format("download of %s to %s failed after %d attempt(s):\n  %s%s", o.hf or o.url,
      o.dest, tries, table.concat(failures, "\n  "), res.stderr ~= "" and ("\n  " .. res.stderr:gsub("%s+$", "")) or ""), 0)
  end
  return {attempts = tonumber(n), bytes = tonumber(bytes), dest = o.dest, failures = failures}
end

download.WANDB_MARK = ".gpurent-wandb-synced"

function download.wandb_sync(session, profile, o)
  o = o or {}
  if type(o.dir) ~= "string" or not o.dir:match("^/") then
    errors.usage("wandb_sync: dir must be an absolute path on the box (a run dir), got " .. tostring(o.dir), 0)
  end
  local tries = math.tointeger(positive(o.tries, "tries", 3))
  if not tries or tries < 1 then errors.usage("wandb_sync: tries must be a whole number >= 1", 0) end
  local timeout = math.ceil(positive(o.timeout, "timeout", 120))
  local backoff = math.ceil(positive(o.backoff, "backoff", 5))
  local depth = math.tointeger(positive(o.depth, "depth", 4))
  if not depth or depth < 1 then errors.usage("wandb_sync: depth must be a whole number >= 1", 0) end
  local cmd = remote.script("wandb_sync", {DIR = o.dir, DEPTH = depth, TRIES = tries, TIMEOUT = timeout,
    BACKOFF = backoff, WANDB = o.wandb or "wandb", CRED = o.cred_file or "", MARK = download.WANDB_MARK})
  -- the cloud is reachable only through the profile's proxy (seed AD1): its hook first,
  -- unless the session already sources it before every command
  local hook = profile.network and profile.network.proxy_hook
  if hook and hook ~= "" and not rawget(session, "hook") then cmd = hook .. "\n" .. cmd end
  -- the whole call is bounded too (runs x tries x timeout can be long: max_seconds)
  local res = session:sh(cmd, {timeout = positive(o.max_seconds, "max_seconds", 3600)})
  local out = {runs = {}, synced = 0, failed = 0, skipped = 0}
  local by_dir = {}
  local function entry(dir)
    if not by_dir[dir] then
      by_dir[dir] = {dir = dir, failures = {}}
      out.runs[#out.runs + 1] = by_dir[dir]
    end
    return by_dir[dir]
  end
  for line in res.stdout:gmatch("[^\n]+") do
    local kind, dir, rest = line:match("^(%a+) (/%S+) ?(.*)$")
    if kind == "skip" then
      entry(dir).status = "skipped"; out.skipped = out.skipped + 1
    elseif kind == "attempt" then
      local e = entry(dir)
      e.failures[#e.failures + 1] = "attempt " .. rest
    elseif kind == "ok" then
      local e = entry(dir)
      e.status, e.attempts = "ok", tonumber(rest); out.synced = out.synced + 1
    elseif kind == "failed" then
      local e = entry(dir)
      e.status, e.attempts = "failed", tonumber(rest); out.failed = out.failed + 1
    elseif kind == "nodir" or kind == "nocred" then
      errors.raise("remote", string.format("wandb_sync: %s on the box: %s", kind == "nodir" and "no directory" or
        "cannot read the key file", dir), 0)
    end
  end
  if res.code ~= 0 and out.failed == 0 then
    errors.raise("remote", string.format("wandb_sync of %s: exit %s: %s%s", o.dir, tostring(res.code), res.stdout,
      res.stderr or ""), 0)
  end
  return out
end

return download
