-- gpurent.pretty: readable rendering of Lua values for the REPL: tables sorted and
-- indented, with depth and size limits so a huge result never floods the terminal;
-- cycles shown as <cycle>; secrets stay ***. pretty.use_color(fd) is the one
-- decision whether output may carry colour (every command that colours asks it).
local pretty = {}

-- pretty.use_color([fd=1]) -> boolean: colour only on a terminal, and never when the
-- person opted out: NO_COLOR set to anything non-empty (no-color.org), or TERM unset
-- or "dumb" (a terminal that cannot show escape sequences).
function pretty.use_color(fd)
  local no_color = os.getenv("NO_COLOR")
  if no_color and no_color ~= "" then return false end
  local term = os.getenv("TERM")
  if not term or term == "" or term == "dumb" then return false end
  return require("gpurent.core").sys.isatty(fd or 1) == true
end

local function key_order(a, b)
  local ta, tb = type(a), type(b)
  if ta ~= tb then return ta < tb end
  if ta == "number" or ta == "string" then return a < b end
  return tostring(a) < tostring(b)
end

local function render_key(k)
  if type(k) == "string" and k:match("^[%a_][%w_]*$") then return k end
  return "[" .. pretty.scalar(k) .. "]"
end

function pretty.scalar(v)
  if type(v) == "string" then return string.format("%q", v):gsub("\\\n", "\\n") end
  local mt = getmetatable(v)
  if type(mt) == "table" and mt.__tostring then return tostring(v) end
  return tostring(v)
end

local function render(v, opts, depth, indent, seen, out)
  local mt = getmetatable(v)
  if type(v) ~= "table" or (type(mt) == "table" and mt.__tostring) then
    out[#out + 1] = pretty.scalar(v)
    return
  end
  if seen[v] then out[#out + 1] = "<cycle>"; return end
  if depth >= opts.depth then out[#out + 1] = "{...}"; return end
  seen[v] = true
  local keys, n = {}, #v
  for k in pairs(v) do
    if not (math.type(k) == "integer" and k >= 1 and k <= n) then keys[#keys + 1] = k end
  end
  table.sort(keys, key_order)
  local total = n + #keys
  if total == 0 then out[#out + 1] = "{}"; seen[v] = nil; return end
  local pad = string.rep("  ", indent + 1)
  out[#out + 1] = "{\n"
  local shown = 0
  local function item(prefix, value)
    out[#out + 1] = pad .. prefix
    render(value, opts, depth + 1, indent + 1, seen, out)
    out[#out + 1] = ",\n"
    shown = shown + 1
  end
  for i = 1, n do
    if shown >= opts.items then break end
    item("", v[i])
  end
  for _, k in ipairs(keys) do
    if shown >= opts.items then break end
    item(render_key(k) .. " = ", v[k])
  end
  if total > shown then out[#out + 1] = pad .. string.format("... (%d more)\n", total - shown) end
  out[#out + 1] = string.rep("  ", indent) .. "}"
  seen[v] = nil
end

-- pretty.format(v [, {depth = 4, items = 40}]) -> string
function pretty.format(v, opts)
  opts = opts or {}
  opts.depth = opts.depth or 4
  opts.items = opts.items or 40
  local out = {}
  render(v, opts, 0, 0, {}, out)
  return table.concat(out)
end

return pretty
