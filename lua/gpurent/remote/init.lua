-- gpurent.remote: the shell scripts gpurent runs ON the box, kept as files beside this
-- module (lua/gpurent/remote/NAME.sh, POSIX sh, shellcheck-clean: `make check-remote`),
-- and the one filler that turns a script and its values into the text sent over SSH.
--
--   remote.script(name, vars) -> text
--     reads NAME.sh from gpurent's own installed tree (core.host.share_dir, never the
--     project directory) and replaces each @NAME@ with vars.NAME shell-quoted: every
--     value, always (numbers too), so a value is one word of data whatever it holds.
--     Scripts put a placeholder where one quoted word belongs (`RUN_ID=@RUN_ID@`).
--     Raises naming the script and the placeholder for a placeholder with no value,
--     a value with no placeholder, or a value that is not a string or a number.
--     A line `# gpurent-include: LIB.sh` is replaced by that file (shell functions
--     shared by several scripts, e.g. detach.sh: the one detach starter); included
--     files hold no placeholders; a library may include another, each is inlined once.
--   remote.lines(list, what) -> "a\nb"    a list as one value, one item a line (the
--     scripts read it with `while IFS= read -r x`); raises on an item holding a newline
--   remote.path(name [, "py"]) -> the file's path
--   remote.text(name [, "py"]) -> its bytes, unfilled: the watchdog (which reads its
--     values from a config file) and remote/*.py snippets (passed to a script as a
--     value, e.g. TORCH_PY, so they too stay data until python reads them)
local remote = {}

local q = require("gpurent.util.shell").quote

local function dir()
  local ok, core = pcall(require, "gpurent.core")
  local share = ok and core.host and core.host.share_dir
  if not share then error("gpurent.remote: gpurent.core.host.share_dir is not set (not running inside gpurent?)", 3) end
  return share .. "/lua/gpurent/remote"
end

function remote.path(name, ext)
  ext = ext or "sh"
  if type(name) ~= "string" or not name:match("^[%w_]+$") or (ext ~= "sh" and ext ~= "py") then
    error("gpurent.remote: script name " .. tostring(name) .. "." .. tostring(ext) ..
      " is not a plain name (letters, digits, _; .sh or .py)", 3)
  end
  return dir() .. "/" .. name .. "." .. ext
end

function remote.text(name, ext)
  local path = remote.path(name, ext)
  local f, err = io.open(path, "rb")
  if not f then
    error("gpurent.remote: cannot read the on-box script " .. name .. "." .. (ext or "sh") .. ": " .. tostring(err), 2)
  end
  local text = f:read("a")
  f:close()
  return text
end

local PLACEHOLDER = "@([%u_][%u%d_]*)@"

-- Inline `# gpurent-include: LIB.sh` lines, each library once, recursively (a library
-- may include another; a cycle or a repeat is included once).
local function includes(name, text, seen)
  seen = seen or {}
  return (text:gsub("# gpurent%-include: ([%w_]+)%.sh\n", function(lib)
    if seen[lib] then return "" end
    seen[lib] = true
    local body = remote.text(lib)
    if body:find(PLACEHOLDER) then
      error(string.format("gpurent.remote: %s.sh includes %s.sh, which holds a placeholder (libraries take none)",
        name, lib), 0)
    end
    return includes(lib, body, seen)
  end))
end

function remote.script(name, vars)
  vars = vars or {}
  if type(vars) ~= "table" then error("gpurent.remote: script " .. tostring(name) .. ": vars must be a table", 2) end
  local text = includes(name, remote.text(name))
  for k, v in pairs(vars) do
    local tv = type(v)
    if type(k) ~= "string" then
      error(string.format("gpurent.remote: %s.sh: value key %s is not a placeholder name", name, tostring(k)), 2)
    end
    if tv ~= "string" and tv ~= "number" then
      error(string.format("gpurent.remote: %s.sh: @%s@ wants a string or a number, got a %s", name, k, tv), 2)
    end
    if not text:find("@" .. k .. "@", 1, true) then
      error(string.format("gpurent.remote: %s.sh has no placeholder @%s@ for the value given", name, k), 2)
    end
  end
  local missing
  local out = text:gsub(PLACEHOLDER, function(k)
    local v = vars[k]
    if v == nil then missing = missing or k; return nil end
    if math.type(v) == "integer" then return q(string.format("%d", v)) end
    return q(tostring(v))
  end)
  if missing then
    error(string.format("gpurent.remote: %s.sh: no value for the placeholder @%s@", name, missing), 2)
  end
  return out
end

function remote.lines(list, what)
  local out = {}
  for i, v in ipairs(list or {}) do
    v = tostring(v)
    if v:find("[\n%z]") then
      error(string.format("gpurent.remote: %s item %d holds a newline or NUL: %q", what or "list", i, v), 2)
    end
    out[i] = v
  end
  return table.concat(out, "\n")
end

return remote
