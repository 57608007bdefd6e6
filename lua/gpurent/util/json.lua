-- gpurent.json: JSON on lua-cjson, plus a stable encoder (sorted keys, two-space
-- indent, UTF-8 kept as is, "/" not escaped) for files that are hashed and compared,
-- such as PULL_MANIFEST.json. json.null is cjson.null; json.array(t) marks a table
-- that must encode as an array even when empty.
local cjson = require "cjson"

local json = {null = cjson.null}

local array_mt = {__name = "json.array"}
function json.array(t) return setmetatable(t or {}, array_mt) end

-- json.decode(text [, name]) raises "name: invalid JSON: ..." on bad input.
function json.decode(text, name)
  if type(text) ~= "string" then
    error((name or "json") .. ": expected JSON text, got " .. type(text), 2)
  end
  local ok, v = pcall(cjson.decode, text)
  if not ok then
    error((name or "json") .. ": invalid JSON: " .. tostring(v):gsub("^.-: ", ""), 2)
  end
  return v
end

function json.encode(v) return cjson.encode(v) end

local escapes = {['"'] = '\\"', ['\\'] = '\\\\', ['\b'] = '\\b', ['\f'] = '\\f',
                 ['\n'] = '\\n', ['\r'] = '\\r', ['\t'] = '\\t'}

local function encode_string(s, where)
  if not utf8.len(s) then error("json: invalid UTF-8 in string at " .. where, 0) end
  return '"' .. s:gsub('[%c"\\]', function(c)
    return escapes[c] or string.format("\\u%04x", c:byte())
  end) .. '"'
end

local function is_array(t)
  if getmetatable(t) == array_mt then return true end
  local n = #t
  if n == 0 then return false end
  local count = 0
  for _ in pairs(t) do count = count + 1 end
  return count == n
end

local encode_value

local function encode_table(t, indent, where, seen)
  if seen[t] then error("json: cycle at " .. where, 0) end
  seen[t] = true
  local pad, inner = string.rep("  ", indent), string.rep("  ", indent + 1)
  local out = {}
  if is_array(t) then
    for i = 1, #t do out[i] = inner .. encode_value(t[i], indent + 1, where .. "[" .. i .. "]", seen) end
    seen[t] = nil
    if #out == 0 then return "[]" end
    return "[\n" .. table.concat(out, ",\n") .. "\n" .. pad .. "]"
  end
  local keys = {}
  for k in pairs(t) do
    if type(k) ~= "string" then error("json: non-string key " .. tostring(k) .. " at " .. where, 0) end
    keys[#keys + 1] = k
  end
  table.sort(keys)
  for i, k in ipairs(keys) do
    out[i] = inner .. encode_string(k, where) .. ": " .. encode_value(t[k], indent + 1, where .. "." .. k, seen)
  end
  seen[t] = nil
  if #out == 0 then return "{}" end
  return "{\n" .. table.concat(out, ",\n") .. "\n" .. pad .. "}"
end

function encode_value(v, indent, where, seen)
  local tv = type(v)
  local mt = tv == "table" and getmetatable(v)
  if type(mt) == "table" and mt.__json then return encode_value(mt.__json(v), indent, where, seen) end -- gpurent.secret -> "***"
  if v == cjson.null then return "null"
  elseif tv == "string" then return encode_string(v, where)
  elseif tv == "boolean" then return tostring(v)
  elseif tv == "number" then
    if math.type(v) == "integer" then return string.format("%d", v) end
    if v ~= v then error("json: NaN at " .. where, 0) end
    if v == math.huge or v == -math.huge then error("json: infinity at " .. where, 0) end
    if v == math.floor(v) and math.abs(v) < 2^53 then return string.format("%.1f", v) end
    return string.format("%.17g", v)
  elseif tv == "table" then return encode_table(v, indent, where, seen)
  end
  error("json: cannot encode a " .. tv .. " at " .. where, 0)
end

-- json.encode_stable(v) -> text ending with a newline.
function json.encode_stable(v)
  return encode_value(v, 0, "$", {}) .. "\n"
end

return json
