-- gpurent.secret: values that never print. gpurent.secret(v) wraps a string in an
-- object whose every rendering is "***": tostring/print, string concatenation,
-- string.format("%s"), error messages, tracebacks, gpurent's JSON encoders. The
-- value itself is kept outside the object (a weak table private to this module),
-- so walking the object (pairs, cjson, a debugger printing fields) finds nothing.
--
-- Only transports read the value (secret.reveal), and they send it over a
-- channel's stdin, never in a command line.
--
-- secret.ask(label) is how a person types one in (the REPL, a recipe run from a
-- terminal): C reads it from /dev/tty with echo off, so it never reaches the
-- screen, readline's history or stdin (a pipe cannot answer).
local secret = {}
local values = setmetatable({}, {__mode = "k"})

local Secret = {
  __name = "gpurent.secret",
  __tostring = function() return "***" end,
  __concat = function(a, b)
    return (values[a] and "***" or tostring(a)) .. (values[b] and "***" or tostring(b))
  end,
  __len = function() return 3 end,
  __json = function() return "***" end,   -- json.encode_stable renders "***"
  __index = function(_, k)
    error("secret: a secret has no field " .. tostring(k) .. " (it prints as ***)", 2)
  end,
  __newindex = function() error("secret: a secret is read-only", 2) end,
}
Secret.__metatable = Secret  -- getmetatable works (for secret.is), setmetatable is refused

-- secret.new(value) -> secret; a secret passed in is returned as is.
function secret.new(v)
  if values[v] ~= nil then return v end
  if type(v) ~= "string" then error("gpurent.secret: expected a string, got " .. type(v), 2) end
  local s = setmetatable({}, Secret)
  values[s] = v
  return s
end

-- secret.ask(label) -> secret: prompts "label: " on the terminal, reads without echo.
function secret.ask(label)
  if type(label) ~= "string" or label == "" or #label > 200 then
    error('secret.ask: expected a label naming the value, such as secret.ask("wandb token"), got '
      .. (type(label) == "string" and string.format("%q", label:sub(1, 40)) or type(label)), 2)
  end
  if label:find("%c") then
    error("secret.ask: the label may not hold control characters (it is printed on the terminal)", 2)
  end
  return secret.new(require("gpurent.core").term.read_secret(label))
end

function secret.is(v) return values[v] ~= nil end

-- secret.reveal(v) -> the string; plain strings pass through. For transports only.
function secret.reveal(v)
  local s = values[v]
  if s ~= nil then return s end
  return v
end

-- secret.redact(text, ...) -> text with every given secret's value replaced by ***
-- (for output that came back from a remote command and might echo one).
function secret.redact(text, list)
  if type(text) ~= "string" then return text end
  for _, s in ipairs(list or {}) do
    local v = values[s]
    if v and #v > 0 then
      local i = 1
      local parts = {}
      while true do
        local a, b = text:find(v, i, true)
        if not a then break end
        parts[#parts + 1] = text:sub(i, a - 1)
        parts[#parts + 1] = "***"
        i = b + 1
      end
      parts[#parts + 1] = text:sub(i)
      text = table.concat(parts)
    end
  end
  return text
end

return setmetatable(secret, {__call = function(_, v) return secret.new(v) end})
