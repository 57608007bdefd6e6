-- gpurent.repl.paths: Tab completion of file paths inside the REPL's string literals
-- and `!cmd` lines. Which side a path lives on follows the call it is typed into:
--   put("LOCAL", "REMOTE")   get("REMOTE", "LOCAL")   sh "... REMOTE"   !cmd ... REMOTE
-- (also as inst:put/get/sh); any other string is a local path, since Lua runs here.
-- Remote directories are listed over the session's SFTP channel: bounded (entries and
-- seconds) and cached for a few seconds, so repeated Tabs cost one round trip.
--
--   paths.context(line, start, text) -> {side = "local"|"remote", token = "dir/pa"} | nil
--   paths.complete(ctx, text, inst) -> {candidate, ...}   (each replaces `text`)
local paths = {}

local MAX_ENTRIES = 2000       -- a directory bigger than this completes from its first entries
local MAX_LINK_STATS = 50      -- symlinks stat'ed to learn whether they lead to a directory
local REMOTE_SECONDS = 3       -- one listing may take this long before it is given up
local CACHE_SECONDS = 10       -- a remote listing is reused this long

local REMOTE_ARGS = {put = 2, get = 1}       -- which argument of put/get is the remote path
local LOCAL_ARGS = {put = 1, get = 2}
local COMMAND_CALLS = {sh = "remote", execute = "local", popen = "local"}

---------------------------------------------------------------- where the cursor is

-- The quote that opens the string the prefix ends inside, or nil when it ends in code.
local function open_quote(prefix)
  local i, n, quote, at = 1, #prefix, nil, nil
  while i <= n do
    local c = prefix:sub(i, i)
    if quote then
      if c == "\\" then i = i + 1 elseif c == quote then quote = nil end
    elseif c == '"' or c == "'" then
      quote, at = c, i
    elseif c == "-" and prefix:sub(i, i + 1) == "--" then
      return nil                                   -- a comment runs to the end
    end
    i = i + 1
  end
  return quote and at or nil
end

-- The called function's last name part and the argument index of the string at q.
local function call_of(before)
  local fname = before:match("([%w_]+)%s*%(?%s*$")
  if fname then return fname, 1 end
  fname = before:match("([%w_]+)%s*%(%s*[\"'][^\"'\\]*[\"']%s*,%s*$")
  if fname then return fname, 2 end
  return nil
end

local function side_of(fname, argi)
  if not fname then return "local" end
  if REMOTE_ARGS[fname] == argi then return "remote" end
  if LOCAL_ARGS[fname] == argi then return "local" end
  return COMMAND_CALLS[fname] or "local"
end

function paths.context(line, start, text)
  local prefix = line:sub(1, start) .. text
  if prefix:sub(1, 1) == "!" then
    return {side = "remote", token = prefix:match("(%S*)$")}
  end
  local q = open_quote(prefix)
  if not q then return nil end
  local content = prefix:sub(q + 1)
  local fname, argi = call_of(prefix:sub(1, q - 1))
  local token = COMMAND_CALLS[fname] and content:match("(%S*)$") or content
  return {side = side_of(fname, argi), token = token}
end

---------------------------------------------------------------- listing

local function home() return os.getenv("HOME") or "" end

local function local_list(dir)
  local lfs = require "lfs"
  local real = dir == "" and "." or dir:gsub("^~/", home() .. "/")
  local out = {}
  local ok, iter, obj = pcall(lfs.dir, real)
  if not ok then return out end
  for name in iter, obj do
    if #out >= MAX_ENTRIES then break end
    if name ~= "." and name ~= ".." then
      out[#out + 1] = {name = name, dir = lfs.attributes(real .. "/" .. name, "mode") == "directory"}
    end
  end
  return out
end

-- An SFTP path for a typed directory: relative paths (and ~/) are the home directory's.
local function sftp_dir(dir)
  if dir == "" or dir == "~/" then return "." end
  return (dir:gsub("^~/", ""))
end

local function sftp_entries(inst, conn, dir, deadline)
  local ssh = require "gpurent.transport.ssh"
  local sftp = inst:sftp_of(conn)
  local h = ssh.run(conn, deadline, "open directory " .. dir, sftp.open, sftp, dir, "d")
  local out, links = {}, 0
  for _ = 1, MAX_ENTRIES do
    local name, attrs = ssh.run(conn, deadline, "readdir " .. dir, h.readdir, h)
    if not name then break end
    if name ~= "." and name ~= ".." then
      local isdir = attrs.type == "directory"
      if attrs.type == "link" and links < MAX_LINK_STATS then
        links = links + 1
        local st = ssh.run(conn, deadline, "stat", sftp.stat, sftp, dir .. "/" .. name)
        isdir = type(st) == "table" and st.type == "directory"
      end
      out[#out + 1] = {name = name, dir = isdir}
    end
  end
  pcall(ssh.run, conn, deadline, "close directory", h.close, h)
  return out
end

local cache = {}

local function remote_list(inst, dir)
  local key = tostring(inst) .. "\0" .. dir
  local now = require("gpurent.util.sys").now()
  local hit = cache[key]
  if hit and now - hit.at < CACHE_SECONDS then return hit.entries end
  local ok, entries = pcall(inst.with_session, inst, true, function(conn)
    return sftp_entries(inst, conn, sftp_dir(dir), now + REMOTE_SECONDS)
  end)
  entries = ok and entries or {}
  cache[key] = {at = now, entries = entries}
  return entries
end

---------------------------------------------------------------- candidates

function paths.complete(ctx, text, inst)
  local dir, base = ctx.token:match("^(.*/)([^/]*)$")
  if not dir then dir, base = "", ctx.token end
  if ctx.side == "remote" and not inst then return {} end
  local entries = ctx.side == "remote" and remote_list(inst, dir) or local_list(dir)
  local out = {}
  for _, e in ipairs(entries) do
    local hidden_ok = base:sub(1, 1) == "." or e.name:sub(1, 1) ~= "."
    if hidden_ok and e.name:sub(1, #base) == base then
      local full = dir .. e.name .. (e.dir and "/" or "")
      -- readline replaces only `text` (the part after its last word break)
      out[#out + 1] = full:sub(#ctx.token - #text + 1)
    end
  end
  table.sort(out)
  return out
end

return paths
