-- gpurent.knownhosts: OpenSSH known_hosts lookups with file:line answers.
-- Entries: "[marker] patterns keytype base64 [comment]"; patterns are
-- comma-separated globs with !negation, "[host]:port" for non-22 ports, or
-- hashed "|1|salt|hmac". Lookups use the name OpenSSH would: host, or
-- [host]:port when port ~= 22.
--
--   knownhosts.lookup(files, host, port, keytype, blob) ->
--     {status="ok", file=, line=} | {status="changed", file=, line=, keytype=, blob=}
--     | {status="revoked", file=, line=} | {status="unknown", types={...}}
--   knownhosts.types(files, host, port) -> list of key types recorded for the host
--   knownhosts.add(file, host, port, keytype, blob [, {hash = true}])
--     hash: write the name as OpenSSH's HashKnownHosts does, |1|salt|HMAC-SHA1(salt, name)
local kh = require("gpurent.core").knownhosts
local sshconfig = require "gpurent.transport.sshconfig"

local knownhosts = {fingerprint = kh.fingerprint}

function knownhosts.name(host, port)
  if not port or port == 22 then return host end
  return "[" .. host .. "]:" .. port
end

local function pattern_matches(p, name)
  if p:sub(1, 3) == "|1|" then
    local salt, hash = p:match("^|1|([^|]+)|([^|]+)$")
    local rs, rh = salt and kh.b64decode(salt), hash and kh.b64decode(hash)
    return rs ~= nil and rh ~= nil and kh.hmac_sha1(rs, name) == rh
  end
  return sshconfig.glob_match(p:lower(), name:lower())
end

-- A hosts field matches when some pattern does and no negated one does.
local function hosts_match(field, name)
  local matched = false
  for p in field:gmatch("[^,]+") do
    local neg = p:sub(1, 1) == "!"
    if neg then p = p:sub(2) end
    if pattern_matches(p, name) then
      if neg then return false end
      matched = true
    end
  end
  return matched
end

-- Iterate the entries of files that match name: fn(entry) may return a value to stop.
local function each_entry(files, name, fn)
  for _, file in ipairs(files) do
    local f = io.open(file, "r")
    if f then
      local lineno = 0
      for line in f:lines() do
        lineno = lineno + 1
        local l = line:gsub("^%s+", "")
        if l ~= "" and l:sub(1, 1) ~= "#" then
          local marker
          if l:sub(1, 1) == "@" then marker, l = l:match("^(@%S+)%s+(.*)$") end
          local hosts, ktype, b64 = (l or ""):match("^(%S+)%s+(%S+)%s+(%S+)")
          if hosts and hosts_match(hosts, name) then
            local r = fn({file = file, line = lineno, marker = marker, keytype = ktype,
                          blob = kh.b64decode(b64)})
            if r then f:close(); return r end
          end
        end
      end
      f:close()
    end
  end
end

function knownhosts.types(files, host, port)
  local seen, out = {}, {}
  each_entry(files, knownhosts.name(host, port), function(e)
    if not e.marker and not seen[e.keytype] then seen[e.keytype] = true; out[#out + 1] = e.keytype end
  end)
  return out
end

function knownhosts.lookup(files, host, port, keytype, blob)
  local name = knownhosts.name(host, port)
  local revoked = each_entry(files, name, function(e)
    if e.marker == "@revoked" and e.blob == blob then return {status = "revoked", file = e.file, line = e.line} end
  end)
  if revoked then return revoked end
  local changed
  local ok = each_entry(files, name, function(e)
    if e.marker then return nil end
    if e.keytype == keytype and e.blob == blob then return {status = "ok", file = e.file, line = e.line} end
    if e.keytype == keytype and not changed then
      changed = {status = "changed", file = e.file, line = e.line, keytype = e.keytype, blob = e.blob}
    end
  end)
  if ok then return ok end
  if changed then return changed end
  return {status = "unknown", types = knownhosts.types(files, host, port)}
end

-- The name field of a new entry: plain, or hashed with a fresh 20-byte salt (as ssh).
local function entry_name(host, port, hash)
  local name = knownhosts.name(host, port)
  if not hash then return name end
  local salt = kh.random(20)
  return "|1|" .. kh.b64encode(salt) .. "|" .. kh.b64encode(kh.hmac_sha1(salt, name))
end
knownhosts.entry_name = entry_name

-- Append an entry (creating the file and its directory).
function knownhosts.add(file, host, port, keytype, blob, opts)
  local dir = file:match("^(.*)/[^/]*$")
  if dir and dir ~= "" then
    require("gpurent.util.fs").mkdirs(dir)
  end
  local f, err = io.open(file, "a")
  if not f then error("cannot record host key in " .. file .. ": " .. tostring(err), 0) end
  f:write(entry_name(host, port, opts and opts.hash), " ", keytype, " ", kh.b64encode(blob), "\n")
  f:close()
end

return knownhosts
