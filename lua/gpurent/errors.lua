-- gpurent.errors: error objects that carry an exit code through pcall and the host.
-- A refusal (exit 3) is a safety gate saying no; a usage error (exit 2) is a
-- caller's mistake. Both print as "where: message" like ordinary Lua errors.
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

return errors
