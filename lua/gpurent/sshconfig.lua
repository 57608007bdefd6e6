-- gpurent.sshconfig: what `ssh <target>` would use for a target, from ssh_config
-- files, with OpenSSH's rules: the first value obtained for a keyword wins
-- (IdentityFile accumulates), Host patterns with * ? and !negation, Include
-- (globs; relative paths from ~/.ssh or /etc/ssh), Key=Value and quoted values.
-- Match blocks are skipped except `Match all` (gpurent does not run Match exec).
--
--   sshconfig.resolve(target [, {config=path}]) -> cfg
-- target: an alias, host, user@host, host:port, user@host:port or ssh://user@host:port.
-- cfg: {alias, hostname, port, user, identityfiles={...}, identitiesonly,
--       serveraliveinterval, serveralivecountmax, connecttimeout,
--       knownhostsfiles={...}, stricthostkeychecking, files={read files}}
-- GPURENT_SSH_CONFIG names the user config file (like ssh -F: no system file then).
local lfs = require "lfs"

local sshconfig = {}

local function home()
  return os.getenv("HOME") or "/"
end

local function expand_tilde(p)
  if p:sub(1, 2) == "~/" or p == "~" then return home() .. p:sub(2) end
  return p
end

-- A glob (* ?) as an anchored Lua pattern.
local function glob_to_pattern(g)
  return "^" .. g:gsub("[%^%$%(%)%%%.%[%]%+%-]", "%%%0"):gsub("%*", ".*"):gsub("%?", ".") .. "$"
end
sshconfig.glob_to_pattern = glob_to_pattern

-- Does the whole of s match glob g (* any run, ? any one byte)? Iterative, with a
-- single backtrack point (the last *), so O(#g * #s) at worst: a Lua pattern of many
-- ".*" backtracks exponentially, and known_hosts / ssh_config text is input
-- (fuzz/regressions/knownhosts: ~100 '*' in a host field hung the lookup).
local function glob_match(g, s)
  local gi, si, star, mark = 1, 1, nil, 0
  local gn, sn = #g, #s
  while si <= sn do
    local c = g:sub(gi, gi)
    if gi <= gn and (c == "?" or (c ~= "*" and c == s:sub(si, si))) then
      gi, si = gi + 1, si + 1
    elseif gi <= gn and c == "*" then
      star, mark, gi = gi, si, gi + 1
    elseif star then
      mark = mark + 1
      gi, si = star + 1, mark
    else
      return false
    end
  end
  while gi <= gn and g:sub(gi, gi) == "*" do gi = gi + 1 end
  return gi > gn
end
sshconfig.glob_match = glob_match

-- Host line semantics: any positive pattern matches and no negated one does.
function sshconfig.host_matches(patterns, host)
  local matched = false
  for _, p in ipairs(patterns) do
    local neg = p:sub(1, 1) == "!"
    if neg then p = p:sub(2) end
    if glob_match(p:lower(), host:lower()) then
      if neg then return false end
      matched = true
    end
  end
  return matched
end

-- Split a config line into words, honouring double quotes; "Key=Value" too.
local function words(line)
  local out, i, n = {}, 1, #line
  local first = line:match("^%s*([^%s=]+)%s*=%s*")
  if first then
    out[1] = first
    i = #line:match("^%s*[^%s=]+%s*=%s*") + 1
  end
  while i <= n do
    local s = line:find("%S", i)
    if not s then break end
    if line:sub(s, s) == "#" then break end
    if line:sub(s, s) == '"' then
      local e = line:find('"', s + 1, true)
      if not e then error("unterminated quote", 0) end
      out[#out + 1] = line:sub(s + 1, e - 1)
      i = e + 1
    else
      local e = (line:find("%s", s) or n + 1) - 1
      out[#out + 1] = line:sub(s, e)
      i = e + 1
    end
  end
  return out
end

local function glob_files(pattern)
  local dir, base = pattern:match("^(.*)/([^/]*)$")
  if not dir then return {pattern} end
  if not base:find("[%*%?]") then return {pattern} end
  local out = {}
  if lfs.attributes(dir, "mode") ~= "directory" then return out end
  for f in lfs.dir(dir) do
    if f ~= "." and f ~= ".." and glob_match(base, f) then out[#out + 1] = dir .. "/" .. f end
  end
  table.sort(out)
  return out
end

local multi = {identityfile = true, userknownhostsfile = true, globalknownhostsfile = true}

-- Read one file into cfg for host; active says whether the enclosing block applies.
local function read_file(path, host, cfg, reldir, depth, active_outer)
  if depth > 8 then error("ssh_config: Include nested too deeply at " .. path, 0) end
  local f = io.open(path, "r")
  if not f then return end
  cfg.files[#cfg.files + 1] = path
  local active = active_outer
  local lineno = 0
  for line in f:lines() do
    lineno = lineno + 1
    local ok, w = pcall(words, line)
    if not ok then f:close(); error(path .. ":" .. lineno .. ": " .. w, 0) end
    if #w > 0 then
      local key = w[1]:lower()
      if key == "host" then
        local pats = {table.unpack(w, 2)}
        active = active_outer and sshconfig.host_matches(pats, host)
      elseif key == "match" then
        active = active_outer and (w[2] or ""):lower() == "all"
      elseif key == "include" then
        if active then
          for i = 2, #w do
            local p = expand_tilde(w[i])
            if p:sub(1, 1) ~= "/" then p = reldir .. "/" .. p end
            for _, file in ipairs(glob_files(p)) do read_file(file, host, cfg, reldir, depth + 1, true) end
          end
        end
      elseif active and #w >= 2 then
        if multi[key] then
          local list = cfg[key] or {}
          cfg[key] = list
          if key == "identityfile" then list[#list + 1] = w[2]
          elseif not cfg["_" .. key] then
            cfg["_" .. key] = true
            for i = 2, #w do list[#list + 1] = w[i] end
          end
        elseif cfg[key] == nil then
          cfg[key] = w[2]
        end
      end
    end
  end
  f:close()
end

-- Parse a target into user, host, port (nil where absent).
function sshconfig.parse_target(target)
  if type(target) ~= "string" or target == "" then
    error("ssh target must be a non-empty string (an ssh_config alias or user@host:port)", 3)
  end
  local t = target:gsub("^ssh://", "")
  local user, rest = t:match("^([^@]+)@(.+)$")
  if not user then rest = t end
  local host, port = rest:match("^%[(.+)%]:(%d+)$")
  if not host then host, port = rest:match("^([^:]+):(%d+)$") end
  if not host then host = rest:match("^%[(.+)%]$") or rest end
  return user, host, port and tonumber(port)
end

local function expand_tokens(s, cfg)
  s = expand_tilde(s)
  return (s:gsub("%%(.)", function(c)
    if c == "%" then return "%"
    elseif c == "h" then return cfg.hostname
    elseif c == "p" then return tostring(cfg.port)
    elseif c == "r" then return cfg.user
    elseif c == "n" then return cfg.alias
    elseif c == "d" then return home()
    elseif c == "u" then return os.getenv("USER") or "root"
    end
    return "%" .. c
  end))
end

local function yes(v) return v and (v:lower() == "yes" or v:lower() == "true") end

function sshconfig.resolve(target, opts)
  opts = opts or {}
  local tuser, thost, tport = sshconfig.parse_target(target)
  local raw = {files = {}}
  local user_file = opts.config or os.getenv("GPURENT_SSH_CONFIG")
  if user_file == "" then user_file = nil end -- set but empty means unset, as for ssh -F ""
  if user_file then
    read_file(expand_tilde(user_file), thost, raw, home() .. "/.ssh", 0, true)
  else
    read_file(home() .. "/.ssh/config", thost, raw, home() .. "/.ssh", 0, true)
    read_file("/etc/ssh/ssh_config", thost, raw, "/etc/ssh", 0, true)
  end
  local cfg = {
    alias = thost,
    target = target,
    hostname = raw.hostname and raw.hostname:gsub("%%h", thost) or thost,
    port = tport or tonumber(raw.port or "22"),
    user = tuser or raw.user or os.getenv("USER") or "root",
    identitiesonly = yes(raw.identitiesonly),
    serveraliveinterval = tonumber(raw.serveraliveinterval or "0"),
    serveralivecountmax = tonumber(raw.serveralivecountmax or "3"),
    connecttimeout = raw.connecttimeout and tonumber(raw.connecttimeout) or nil,
    stricthostkeychecking = (raw.stricthostkeychecking or "ask"):lower(),
    ciphers = raw.ciphers, macs = raw.macs,
    files = raw.files,
  }
  if not cfg.port then error("ssh_config: bad Port for " .. thost, 2) end
  local ids = {}
  for _, p in ipairs(raw.identityfile or {}) do ids[#ids + 1] = expand_tokens(p, cfg) end
  cfg.identityfiles_explicit = #ids > 0
  if #ids == 0 then
    for _, n in ipairs({"id_ed25519", "id_ecdsa", "id_rsa"}) do ids[#ids + 1] = home() .. "/.ssh/" .. n end
  end
  cfg.identityfiles = ids
  local kh = {}
  for _, p in ipairs(raw.userknownhostsfile or {home() .. "/.ssh/known_hosts", home() .. "/.ssh/known_hosts2"}) do
    if p:lower() ~= "none" then kh[#kh + 1] = expand_tokens(p, cfg) end
  end
  cfg.knownhostsfiles = kh
  cfg.globalknownhostsfiles = {}
  for _, p in ipairs(raw.globalknownhostsfile or {"/etc/ssh/ssh_known_hosts", "/etc/ssh/ssh_known_hosts2"}) do
    if p:lower() ~= "none" then cfg.globalknownhostsfiles[#cfg.globalknownhostsfiles + 1] = expand_tokens(p, cfg) end
  end
  return cfg
end

return sshconfig
