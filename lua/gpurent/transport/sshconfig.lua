-- gpurent.sshconfig: the effective ssh_config of a target, exactly as OpenSSH's own
-- client computes it. We ask `ssh -G` (openssh-client is a dependency) rather than
-- re-parse: it evaluates Host, Match (exec too), Include, CanonicalizeHostname,
-- +/-/^ algorithm lists and every default the way `ssh TARGET` will. One fork per
-- resolve; the compiled-in defaults (`ssh -G -F /dev/null`) are read once per process.
--
--   sshconfig.resolve(target [, {config=path}]) -> cfg
-- target: an alias, host, user@host, host:port, user@host:port or ssh://user@host:port.
-- cfg: {alias, target, hostname, port, user, identityfiles={...}, identityfiles_explicit,
--       identitiesonly, identityagent (nil: $SSH_AUTH_SOCK; "none"; or a socket path),
--       certificatefiles={...} (ECDSA certificates only: see cert_refusal), serveraliveinterval, serveralivecountmax, connecttimeout,
--       connectionattempts, addressfamily, knownhostsfiles={...}, globalknownhostsfiles,
--       stricthostkeychecking, hashknownhosts, hostkeyalias, batchmode,
--       pubkeyauthentication, passwordauthentication, proxyjump, proxycommand, compression,
--       ciphers/macs/kexalgorithms/hostkeyalgorithms (set only when not OpenSSH's default),
--       config (the -F file given, if any), files={the config files}}
-- GPURENT_SSH_CONFIG names the user config file (like ssh -F: no system file then).
--
-- Every keyword `ssh -G` prints is in exactly one class of KEYWORDS below: honoured,
-- refused when not at OpenSSH's default (it changes where or how the connection is
-- made and gpurent cannot do it: an error naming the keyword and its file:line), or
-- irrelevant to what gpurent does with a connection. A keyword this table does not
-- know (a newer OpenSSH) is refused when it is not at its default.
--
-- ~ is $HOME here (ssh takes it from the password database): the two differ only when
-- HOME is set elsewhere, as the tests do; then gpurent reads $HOME/.ssh/config, not
-- the password database's, and maps that home to $HOME in the paths ssh prints.
local lfs = require "lfs"

local sshconfig = {}

local function home()
  return os.getenv("HOME") or "/"
end

local function expand_tilde(p)
  if p:sub(1, 2) == "~/" or p == "~" then return home() .. p:sub(2) end
  return p
end

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

-- A glob (* ?) as an anchored Lua pattern.
function sshconfig.glob_to_pattern(g)
  return "^" .. g:gsub("[%^%$%(%)%%%.%[%]%+%-]", "%%%0"):gsub("%*", ".*"):gsub("%?", ".") .. "$"
end

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

-- ---- the keyword table ------------------------------------------------------

local HONOURED, REFUSED, IRRELEVANT = "honoured", "refused unless default", "irrelevant"
local KEYWORDS = {}
local function class(kind, list) for k in list:gmatch("%S+") do KEYWORDS[k] = kind end end
-- gpurent does what ssh does with these (ssh -G already applied the canonicalize* ones).
class(HONOURED, [[host hostname user port identityfile identitiesonly identityagent
  userknownhostsfile globalknownhostsfile stricthostkeychecking hashknownhosts hostkeyalias
  proxyjump proxycommand connecttimeout connectionattempts serveraliveinterval serveralivecountmax
  ciphers macs kexalgorithms hostkeyalgorithms pubkeyauthentication passwordauthentication
  batchmode addressfamily canonicalizehostname canonicaldomains canonicalizefallbacklocal
  canonicalizemaxdots canonicalizepermittedcnames certificatefile compression]])
-- Where or how to connect, and gpurent cannot do it: an error unless at the default.
class(REFUSED, [[bindaddress bindinterface checkhostip knownhostscommand revokedhostkeys
  nohostauthenticationforlocalhost verifyhostkeydns pkcs11provider securitykeyprovider
  proxyusefdpass pubkeyacceptedalgorithms requiredrsasize]])
-- Why, where the general reason is not enough.
local REASONS = {}
-- Session features gpurent never uses (it runs its own commands and transfers), logging,
-- display, and auth methods it never tries (gssapi, hostbased, keyboard-interactive: a
-- server that takes only those fails with the methods it offers in the message).
-- ControlMaster/Path/Persist: a fresh connection reaches the same host with the same
-- checks. UpdateHostKeys: gpurent never rotates known_hosts entries (as `no`).
-- ForwardAgent: never forwarded (docs/RELIABILITY.md, security_spec).
class(IRRELEVANT, [[addkeystoagent casignaturealgorithms clearallforwardings
  controlmaster controlpath controlpersist dynamicforward enableescapecommandline enablesshkeysign
  escapechar exitonforwardfailure fingerprinthash forkafterauthentication forwardagent forwardx11
  forwardx11timeout forwardx11trusted gatewayports gssapiauthentication gssapikeyexchange
  gssapidelegatecredentials gssapitrustdns gssapirenewalforcesrekey gssapikexalgorithms
  gssapiclientidentity gssapiserveridentity hostbasedauthentication hostbasedacceptedalgorithms
  ignoreunknown ipqos kbdinteractiveauthentication kbdinteractivedevices localcommand localforward
  loglevel logverbose numberofpasswordprompts permitlocalcommand permitremoteopen rekeylimit
  remotecommand remoteforward requesttty sendenv sessiontype setenv stdinnull streamlocalbindmask
  streamlocalbindunlink syslogfacility tcpkeepalive tunnel tunneldevice updatehostkeys
  visualhostkey xauthlocation]])
sshconfig.KEYWORDS = KEYWORDS

-- Keywords ssh -G may print on several lines (the others: one line, last one kept).
local MULTI = {identityfile = true, certificatefile = true, sendenv = true, setenv = true,
  localforward = true, remoteforward = true, dynamicforward = true, permitremoteopen = true,
  canonicaldomains = true, canonicalizepermittedcnames = true}

-- ---- running ssh -G ----------------------------------------------------------

local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

local function slurp(path)
  local f = io.open(path, "rb")
  if not f then return "" end
  local s = f:read("a")
  f:close()
  return s
end

-- Run `ssh -G ARGS`; returns {key = value | {values}} or raises with ssh's message
-- (ssh names the file and line of a bad option itself).
local function ssh_G(args, what)
  local errf = os.tmpname()
  local p = io.popen("ssh -G -T " .. args .. " </dev/null 2>" .. q(errf), "r")
  local out = p:read("a")
  local ok, how, code = p:close()
  local err = slurp(errf):gsub("%s+$", "")
  os.remove(errf)
  if not ok then
    error(string.format("ssh_config for %s: `ssh -G` failed (%s %s): %s", what, tostring(how), tostring(code),
      err ~= "" and err or "no message"), 0)
  end
  local t = {}
  for line in out:gmatch("[^\n]+") do
    local k, v = line:match("^(%S+)%s?(.*)$")
    if k then
      k = k:lower()
      if MULTI[k] then t[k] = t[k] or {}; table.insert(t[k], v) else t[k] = v end
    end
  end
  return t
end

local defaults_cache
-- OpenSSH's compiled-in defaults (no config file read), once per process.
local function defaults()
  if not defaults_cache then defaults_cache = ssh_G("-F /dev/null -- gpurent-defaults.invalid", "the defaults") end
  return defaults_cache
end

-- The password database's home, as ssh sees it (its default UserKnownHostsFile).
local function pw_home()
  local kh = defaults().userknownhostsfile or ""
  return kh:match("^(.-)/%.ssh/known_hosts") or home()
end

local wrapper_path
-- When $HOME is not the password database's home and no file was given: a -F file
-- that Includes $HOME/.ssh/config then the system file, as ssh would read them for a
-- user whose home is $HOME. Removed when the Lua state closes.
local function home_wrapper()
  if wrapper_path then return wrapper_path end
  local path = os.tmpname()   -- mkstemp: mode 0600, which ssh's permission check wants
  local f = assert(io.open(path, "w"))
  f:write('# gpurent: ssh -G for HOME=', home(), '\nInclude "', home(), '/.ssh/config"\nInclude /etc/ssh/ssh_config\n')
  f:close()
  wrapper_path = path
  sshconfig._wrapper_sentinel = setmetatable({}, {__gc = function() os.remove(path) end})
  return path
end

-- The -F file for ssh (nil: ssh's own ~/.ssh/config and /etc/ssh/ssh_config).
local function config_file(opts)
  local f = opts.config or os.getenv("GPURENT_SSH_CONFIG")
  if f == "" then f = nil end   -- set but empty means unset, as for ssh -F ""
  if f then return expand_tilde(f), f end
  if home() ~= pw_home() and pw_home() ~= "/" then return home_wrapper(), nil end
  return nil, nil
end

-- ---- locating a keyword in the files (ssh -G does not say where) ---------------

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
    if not s or line:sub(s, s) == "#" then break end
    if line:sub(s, s) == '"' then
      local e = line:find('"', s + 1, true) or n + 1
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
  if not dir or not base:find("[%*%?]") then return {pattern} end
  local out = {}
  if lfs.attributes(dir, "mode") ~= "directory" then return out end
  for f in lfs.dir(dir) do
    if f ~= "." and f ~= ".." and glob_match(base, f) then out[#out + 1] = dir .. "/" .. f end
  end
  table.sort(out)
  return out
end

-- Every file:line that sets keyword, in reading order (Includes followed, bounded).
local function locate(files, keyword, reldir, out, depth)
  out = out or {}
  for _, path in ipairs(files) do
    local f = depth < 16 and io.open(path, "r")
    if f then
      local lineno = 0
      for line in f:lines() do
        lineno = lineno + 1
        local w = words(line)
        local key = w[1] and w[1]:lower()
        if key == keyword then
          out[#out + 1] = path .. ":" .. lineno
        elseif key == "include" then
          for i = 2, #w do
            local p = expand_tilde(w[i])
            if p:sub(1, 1) ~= "/" then p = reldir .. "/" .. p end
            locate(glob_files(p), keyword, reldir, out, depth + 1)
          end
        end
      end
      f:close()
    end
  end
  return out
end

-- The config files ssh reads for these options (for locate and cfg.files).
local function read_files(file)
  if file then return {file}, home() .. "/.ssh" end
  return {home() .. "/.ssh/config", "/etc/ssh/ssh_config"}, home() .. "/.ssh"
end

function sshconfig.locate(keyword, opts)
  local file = config_file(opts or {})
  local files, reldir = read_files(file)
  return locate(files, keyword:lower(), reldir, {}, 0)
end

-- ---- the effective configuration ------------------------------------------------

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

local function read_first_line(path)
  return (require("gpurent.util.fs").read_if_exists(path) or ""):match("^[^\n]+")
end

-- %-tokens and ${ENV} of IdentityFile / CertificateFile / IdentityAgent (ssh_config(5) TOKENS).
local function expand_tokens(s, cfg, keyword)
  s = expand_tilde(s)
  s = s:gsub("%${([%w_]+)}", function(v)
    local val = os.getenv(v)
    if not val then error(string.format("ssh_config: %s %s: environment variable %s is not set", keyword, s, v), 0) end
    return val
  end)
  local localhost = read_first_line("/proc/sys/kernel/hostname") or "localhost"
  return (s:gsub("%%(.)", function(c)
    if c == "%" then return "%"
    elseif c == "h" then return cfg.hostname
    elseif c == "p" then return tostring(cfg.port)
    elseif c == "r" then return cfg.user
    elseif c == "n" then return cfg.alias
    elseif c == "k" then return cfg.hostkeyalias or cfg.alias
    elseif c == "d" then return home()
    elseif c == "u" then return os.getenv("USER") or os.getenv("LOGNAME") or "root"
    elseif c == "l" then return localhost
    elseif c == "L" then return (localhost:match("^[^.]*"))
    elseif c == "i" then return (slurp("/proc/self/status"):match("\nUid:%s*(%d+)") or "0")
    end
    error(string.format("ssh_config: %s %s: gpurent does not expand the token %%%s", keyword, s, c), 0)
  end))
end

-- ssh prints ~ expanded from the password database; gpurent's ~ is $HOME.
local function rehome(p)
  local pw = pw_home()
  if pw == home() or pw == "/" then return p end
  if p == pw then return home() end
  if p:sub(1, #pw + 1) == pw .. "/" then return home() .. p:sub(#pw + 1) end
  return p
end

local function yes(v) return v ~= nil and (v == "yes" or v == "true") end
-- ssh -G prints StrictHostKeyChecking yes/no as true/false
local STRICT = {["true"] = "yes", yes = "yes", ["false"] = "no", no = "no", off = "no", ask = "ask",
  ["accept-new"] = "accept-new"}

local function same(a, b)
  if type(a) == "table" then a = table.concat(a, "\n") end
  if type(b) == "table" then b = table.concat(b, "\n") end
  return a == b
end

-- OpenSSH user certificates (CertificateFile, and KEY-cert.pub next to an IdentityFile).
-- libssh2 1.10 builds the publickey request itself: the algorithm name is the first
-- string of the public key blob, and it labels the signature with that same name,
-- shortening only the ECDSA certificate names to the plain key type. So ECDSA
-- certificates work; the others are refused with the reason sshd gives.
local CERT_WHY = {
  ["ssh-ed25519-cert-v01@openssh.com"] = "an ed25519 certificate: libssh2 1.10 labels the signature " ..
    "ssh-ed25519-cert-v01@openssh.com where OpenSSH requires ssh-ed25519 (sshd: \"key type does not match\")",
  ["ssh-rsa-cert-v01@openssh.com"] = "an RSA certificate: libssh2 1.10 can offer it only as " ..
    "ssh-rsa-cert-v01@openssh.com, which OpenSSH 8.8 and later refuse, and cannot ask for " ..
    "rsa-sha2-256-cert-v01@openssh.com (renaming the certificate's type breaks its CA signature)",
}
function sshconfig.cert_refusal(ctype)
  if ctype and ctype:match("^ecdsa%-sha2%-nistp%d+%-cert%-v01@openssh%.com$") then return nil end
  return CERT_WHY[ctype] or ("a " .. tostring(ctype) .. " certificate, which libssh2 1.10 cannot sign with")
end
sshconfig.CERT_SUPPORTED = "ECDSA (ecdsa-sha2-nistp256/384/521) certificates"

-- The key type of a certificate file ("ssh-ed25519-cert-v01@openssh.com ..."), nil when unreadable.
function sshconfig.cert_type(path)
  local f = io.open(path, "r")
  if not f then return nil end
  local line = f:read("l")
  f:close()
  return line and line:match("^(%S+)")
end

-- Refuse every keyword this gpurent cannot honour that is not at its default.
local function refuse_unsupported(g, opts, target)
  local base, bad = defaults(), {}
  local keys = {}
  for k in pairs(g) do keys[#keys + 1] = k end
  table.sort(keys)
  for _, k in ipairs(keys) do
    local kind = KEYWORDS[k]
    if (kind == REFUSED or kind == nil) and not same(g[k], base[k]) then
      local where = sshconfig.locate(k, opts)
      local v = type(g[k]) == "table" and table.concat(g[k], ", ") or g[k]
      bad[#bad + 1] = string.format("  %s %s (%s)%s", k, v, #where > 0 and table.concat(where, ", ", 1, math.min(#where, 3))
        or ("in " .. table.concat(read_files(config_file(opts)), " or ")),
        kind == nil and ": a keyword this gpurent does not know" or REASONS[k] and (": " .. REASONS[k]) or "")
    end
  end
  if #bad > 0 then
    error(string.format("ssh_config for %s sets what gpurent cannot honour (it changes where or how ssh connects);\n" ..
      "remove it for this host, or use ssh itself:\n%s", target, table.concat(bad, "\n")), 0)
  end
end

-- The algorithm lists gpurent passes on only when the user changed them.
local function non_default(g, k)
  if same(g[k], defaults()[k]) then return nil end
  return g[k]
end

local function ssh_args(file, tuser, tport, thost)
  local a = {}
  if file then a[#a + 1] = "-F " .. q(file) end
  if tuser then a[#a + 1] = "-l " .. q(tuser) end
  if tport then a[#a + 1] = "-p " .. tport end
  a[#a + 1] = "-- " .. q(thost)
  return table.concat(a, " ")
end

local function number(v, keyword, target)
  if v == nil or v == "none" then return nil end
  local n = tonumber(v)
  if not n then error(string.format("ssh_config for %s: bad %s %s", target, keyword, v), 0) end
  return n
end

local function path_list(v, cfg, keyword)
  local out = {}
  for p in (v or ""):gmatch("%S+") do
    if p:lower() ~= "none" then out[#out + 1] = rehome(expand_tokens(p, cfg, keyword)) end
  end
  return out
end

function sshconfig.resolve(target, opts)
  opts = opts or {}
  local tuser, thost, tport = sshconfig.parse_target(target)
  if thost:sub(1, 1) == "-" then error("ssh target must not start with '-': " .. target, 2) end
  local file, given = config_file(opts)
  local g = ssh_G(ssh_args(file, tuser, tport, thost), target)
  refuse_unsupported(g, opts, target)
  local cfg = {
    alias = thost, target = target, config = given and file or nil, gfile = file,
    hostname = g.hostname or thost,
    port = number(g.port, "Port", target),
    user = g.user,
    hostkeyalias = g.hostkeyalias,
    identitiesonly = yes(g.identitiesonly),
    serveraliveinterval = number(g.serveraliveinterval, "ServerAliveInterval", target) or 0,
    serveralivecountmax = number(g.serveralivecountmax, "ServerAliveCountMax", target) or 3,
    connecttimeout = number(g.connecttimeout, "ConnectTimeout", target),
    connectionattempts = number(g.connectionattempts, "ConnectionAttempts", target) or 1,
    addressfamily = g.addressfamily or "any",
    stricthostkeychecking = STRICT[(g.stricthostkeychecking or "ask"):lower()] or g.stricthostkeychecking:lower(),
    hashknownhosts = yes(g.hashknownhosts),
    batchmode = yes(g.batchmode),
    pubkeyauthentication = g.pubkeyauthentication ~= "no" and g.pubkeyauthentication ~= "false",
    passwordauthentication = g.passwordauthentication ~= "no",
    proxyjump = g.proxyjump ~= "none" and g.proxyjump or nil,
    proxycommand = g.proxycommand ~= "none" and g.proxycommand or nil,
    compression = yes(g.compression),
    ciphers = non_default(g, "ciphers"), macs = non_default(g, "macs"),
    kexalgorithms = non_default(g, "kexalgorithms"), hostkeyalgorithms = non_default(g, "hostkeyalgorithms"),
    files = (read_files(file)),
  }
  if not cfg.port then error("ssh_config: bad Port for " .. thost, 2) end
  local ids = {}
  for _, p in ipairs(g.identityfile or {}) do ids[#ids + 1] = rehome(expand_tokens(p, cfg, "IdentityFile")) end
  -- ssh -G lists the defaults when nothing was configured: "explicit" means configured
  cfg.identityfiles_explicit = not same(g.identityfile, defaults().identityfile)
  cfg.identityfiles = ids
  cfg.certificatefiles = {}
  local badcerts = {}
  for _, p in ipairs(g.certificatefile or {}) do
    local path = rehome(expand_tokens(p, cfg, "CertificateFile"))
    cfg.certificatefiles[#cfg.certificatefiles + 1] = path
    -- a missing file is skipped, as ssh does; one gpurent cannot sign with is refused
    local ctype = sshconfig.cert_type(path)
    local why = ctype and sshconfig.cert_refusal(ctype)
    if why then badcerts[#badcerts + 1] = "  certificatefile " .. path .. ": " .. why end
  end
  if #badcerts > 0 then
    local where = sshconfig.locate("certificatefile", opts)
    error(string.format("ssh_config for %s sets a CertificateFile gpurent cannot use (%s);\n%s\n" ..
      "gpurent signs only with %s; remove it for this host, or use ssh itself", target,
      #where > 0 and table.concat(where, ", ", 1, math.min(#where, 3)) or "in " .. table.concat(cfg.files, " or "),
      table.concat(badcerts, "\n"), sshconfig.CERT_SUPPORTED), 0)
  end
  if g.identityagent and g.identityagent ~= "SSH_AUTH_SOCK" then
    cfg.identityagent = g.identityagent == "none" and "none"
      or rehome(expand_tokens(g.identityagent:gsub("^%$([%a_][%w_]*)$", "${%1}"), cfg, "IdentityAgent"))
  end
  cfg.knownhostsfiles = path_list(g.userknownhostsfile, cfg, "UserKnownHostsFile")
  cfg.globalknownhostsfiles = path_list(g.globalknownhostsfile, cfg, "GlobalKnownHostsFile")
  return cfg
end

-- For tests and `ssh -G` comparisons: the raw `ssh -G` table gpurent resolved from.
function sshconfig.raw(target, opts)
  opts = opts or {}
  local tuser, thost, tport = sshconfig.parse_target(target)
  return ssh_G(ssh_args(config_file(opts), tuser, tport, thost), target)
end

return sshconfig
