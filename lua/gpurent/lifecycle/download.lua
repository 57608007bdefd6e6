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

return download
