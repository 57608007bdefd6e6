-- Phase 5a, close (LIFECYCLE.md): seal the run's capsule. The exact capsule files
-- (the roster: run.json plus paths under the run's out dir) are copied into
-- export/.partial/<run-id>, validated (present, non-empty, same SHA-256 as their
-- source, no scratch/caches/temp files), then renamed atomically to
-- export/<run-id> - a rename on one filesystem (the audit checked it). On any
-- failure the partial capsule moves to quarantine/<run-id>--<attempt> with a
-- REASON file. A sealed export is never overwritten. It runs under the run's
-- finish lock (gpurent.run_lock): a second finisher's close would rebuild the
-- partial capsule under this one's hashing.
--
--   needs {run, inst} -> produces {export = {export, files = {{path, bytes, sha256}}, already}}
--   opts.roster: capsule paths (gpurent.lifecycle.capsule: the rules and the default);
--                run.json comes from active/<run-id>/, everything else from
--                active/<run-id>/out/
--   close.seal(inst, r, opts) -> the same table, under the finish lock, outside a lifecycle
local storage = require "gpurent.lifecycle.storage"
local run_lock = require "gpurent.lifecycle.run_lock"
local capsule = require "gpurent.lifecycle.capsule"

local close = {name = "close", needs = {"run", "inst"}, produces = {"export"}, finishes = true,
  report = function(ctx) return "sealed export " .. ctx.export.export end}
local q = storage.q

close.DEFAULT_ROSTER = capsule.DEFAULT_ROSTER
close.check_roster = capsule.check_roster

local SCRIPT = [=[
A=@ACTIVE@; OUT=@OUT@; P=@PARTIAL@; E=@EXPORT@; Q=@QUAR@; ID=@ID@
hash() { sha256sum < "$1" | cut -d' ' -f1; }
if [ -e "$E" ]; then
  echo "already $E"
  for f in @FILES@; do if [ -f "$E/$f" ]; then echo "file $(wc -c < "$E/$f") $(hash "$E/$f") $f"; else echo "bad missing from the sealed export: $f"; fi; done
  exit 0
fi
rm -rf "$P" && mkdir -p "$P" || { echo "bad cannot create $P"; exit 1; }
src_of() { if [ "$1" = run.json ]; then echo "$A/run.json"; else echo "$OUT/$1"; fi; }
for f in @FILES@; do
  s=$(src_of "$f")
  if [ ! -f "$s" ]; then echo "bad missing: $f (expected at $s)"; continue; fi
  if [ ! -s "$s" ]; then echo "bad empty: $f"; continue; fi
  mkdir -p "$P/$(dirname "$f")" && cp -p "$s" "$P/$f.tmp" && mv -f "$P/$f.tmp" "$P/$f" || { echo "bad copy failed: $f"; continue; }
  hs=$(hash "$s"); hp=$(hash "$P/$f")
  if [ "$hs" != "$hp" ]; then echo "bad sha256 differs after the copy: $f"; continue; fi
  echo "file $(wc -c < "$P/$f") $hp $f"
done
extra=$(cd "$P" && find . -type f \( -name '*.tmp' -o -name '*.part' @SCRATCH_FIND@ \) | head -n 5)
[ -n "$extra" ] && echo "bad not allowed in an export: $extra"
true
]=]

local FINISH_OK = [=[
P=@PARTIAL@; E=@EXPORT@
sync
[ -e "$E" ] && { echo "bad $E appeared meanwhile: not overwritten"; exit 1; }
mv -T -n "$P" "$E" && [ -d "$E" ] && [ ! -e "$P" ] && echo "sealed $E" || { echo "bad rename failed"; exit 1; }
]=]

local FINISH_BAD = [=[
P=@PARTIAL@; Q=@QUAR@; ID=@ID@
mkdir -p "$Q"
n=1; while [ -e "$Q/$ID--$n" ] && [ $n -lt 1000 ]; do n=$((n + 1)); done
mv -T "$P" "$Q/$ID--$n" && cat > "$Q/$ID--$n/REASON" && echo "quarantined $Q/$ID--$n"
]=]

local function fill(t, subs) return (t:gsub("@([%u_]+)@", function(k) return subs[k] end)) end

local function seal(inst, r, o)
  o = o or {}
  local roster = capsule.check_roster(r, o.roster or capsule.DEFAULT_ROSTER)
  local P = r.paths
  local files = {}
  for _, f in ipairs(roster) do files[#files + 1] = q(f) end
  local sf = {}
  for _, s in ipairs(r.profile.checkpoints.scratch or {}) do sf[#sf + 1] = "-o -name " .. q(s) end
  local subs = {ACTIVE = q(P.active), OUT = q(P.out), PARTIAL = q(P.partial), EXPORT = q(P.export),
    QUAR = q(P.quarantine), ID = q(r.id), FILES = table.concat(files, " "), SCRATCH_FIND = table.concat(sf, " ")}
  local res = inst:sh(fill(SCRIPT, subs), {timeout = 600})
  local got, bad = {}, {}
  for line in res.stdout:gmatch("[^\n]+") do
    local bytes, hex, path = line:match("^file (%d+) (%x+) (.+)$")
    if bytes then got[#got + 1] = {path = path, bytes = tonumber(bytes), sha256 = hex} end
    local why = line:match("^bad (.+)$")
    if why then bad[#bad + 1] = why end
  end
  if res.code ~= 0 and #bad == 0 then bad[#bad + 1] = "close script exited " .. tostring(res.code) .. ": " .. (res.stderr or "") end
  local already = res.stdout:match("^already ") ~= nil
  if already then
    if #bad > 0 then
      error("close: the sealed export " .. P.export .. " exists but does not hold the roster: " .. table.concat(bad, "; ") ..
        " (a sealed export is never overwritten)", 0)
    end
    r:say("close", "export %s is already sealed with the %d roster files: not rewritten", P.export, #got)
    return {export = P.export, files = got, already = true}
  end
  if #bad == 0 then
    local fin = inst:sh(fill(FINISH_OK, subs), {timeout = 120})
    if fin.stdout:match("sealed ") then
      local lines = {string.format("sealed %s (renamed from export/.partial on one filesystem):", P.export)}
      for _, f in ipairs(got) do lines[#lines + 1] = string.format("  %10d  %s  %s", f.bytes, f.sha256:sub(1, 16), f.path) end
      r:say("close", table.concat(lines, "\n"))
      return {export = P.export, files = got}
    end
    bad[#bad + 1] = (fin.stdout:match("bad ([^\n]+)") or "rename failed") .. " " .. (fin.stderr or "")
  end
  local reason = table.concat(bad, "\n") .. "\n"
  local qres = inst:sh(fill(FINISH_BAD, subs), {stdin = reason, timeout = 120})
  local where = qres.stdout:match("quarantined ([^\n]+)") or "(quarantine failed: " .. (qres.stderr or "") .. ")"
  error(string.format("close: the capsule of %s failed validation; moved to %s:\n  %s", r.id, where,
    table.concat(bad, "\n  ")), 0)
end

function close.seal(inst, r, o) return run_lock.hold(r, inst, seal, inst, r, o) end

function close.run(ctx, o)
  return {export = close.seal(require("gpurent.lifecycle").session(ctx), ctx.run, o)}
end

return setmetatable(close, {__call = function(_, ...) return close.run(...) end})
