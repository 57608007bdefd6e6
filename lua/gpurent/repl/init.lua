-- gpurent.repl: the interactive loop of `gpurent repl [HOST]`: look, try, fix on the
-- box that is billing right now. Lua lines evaluate in an environment that holds
-- `inst` and short helpers; `!cmd` runs a shell command on the instance, streaming;
-- `:cmd` are the REPL's own commands. Incomplete statements continue on the next
-- line (as in lua -i), `=expr` and bare expressions print their values, errors
-- keep the loop alive, Ctrl-C interrupts what runs and Ctrl-D leaves; `help`,
-- `exit` and `quit` do what they say. The helpers are gpurent.repl.helpers; what
-- the session knows of its box (profile, provider instance, meter) is
-- gpurent.repl.box; Tab completion of paths in strings is gpurent.repl.paths.
local errors = require "gpurent.util.errors"
local pretty = require "gpurent.util.pretty"
local term = require "gpurent.util.term"

local repl = {}


-- Optional modules: the REPL works with whatever the runtime has.
local function try_require(name)
  local ok, mod = pcall(require, name)
  if ok then return mod end
  return nil
end

local function is_secret(v)
  local secret = try_require("gpurent.util.secret")
  return secret ~= nil and secret.is(v)
end

---------------------------------------------------------------- history

local function state_dir()
  local d = os.getenv("GPURENT_STATE_DIR")
  if d then return d end
  local xdg = os.getenv("XDG_STATE_HOME")
  if xdg and xdg ~= "" then return xdg .. "/gpurent" end
  return (os.getenv("HOME") or "/tmp") .. "/.local/state/gpurent"
end

-- A line that creates or uses a secret never reaches the history file: it names
-- gpurent.secret / secret(...) / secret.ask(...), or mentions a variable that
-- holds a secret. A value typed at secret.ask's prompt is read by C from
-- /dev/tty, not through readline, so it never enters the history at all.
function repl.touches_secret(line, env)
  if line:find("secret", 1, true) then return true end
  for name in line:gmatch("[%a_][%w_]*") do
    local ok, v = pcall(function() return env[name] end)
    if ok and is_secret(v) then return true end
  end
  return false
end

---------------------------------------------------------------- completion

local function methods_of(v, out, seen)
  seen = seen or {}
  local mt = getmetatable(v)
  if type(v) == "table" then
    for k, f in pairs(v) do if type(k) == "string" and type(f) == "function" then out[k] = true end end
  end
  if type(mt) == "table" and type(mt.__index) == "table" and not seen[mt.__index] then
    seen[mt.__index] = true
    methods_of(mt.__index, out, seen)
  end
  return out
end

local function fields_of(v)
  local out = {}
  if type(v) == "table" then
    for k in pairs(v) do if type(k) == "string" then out[k] = true end end
  end
  local mt = getmetatable(v)
  if type(mt) == "table" and type(mt.__index) == "table" then
    for k in pairs(mt.__index) do if type(k) == "string" then out[k] = true end end
  end
  return out
end

-- repl.complete(env, word [, line, start, inst]) -> sorted candidates: a path when
-- the cursor is inside a string literal or a !cmd line (local or remote, see
-- gpurent.repl.paths), else globals, a.b fields and a:m methods.
function repl.complete(env, word, line, start, inst)
  if line and start then
    local paths = require "gpurent.repl.paths"
    local ctx = paths.context(line, start, word)
    if ctx then return paths.complete(ctx, word, inst) end
  end
  local path, sep, partial = word:match("^(.*)([%.:])([%w_]*)$")
  local names
  if not path then
    partial, names = word, fields_of(env)
    for k in pairs(_G) do if type(k) == "string" then names[k] = true end end
  else
    local v = env
    for part in path:gmatch("[^%.]+") do
      if not part:match("^[%a_][%w_]*$") then return {} end
      local ok, nv = pcall(function() return v[part] end)
      if not ok or nv == nil then return {} end
      v = nv
    end
    names = sep == ":" and methods_of(v, {}) or fields_of(v)
  end
  local out = {}
  for k in pairs(names) do
    if k:sub(1, #partial) == partial then out[#out + 1] = (path and (path .. sep) or "") .. k end
  end
  table.sort(out)
  return out
end

---------------------------------------------------------------- evaluation

-- repl.compile(buffer, env) -> fn | nil, err, incomplete
function repl.compile(buffer, env)
  local code = buffer:gsub("^%s*=", "return ", 1)
  local fn = load("return " .. code, "=stdin", "t", env)
  if fn and not code:match("^%s*return") then return fn end
  local err
  fn, err = load(code, "=stdin", "t", env)
  if fn then return fn end
  return nil, err, err:sub(-5) == "<eof>"
end

-- Values a helper already printed (in `shown`) are not printed again.
local function print_results(shown, n, ...)
  local parts = {}
  for i = 1, n do
    local v = select(i, ...)
    if not (shown and shown[v]) then parts[#parts + 1] = pretty.format(v) end
  end
  if #parts > 0 then io.write(table.concat(parts, "\t"), "\n") end
end

-- Run fn; print its values (but those in `shown`) or its error. Returns ok, err.
function repl.execute(fn, shown)
  local raw
  local res = table.pack(xpcall(fn, function(e)
    raw = e
    if type(e) == "table" and getmetatable(e) and getmetatable(e).__tostring then return tostring(e) end
    return type(e) == "string" and e or ("(error object) " .. pretty.format(e))
  end))
  if res[1] then
    print_results(shown, res.n - 1, table.unpack(res, 2, res.n))
    return true
  end
  local msg = tostring(res[2])
  io.stderr:write(msg, "\n")
  return false, msg, raw
end

---------------------------------------------------------------- the session

local Session = {}
Session.__index = Session

function repl.new(opts)
  local self = setmetatable({host = opts.host, opts = opts, shown = setmetatable({}, {__mode = "k"})}, Session)
  self.env = setmetatable({}, {__index = _G})
  self.box = require("gpurent.repl.box").new(opts.host)
  require("gpurent.repl.helpers").bind(self)
  return self
end

-- The profile the helpers use: --profile (loaded before connecting, so a bad name
-- fails at once), else resolved for the host (gpurent.repl.box). A resolved profile
-- that does not load is said, and generic-ssh is used instead.
function Session:resolve_profile()
  local profile = require "gpurent.config.profile"
  if self.opts.profile then
    self.profile = self.profile or profile.load(self.opts.profile)
    self.profile_why = "--profile " .. self.opts.profile
    return
  end
  local name, why = self.box:profile_name()
  local ok, p = pcall(profile.load, name)
  if not ok then
    io.stderr:write("gpurent: profile ", name, " (from ", why, ") does not load: ", tostring(p),
      "; using generic-ssh (give --profile NAME)\n")
    name, why, p = "generic-ssh", "fallback", profile.load("generic-ssh")
  end
  self.profile, self.profile_why = p, why
end

function Session:connect()
  if not self.host then return end
  if self.opts.profile then self:resolve_profile() end
  local connect = gpurent.connect or (try_require("gpurent.transport.instance") or {}).connect
  if not connect then error("this gpurent has no SSH support (gpurent.connect missing)", 0) end
  self.inst = connect(self.host, {accept_new_host = self.opts.accept_new_host})
  self.box:attach(self.inst)
  if not self.profile then self:resolve_profile() end
  self.inst.profile = self.profile
  self.box:set_profile(self.profile)
  self.env.inst = self.inst
  self.lost = nil
end

function Session:reconnect()
  if self.inst and self.inst.close then pcall(self.inst.close, self.inst) end
  self.inst = nil
  self:connect()
  io.write("connected to ", self.host, "\n")
end

-- Connection losses are reported now and repaired before the next command: an ssh
-- error of code "connection", or a session the C layer marked dead.
function Session:note_failure(err)
  local ssh = try_require("gpurent.transport.ssh")
  local lost = ssh and ssh.is_error(err, "connection")
  if self.inst and ssh and self.inst.conn then
    lost = lost or ssh.is_connection_loss(self.inst.conn, err)
  end
  if self.host and lost then
    self.lost = true
    io.stderr:write("gpurent: the connection to ", self.host, " is lost; it is re-established on the next command\n")
  end
end

function Session:ensure_connected()
  if self.host and (self.lost or not self.inst) then
    local ok, err = pcall(self.reconnect, self)
    if not ok then io.stderr:write("gpurent: reconnect to ", self.host, " failed: ", tostring(err), "\n") end
    return ok
  end
  return true
end

-- !cmd: stream both outputs as they come; Ctrl-C closes the channel and TERMs
-- the command's remote process group (inst:sh does on Ctrl-C, unless told
-- kill_on_interrupt=false), since closing a channel does not stop the command.
function Session:shell(cmd)
  if not self.inst then
    local p = io.popen(cmd .. " 2>&1")
    for line in p:lines() do io.write(line, "\n"); io.flush() end
    local ok, how, code = p:close()
    if not ok then io.write(string.format("[%s %s]\n", how, tostring(code))) end
    return
  end
  local ok, r = pcall(self.inst.sh, self.inst, cmd, {kill_on_interrupt = true, on_line = function(line)
    io.write(line, "\n")
    io.flush()
  end})
  if ok then
    if r.code ~= 0 then io.write(string.format("[exit %s]\n", tostring(r.code or r.signal))) end
    return
  end
  if errors.is(r, "interrupted") then
    term.clear_interrupt()
    local pid = r.signalled and r.remote_pid
    io.write(string.format("[interrupted%s]\n", pid and ("; sent TERM to remote process group " .. pid) or ""))
    return
  end
  error(r, 0)
end

function Session:prompt()
  local tags = {}
  tags[#tags + 1] = self.host and self.box:meter_text() or nil
  local ok, clocks = pcall(self.box.clock_text, self.box)
  if ok and clocks then tags[#tags + 1] = clocks end
  return string.format("%s%s> ", self.host or "local", #tags > 0 and (" [" .. table.concat(tags, " | ") .. "]") or "")
end

local META_HELPERS = {check = "check", df = "df", gotchas = "gotchas", meter = "meter"}

function Session:meta(cmd)
  local word = cmd:match("^:(%S*)")
  if word == "quit" or word == "q" or word == "exit" then return "quit" end
  if word == "help" then self.env.help(); return end
  if word == "reconnect" then
    local ok, err = pcall(self.reconnect, self)
    if not ok then io.stderr:write("gpurent: ", tostring(err), "\n") end
    return
  end
  local helper = META_HELPERS[word]
  if helper then
    if not self:ensure_connected() then return end
    self:evaluate(function() return self.env[helper]() end)
    return
  end
  io.stderr:write("unknown command :", word, " (try :help)\n")
end

-- Run fn as a REPL evaluation: results printed once, failures noted.
function Session:evaluate(fn)
  for v in pairs(self.shown) do self.shown[v] = nil end
  local ok, _, err = repl.execute(fn, self.shown)
  if not ok then self:note_failure(err) end
  if self.leaving then return "quit" end
end

-- `help`, `exit`, `quit` typed bare (not reassigned by the person): call them.
function Session:bare_builtin(buffer)
  local word = buffer:match("^%s*(%a+)%s*$")
  local f = word and self.builtins[word]
  if f and rawget(self.env, word) == f then return f end
  return nil
end

function Session:remember(text)
  if repl.touches_secret(text, self.env) then return end
  term.add_history(text)
end

-- One complete input: a ! command, a : command or Lua.
function Session:dispatch(buffer)
  if buffer:sub(1, 1) == "!" then
    if not self:ensure_connected() then return end
    local ok, err = pcall(self.shell, self, buffer:sub(2))
    if not ok then
      io.stderr:write(tostring(err), "\n")
      self:note_failure(err)
    end
    return
  end
  if buffer:sub(1, 1) == ":" then return self:meta(buffer) end
  local builtin = self:bare_builtin(buffer)
  if builtin then return self:evaluate(builtin) end
  local fn, err = repl.compile(buffer, self.env)
  if not fn then io.stderr:write(err, "\n"); return end
  if not self:ensure_connected() then return end
  return self:evaluate(fn)
end

function Session:loop()
  local history = state_dir() .. "/repl_history"
  os.execute("mkdir -p '" .. state_dir():gsub("'", "'\\''") .. "'")
  term.load_history(history)
  term.set_completer(function(text, line, start) return repl.complete(self.env, text, line, start, self.inst) end)
  local buffer = ""
  while true do
    local line = term.readline(buffer == "" and self:prompt() or ">> ")
    if line == nil then io.write("\n"); break end
    if line == false then
      buffer = ""                                  -- Ctrl-C at the prompt
    elseif buffer == "" and line:match("^%s*$") then
      -- nothing
    else
      buffer = buffer == "" and line or (buffer .. "\n" .. line)
      local first = buffer:sub(1, 1)
      local _, _, incomplete = nil, nil, false
      if first ~= "!" and first ~= ":" then _, _, incomplete = repl.compile(buffer, self.env) end
      if not incomplete then
        self:remember(buffer)
        local verdict = self:dispatch(buffer)
        term.clear_interrupt()
        buffer = ""
        if verdict == "quit" then break end
      end
    end
  end
  pcall(term.save_history, history, 1000)
end

function repl.run(opts)
  local session = repl.new(opts)
  if opts.host then
    session:connect()
    io.write("connected to ", opts.host, " (profile ", session.profile.platform, ": ", session.profile_why,
      "; :help for help, Ctrl-D to leave)\n")
  else
    io.write("gpurent ", gpurent.version, " local REPL (:help for help, Ctrl-D to leave)\n")
  end
  session:loop()
  if session.inst and session.inst.close then pcall(session.inst.close, session.inst) end
  return 0
end

return repl
