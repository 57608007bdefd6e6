-- gpurent put HOST SRC... DST and gpurent get HOST SRC... DST (commands/get.lua is
-- this module with the other direction): files and directory trees over gpurent's
-- own connection, with the guarantees of gpurent.transfer (lua/gpurent/transport/transfer.lua):
-- .part + rename, the destination lock, resume, mode and mtime, every file's SHA-256
-- verified on both ends (by default here), trees with many files in flight (a rerun
-- skips what is already there, by size and SHA-256), a large file over several
-- streams on a long link. The "done" JSON line counts the file data sent.
local cli = require "gpurent.cli"
local errors = require "gpurent.util.errors"

local M = {}

local USAGE = [[usage: gpurent %s HOST SRC... DST [--json] [--dry-run] [--no-verify] [--no-resume]
                   [--streams N] [--lock-wait S] [--compress] [--accept-new-host]
%s
HOST is an ssh_config alias or user@host:port. A directory is copied with its whole
tree (symlinks recreated as symlinks, FIFOs/sockets/devices skipped with a line on
stderr), many files in flight at once. When DST is an existing directory each SRC
lands inside it under its own name; with several SRCs it must be one.
Each file is written to DST.part and renamed when complete; a rerun after an
interruption resumes every .part whose prefix hashes the same on both sides.
Every file's SHA-256 is verified on both ends unless --no-verify. Sending a tree
again skips every file whose copy has the same size and SHA-256, and sends only
the new bytes of one that grew (--no-resume sends everything).
--json        one JSON object per line on stdout: a "file" line per file moved, then a
              "done" line (or an "error" line); progress lines as JSON on stderr
--dry-run     list what would move (a "plan" line per file with --json); moves nothing
--no-resume   start every file from its first byte
--streams N   SFTP channels in flight at once (1-8): a tree's files spread over them
              (default 4); a large file's blocks too (default: chosen from the
              round-trip time and the window, one stream on a short link)
--lock-wait S wait up to S seconds for another transfer's lock on a destination file
--compress    zlib compression on the connection (for logs, JSON, source: text that
              shrinks; default: ssh_config's Compression for HOST)
A progress line (bytes, files, rate, ETA) is drawn on stderr when it is a terminal.
Exit codes: 0 all moved (and verified); 1 a transfer failed (what moved is kept, the
rest is left as .part for a rerun); 2 usage; 3 host key refused; 130 interrupted.]]

local WHAT = {
  put = "Copies local SRC files and directories to DST on HOST.",
  get = "Copies SRC files and directories on HOST to the local DST.",
}

function M.usage_of(verb) return string.format(USAGE, verb, WHAT[verb]) end
M.usage = M.usage_of("put")

local function parse(verb, args)
  local usage = M.usage_of(verb)
  local opts, pos = cli.options(args, {json = "flag", dry_run = "flag", no_verify = "flag", no_resume = "flag",
    streams = "value", lock_wait = "value", compress = "flag", accept_new_host = "flag"}, usage)
  if #pos < 3 then errors.usage(verb .. " needs HOST, at least one SRC and DST\n" .. usage, 0) end
  if pos[1]:sub(1, 1) == "-" then errors.usage(verb .. ": HOST " .. pos[1] .. " looks like an option\n" .. usage, 0) end
  local function number(name, lo, hi)
    local v = opts[name]
    if v == nil then return nil end
    local n = tonumber(v)
    if not n or n < lo or n > hi or n ~= n then
      errors.usage(string.format("%s: --%s %q: give a number from %s to %s", verb, name:gsub("_", "-"), v, lo, hi), 0)
    end
    return n
  end
  local streams = number("streams", 1, 8)
  local lock_wait = number("lock_wait", 0, 86400)
  local srcs = table.move(pos, 2, #pos - 1, 1, {})
  return pos[1], srcs, pos[#pos], {json = opts.json, dry_run = opts.dry_run, verify = not opts.no_verify,
    resume = not opts.no_resume, streams = streams, lock_wait = lock_wait, accept_new_host = opts.accept_new_host,
    compress = opts.compress or nil}
end

local function emit(t)
  io.stdout:write(require("gpurent.util.json").encode(t), "\n")
  io.stdout:flush()
end

local function run(verb, host, srcs, dst, o)
  local transfer = require "gpurent.transport.transfer"
  local lfs = require "lfs"
  local inst = require("gpurent.transport.instance").connect(host, {accept_new_host = o.accept_new_host,
    compress = o.compress})
  local t0 = gpurent.now()
  local files, bytes, sent = 0, 0, 0
  local compression = inst:compression()
  if o.compress and compression == "none" then   -- the server chose: said, not hidden
    io.stderr:write(string.format("gpurent: %s: %s declined compression (its sshd has Compression no): " ..
      "moving uncompressed\n", verb, host))
  end
  local ok, err = pcall(function()
    if #srcs > 1 then   -- several sources: DST must be a directory to put them in
      local isdir
      if verb == "put" then
        local st = transfer._remote_stat(inst, dst)
        isdir = st and st.type == "directory"
      else
        isdir = lfs.attributes(dst, "mode") == "directory"
      end
      if not isdir then error(string.format("%s: %s is not an existing directory%s: with several SRCs, DST must be one",
        verb, dst, verb == "put" and (" on " .. host) or ""), 0) end
    end
    local topts = {verify = o.verify, resume = o.resume, streams = o.streams, lock_wait = o.lock_wait,
      progress = o.json and "json" or nil}
    for _, src in ipairs(srcs) do
      if o.dry_run then
        for _, p in ipairs(transfer.plan(inst, verb, src, dst)) do
          files, bytes = files + (p.type == "file" and 1 or 0), bytes + (p.size or 0)
          if o.json then emit({event = "plan", op = verb, type = p.type, src = p.src, dst = p.dst, bytes = p.size})
          else print(string.format("%s %s %s -> %s%s", verb, p.type, p.src, p.dst, p.size and ("  " .. p.size .. " bytes") or "")) end
        end
      else
        local r = transfer[verb](inst, src, dst, topts)
        local list = r.files or {r}
        for _, f in ipairs(list) do
          files, bytes, sent = files + 1, bytes + f.bytes, sent + (f.sent or 0)
          if o.json then
            emit({event = "file", op = verb, path = f.path, bytes = f.bytes, sent = f.sent,
              resumed_from = f.resumed_from, sha256 = f.sha256, verified = f.verified or false,
              unchanged = f.unchanged or nil, streams = f.streams})
          end
        end
        if o.json then
          for _, l in ipairs(r.links or {}) do emit({event = "link", op = verb, path = l.path, target = l.target}) end
          for _, s in ipairs(r.skipped or {}) do emit({event = "skipped", op = verb, path = s.path, type = s.type}) end
        end
      end
    end
  end)
  inst:close()
  if not ok then error(err, 0) end
  local elapsed = gpurent.now() - t0
  if o.json then
    emit({event = "done", op = verb, dry_run = o.dry_run or false, files = files, bytes = bytes,
      sent = not o.dry_run and sent or nil,
      elapsed = elapsed, verified = (o.verify and not o.dry_run) or false, compression = compression})
  elseif not o.dry_run then
    io.stderr:write(string.format("%s: %d file(s), %d bytes (%d sent) in %.2fs%s\n", verb, files, bytes, sent, elapsed,
      o.verify and ", SHA-256 verified on both ends" or ""))
  end
end

function M.main_for(verb, args)
  local host, srcs, dst, o = parse(verb, args)
  local ok, r = pcall(run, verb, host, srcs, dst, o)
  if ok then return 0 end
  if errors.has_own_exit(r) then error(r, 0) end
  local msg = errors.message(r)
  if o.json then emit({event = "error", op = verb, message = msg}) end
  io.stderr:write("gpurent: ", verb, " ", host, ": ", msg, "\n")
  return 1
end

function M.main(args) return M.main_for("put", args) end

return M
