-- gpurent.fs: LuaFileSystem plus the writes gpurent relies on: atomic_write (temp
-- file in the same directory, fsync, rename) and mkdirs. Other lfs functions are
-- reachable through this table too (fs.attributes, fs.dir, ...).
local lfs = require "lfs"
local core = require("gpurent.core").fs

local fs = setmetatable({}, {__index = lfs})

-- fs.atomic_write(path, data [, mode]): the file is either the old one or all of data.
fs.atomic_write = core.atomic_write
fs.fsync = core.fsync
-- fs.writeback(file, offset, len) -> true | nil, why: start writing a flushed range
-- of an open file to disk now (a hint: the final fsync then has less to wait for).
fs.writeback = core.writeback

-- fs.mkdirs(path [, mode]): like mkdir -p; raises naming the component that failed.
function fs.mkdirs(path)
  if type(path) ~= "string" or path == "" then error("fs.mkdirs: path must be a non-empty string", 2) end
  local prefix = path:sub(1, 1) == "/" and "/" or ""
  for part in path:gmatch("[^/]+") do
    prefix = prefix .. part
    local mode = lfs.attributes(prefix, "mode")
    if mode == nil then
      local ok, err = lfs.mkdir(prefix)
      if not ok and lfs.attributes(prefix, "mode") ~= "directory" then
        error("fs.mkdirs " .. path .. ": cannot create " .. prefix .. ": " .. tostring(err), 2)
      end
    elseif mode ~= "directory" then
      error("fs.mkdirs " .. path .. ": " .. prefix .. " exists and is not a directory", 2)
    end
    prefix = prefix .. "/"
  end
  return true
end

function fs.exists(path) return lfs.attributes(path, "mode") ~= nil end
function fs.is_dir(path) return lfs.attributes(path, "mode") == "directory" end

-- fs.read_if_exists(path) -> contents, or nil when it cannot be opened.
function fs.read_if_exists(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local data = f:read("a")
  f:close()
  return data
end

-- fs.read_file(path) -> contents; raises naming the path.
function fs.read_file(path)
  local f, err = io.open(path, "rb")
  if not f then error("fs.read_file: " .. err, 2) end
  local data = f:read("a")
  f:close()
  return data
end

return fs
