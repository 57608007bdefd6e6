-- gpurent.yaml: YAML to Lua tables on libyaml (runtime/yaml.c). Core schema types,
-- anchors, aliases and merge keys; errors read "name:line:col: problem".
-- YAML null is yaml.null (the same light userdata as cjson.null), so a key whose
-- value is null stays visible in the table.
local core = require("gpurent.core").yaml

local yaml = {null = core.null}

-- yaml.load(text, name [, opts]) -> value [, positions]
-- opts.multi: return a list of documents instead of refusing a second one.
-- opts.positions: also return positions[tbl][key] = {line, col}.
function yaml.load(text, name, opts)
  opts = opts or {}
  if type(text) ~= "string" then
    error("yaml.load: text must be a string, got " .. type(text), 2)
  end
  local docs, pos = core.load(text, name or "<string>", opts.multi, opts.positions)
  if opts.multi then return docs, pos end
  local doc = docs[1]
  if doc == nil then doc = core.null end
  return doc, pos
end

-- yaml.load_file(path [, opts]): names the file in every error.
function yaml.load_file(path, opts)
  local f, err = io.open(path, "rb")
  if not f then error("yaml.load_file: " .. err, 2) end
  local text = f:read("a")
  f:close()
  return yaml.load(text, path, opts)
end

return yaml
