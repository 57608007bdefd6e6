-- setup.lua: loaded by busted before the specs. Gives specs a handle on the binary
-- under test and small helpers to run it as a user would (a child process).
local T = {}
local lfs = require "lfs"

T.root = lfs.currentdir()
T.bin = os.getenv("GPURENT_BIN") or (T.root .. "/gpurent")
if T.bin:sub(1, 1) ~= "/" then T.bin = T.root .. "/" .. T.bin:gsub("^%./", "") end

-- The runner is itself gpurent, and a gpurent started by a gpurent may not take
-- `--approve` (runtime/approval.c walks the parent chain for the same executable).
-- The specs play the person typing commands, so they run a private copy of the
-- binary (a different file, beside symlinks to lua/, profiles/ and recipes/ so it
-- finds the same library). security_spec runs T.bin_nested = the runner's own file.
do
  local function same_file(a, b)
    local x, y = lfs.attributes(a), lfs.attributes(b)
    return x and y and x.dev == y.dev and x.ino == y.ino
  end
  -- the runner's own file (the test host, or T.bin itself under make asan/valgrind)
  local f = io.popen("readlink /proc/" .. require("gpurent.core").sys.getpid() .. "/exe")
  T.bin_nested = f:read("l") or T.bin
  f:close()
  if same_file(T.bin, "/proc/self/exe") then
    local dir = T.root .. "/build/spec-bin"
    local name = T.bin:match("[^/]+$")
    os.execute("mkdir -p '" .. dir .. "'")
    for _, d in ipairs{"lua", "profiles", "recipes"} do
      if not lfs.symlinkattributes(dir .. "/" .. d) then os.execute("ln -s ../../" .. d .. " '" .. dir .. "/" .. d .. "'") end
    end
    local tmp = string.format("%s/.%s.%d", dir, name, require("gpurent.core").sys.getpid())
    assert(os.execute(string.format("cp '%s' '%s' && mv -f '%s' '%s/%s'", T.bin, tmp, tmp, dir, name)),
      "setup.lua: cannot copy the binary under test to " .. dir)
    T.bin = dir .. "/" .. name
  end
end

-- Set by `make asan`: RSS and core-file checks measure the sanitizer, not gpurent.
T.sanitizer = os.getenv("GPURENT_SANITIZER")

local function shell_quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end
T.q = shell_quote

-- T.run(args_string [, opts]) runs gpurent in a shell; returns code, stdout, stderr.
function T.run(args, opts)
  opts = opts or {}
  local out, err = os.tmpname(), os.tmpname()
  local cmd = string.format("%s%s %s >%s 2>%s", opts.env and (opts.env .. " ") or "",
    shell_quote(opts.bin or T.bin), args, out, err)
  if opts.cwd then cmd = "cd " .. shell_quote(opts.cwd) .. " && " .. cmd end
  if opts.stdin then cmd = cmd .. " <" .. shell_quote(opts.stdin) else cmd = cmd .. " </dev/null" end
  local _, _, code = os.execute(cmd)
  local function slurp(p) local f = io.open(p, "rb"); local s = f:read("a"); f:close(); os.remove(p); return s end
  return code, slurp(out), slurp(err)
end

-- T.tmpdir() -> a fresh directory removed by T.rmtree
function T.tmpdir()
  local p = os.tmpname()
  os.remove(p)
  assert(lfs.mkdir(p))
  return p
end

function T.rmtree(p)
  if p and p:match("^/tmp/") then os.execute("rm -rf " .. shell_quote(p)) end
end

function T.write(path, data)
  local f = assert(io.open(path, "wb"))
  f:write(data)
  f:close()
  return path
end

function T.read(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

_G.T = T
return T
