-- gpurent.errors: the one error type. Every error gpurent raises on purpose is an
-- object with a kind (usage, refusal, remote, transport, provider, interrupted); the
-- exit code derives from the kind, errors.message(e) is its text for display, and code
-- branches on errors.is(e, kind) or a field (e.code), never on message text. C raises
-- the same type (runtime/host.c defines the metatable and each kind's exit code).
-- A refusal (exit 3) is a safety gate saying no; a usage error (exit 2) is a
-- caller's mistake. Both print as "where: message" like ordinary Lua errors.
--
-- errors.guard(fn, ...) is how the C host runs every command, recipe and -e chunk:
-- a person reads `gpurent: message`, not the file:line inside gpurent's own library
-- where the error was raised (`ssh.lua:277: ...`); a position in the person's own
-- code (their recipe, their -e chunk, a team library) stays. With --verbose nothing
-- is trimmed and the host prints the traceback too.
local errors = {}

-- The host's definitions (core.host): its metatable, so an error C raised and one Lua
-- raised are the same type, and the kinds' exit codes. Outside the host (never in
-- gpurent itself) a local copy stands in.
local host = (function()
  local ok, core = pcall(require, "gpurent.core")
  return ok and type(core) == "table" and core.host or {}
end)()

local Err = host.error_metatable or {__name = "gpurent.error", __tostring = function(e) return tostring(e.msg) end}

local function where(level)
  local info = debug.getinfo(level + 1, "Sl")
  if info and info.currentline and info.currentline > 0 then
    return info.short_src .. ":" .. info.currentline .. ": "
  end
  return ""
end

-- The kinds of error and the exit code each one ends the program with. A kind says
-- what went wrong for the person (their input, a gate, the box, the link, the
-- provider, Ctrl-C); code branches on the kind, never on message text. runtime/host.c
-- defines them (C raises errors too); the literal is for Lua outside the host.
errors.EXIT = host.error_kinds or {usage = 2, refusal = 3, remote = 1, transport = 1, provider = 1, interrupted = 130}

-- errors.new(kind, msg [, fields]) -> an error object (not raised). `fields` are
-- extra facts a caller may branch on (e.g. {code = "timeout"}); kind and exit are set
-- from `kind`, which must be one of errors.EXIT.
function errors.new(kind, msg, fields)
  local exit = errors.EXIT[kind]
  if not exit then error("errors.new: unknown error kind " .. tostring(kind), 2) end
  local e = {}
  for k, v in pairs(fields or {}) do e[k] = v end
  e.kind, e.exit, e.msg = kind, exit, tostring(msg)
  return setmetatable(e, Err)
end

-- errors.raise(kind, msg [, level [, fields]]): raise errors.new(kind, ...), the
-- message prefixed with the caller's position like error() does (level 0: none).
function errors.raise(kind, msg, level, fields)
  level = level or 1
  local e = errors.new(kind, msg, fields)
  e.msg = (level > 0 and where(level + 1) or "") .. e.msg
  error(e, 0)
end

-- errors.refuse(msg [, level]) raises a gate refusal (exit code 3).
function errors.refuse(msg, level) errors.raise("refusal", msg, level and level > 0 and level + 1 or level or 2) end

-- errors.usage(msg [, level]) raises a usage error (exit code 2).
function errors.usage(msg, level) errors.raise("usage", msg, level and level > 0 and level + 1 or level or 2) end

-- errors.kind(e) -> the kind of any error value: an error object's own; nil for
-- anything else (a plain Lua error: a bug or a failure without a kind, exit 1).
function errors.kind(e)
  if getmetatable(e) == Err then return e.kind end
  return nil
end

-- errors.is(e, kind, ...) -> is `e` an error of that kind (of any kind named)? A kind
-- that does not exist is a mistake in the caller (a typo would otherwise never
-- match), not a "no".
function errors.is(e, ...)
  local mine = errors.kind(e)
  for i = 1, select("#", ...) do
    local kind = select(i, ...)
    if not errors.EXIT[kind] then error("errors.is: unknown error kind " .. tostring(kind), 2) end
    if mine == kind then return true end
  end
  return false
end

-- errors.has_own_exit(e) -> is `e` of a kind that end the program with their own code, which a command
-- re-raises rather than printing them as its own failure: usage 2, refusal 3, Ctrl-C 130.
function errors.has_own_exit(e) return errors.is(e, "usage", "refusal", "interrupted") end

-- errors.exit_code(e) -> the exit code `e` ends the program with.
function errors.exit_code(e) return errors.EXIT[errors.kind(e) or ""] or 1 end

-- errors.is_refusal(e): errors.is(e, "refusal"), the name recipes have used.
function errors.is_refusal(e) return errors.is(e, "refusal") end

-- errors.is_error_object(e) -> is `e` an error of any kind (not a plain Lua error)?
function errors.is_error_object(e) return getmetatable(e) == Err end

-- ---- what a person reads ------------------------------------------------------------

-- The directory of gpurent's own modules, as Lua names their chunks ("/x/lua/").
local function own_lua_dir()
  local ok, core = pcall(require, "gpurent.core")
  return ok and core.host and core.host.share_dir and (core.host.share_dir .. "/lua/") or nil
end

-- Is `src` (a chunk name as it appears before ":LINE:") one of gpurent's own
-- modules? Lua shortens long names to "...tail", so a tail is matched as a suffix.
local function is_internal(src, own)
  if src == "gpurent" then return true end            -- main.c's "=gpurent" trampoline
  if own and src:sub(1, #own) == own then return true end
  local tail = src:match("^%.%.%.(.*)$")
  return tail ~= nil and tail:find("gpurent/", 1, true) ~= nil and tail:match("%.lua$") ~= nil
end

-- errors.clean(text) -> text without leading positions inside gpurent's own library
-- ("/usr/share/gpurent/lua/gpurent/transport/ssh.lua:277: a: b" -> "a: b"). Bounded: a
-- message holds few positions.
function errors.clean(text)
  local own = own_lua_dir()
  for _ = 1, 16 do
    local src, rest = text:match("^([^\n]-):%d+: (.*)$")
    if not src or not is_internal(src, own) then break end
    text = rest
  end
  return text
end

-- errors.message(e) -> the text of any error value, cleaned (for commands that
-- catch an error and print it themselves).
function errors.message(e)
  if getmetatable(e) == Err then return errors.clean(e.msg) end
  if type(e) == "string" then return errors.clean(e) end
  return tostring(e)
end

local function verbose()
  local ok, core = pcall(require, "gpurent.core")
  return ok and core.host and core.host.verbose
end

local function cleaned(e)
  if getmetatable(e) == Err then e.msg = errors.clean(e.msg)
  elseif type(e) == "string" then e = errors.clean(e) end
  return e
end

-- errors.guard(fn, ...) -> fn(...): raises fn's error with its message cleaned
-- (error objects keep their exit code), unless --verbose asked for the positions.
function errors.guard(fn, ...)
  if verbose() then return fn(...) end
  local res = table.pack(xpcall(fn, cleaned, ...))
  if not res[1] then error(res[2], 0) end
  return table.unpack(res, 2, res.n)
end

return errors
