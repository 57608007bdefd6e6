-- gpurent.errors: error objects that carry an exit code through pcall and the host.
-- A refusal (exit 3) is a safety gate saying no; a usage error (exit 2) is a
-- caller's mistake. Both print as "where: message" like ordinary Lua errors.
--
-- errors.guard(fn, ...) is how the C host runs every command, recipe and -e chunk:
-- a person reads `gpurent: message`, not the file:line inside gpurent's own library
-- where the error was raised (`ssh.lua:277: ...`); a position in the person's own
-- code (their recipe, their -e chunk, a team library) stays. With --verbose nothing
-- is trimmed and the host prints the traceback too.
local errors = {}

local Err = {}
Err.__index = Err
Err.__tostring = function(e) return e.msg end

local function where(level)
  local info = debug.getinfo(level + 1, "Sl")
  if info and info.currentline and info.currentline > 0 then
    return info.short_src .. ":" .. info.currentline .. ": "
  end
  return ""
end

local function raise(kind, exit, msg, level)
  level = level or 1
  local text = (level > 0 and where(level + 2) or "") .. tostring(msg)
  error(setmetatable({kind = kind, exit = exit, msg = text, reason = msg}, Err), 0)
end

-- errors.refuse(msg [, level]) raises a gate refusal (exit code 3).
function errors.refuse(msg, level) raise("refused", 3, msg, level) end

-- errors.usage(msg [, level]) raises a usage error (exit code 2).
function errors.usage(msg, level) raise("usage", 2, msg, level) end

function errors.is_refusal(e)
  return getmetatable(e) == Err and e.kind == "refused"
end

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
-- ("/usr/share/gpurent/lua/gpurent/ssh.lua:277: a: b" -> "a: b"). Bounded: a
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
