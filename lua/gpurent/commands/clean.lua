-- gpurent clean HOST: what fills an instance's tiers (seed AD5/AD4), and the deletion
-- of exact targets the person names, behind their approval. The listing: the hogs
-- storage.hogs measures (each tier's top-level entries, for context, and the
-- profile's hog_globs - the HF cache reached through its symlink), the directories
-- holding many files (inodes), and stale checkpoints (scratch of runs no wrapper runs
-- anymore, checkpoints of quarantined capsules). Only the listed targets can be
-- deleted, each named exactly with --delete; anything else is refused and nothing is
-- deleted. Approval is gpurent.lifecycle.gate's (--approve HOST, or the name typed on
-- the terminal): gpurent never infers what to delete.
local cli = require "gpurent.cli"
local errors = require "gpurent.util.errors"
local json = require "gpurent.util.json"
local storage = require "gpurent.lifecycle.storage"
local profile_mod = require "gpurent.config.profile"
local remote = require "gpurent.remote"

local M = {summary = "list an instance's space and inode hogs; delete exact listed targets with approval"}
M.usage = [[usage: gpurent clean HOST [--min-files N] [--json] [--profile NAME] [--ssh-config FILE]
       gpurent clean HOST --delete PATH... [--approve HOST] [--min-files N] [--profile NAME]
Lists what fills HOST's tiers, in bytes and in inodes:
  hf-cache  the profile's hog globs (the HF model cache, followed through its symlink)
  inodes    directories holding at least N entries (default 1000; per-sample visualisations)
  stale     scratch checkpoints of finished runs, checkpoints of quarantined capsules
and, for context only (never a target), each tier's largest top-level entries.
--delete PATH...: delete exactly these paths, each one a target of the listing (re-read
now); any other path is refused and nothing is deleted. Needs approval: --approve HOST
on this command line, or HOST typed when asked on the terminal.
Exit: 0 listed (or every named target deleted), 1 a deletion failed, 2 usage, 3 refused.]]

local function default_profile(host)
  return require("gpurent.platform").profile_for_host(host, host) or "generic-ssh"
end

-- A profile glob ("/root/.cache/huggingface/hub/models--*") as a Lua pattern.
local function glob_pattern(g)
  return "^" .. g:gsub("[%^%$%(%)%%%.%[%]%+%-]", "%%%0"):gsub("%*", "[^/]*"):gsub("%?", "[^/]") .. "$"
end

local function run_roots(p)
  local cp = p.checkpoints or {}
  local parent, suffix = (cp.run_root or ""):match("^(.-)/{project}(.*)$")
  local live_root = cp.live_dir and cp.live_dir:match("^(.*)/{name}$")
  return parent or "", suffix or "", live_root or ""
end

-- The listing: {targets = {{kind, path, bytes|files, why}}, context = {hogs}, tiers = reading}.
function M.list(inst, p, o)
  o = o or {}
  local names = {}
  for _, t in ipairs(profile_mod.tier_list(p)) do if t.path ~= "/" then names[#names + 1] = t.name end end
  local reading = storage.measure(inst, {profile = p, tiers = names})
  local hogs = storage.hogs(inst, {profile = p, top = 200})
  local globs = {}
  for _, g in ipairs(p.storage and p.storage.hog_globs or {}) do globs[#globs + 1] = glob_pattern(g) end
  local targets, context = {}, {}
  for _, h in ipairs(hogs) do
    local is_glob = false
    for _, pat in ipairs(globs) do if h.path:match(pat) then is_glob = true end end
    if is_glob then
      targets[#targets + 1] = {kind = "hf-cache", path = h.path, bytes = h.bytes, tier = h.tier,
        why = "model cache" .. (h.via_symlink and (" (on the " .. tostring(h.tier) .. " tier via " .. h.real .. ")") or "") ..
          ": re-downloadable"}
    elseif #context < (o.context or 8) then
      context[#context + 1] = h
    end
  end
  local tier_paths = {}
  for _, n in ipairs(names) do tier_paths[#tier_paths + 1] = p.tiers[n].path end
  local parent, suffix, live_root = run_roots(p)
  local res = inst:sh(remote.script("clean_list", {TIERS = remote.lines(tier_paths, "clean: tiers"),
    MIN_FILES = o.min_files or 1000, SCRATCH = remote.lines(p.checkpoints and p.checkpoints.scratch or {}, "clean: scratch"),
    RUN_PARENT = parent, RUN_SUFFIX = suffix, LIVE_ROOT = live_root}), {timeout = o.timeout or 600, idempotent = true})
  if not res.stdout:match("\ndone\n?$") and not res.stdout:match("^done\n?$") then
    error("clean: the listing on " .. tostring(inst) .. " did not finish (exit " .. tostring(res.code) .. "): " ..
      (res.stderr or ""), 0)
  end
  for line in res.stdout:gmatch("[^\n]+") do
    local n, path = line:match("^many (%d+) (.+)$")
    if n then
      targets[#targets + 1] = {kind = "inodes", path = path, files = tonumber(n), why = "many files (inodes)"}
    end
    local bytes, spath, why = line:match("^stale\t(%d+)\t([^\t]+)\t(.+)$")
    if bytes then targets[#targets + 1] = {kind = "stale", path = spath, bytes = tonumber(bytes), why = why} end
  end
  return {targets = targets, context = context, tiers = reading.tiers, names = names}
end

local function print_list(host, l)
  io.write(string.format("tiers of %s (bytes AND inodes):\n", host))
  for _, n in ipairs(l.names) do
    local t = l.tiers[n]
    io.write(string.format("  %-8s %-20s bytes %s free of %s (%s%% used); inodes %s free of %s (%s%% used)\n", n, t.path,
      storage.human(t.bytes_free), storage.human(t.bytes_total), tostring(t.bytes_pct or "?"), tostring(t.inodes_free or "?"),
      tostring(t.inodes_total or "?"), tostring(t.inodes_pct or "?")))
  end
  if #l.targets == 0 then
    io.write("deletable targets: none found\n")
  else
    io.write("deletable targets (delete only by naming each exactly: gpurent clean " .. host .. " --delete PATH ...):\n")
    for _, x in ipairs(l.targets) do
      local size = x.files and (x.files .. " files") or storage.human(x.bytes)
      io.write(string.format("  %-8s %12s  %s  (%s)\n", x.kind, size, x.path, x.why))
    end
  end
  if #l.context > 0 then
    io.write("largest entries per tier (context, not targets):\n")
    for _, h in ipairs(l.context) do
      io.write(string.format("  %-8s %12s  %s\n", tostring(h.tier or "?"), storage.human(h.bytes), h.path))
    end
  end
end

local function delete(inst, host, p, l, paths)
  local listed = {}
  for _, x in ipairs(l.targets) do listed[x.path] = x end
  local bad = {}
  for _, path in ipairs(paths) do
    if not listed[path] then bad[#bad + 1] = path end
  end
  if #bad > 0 then
    errors.refuse(string.format("clean: not a listed target on %s: %s (each --delete PATH must be exactly one " ..
      "path of `gpurent clean %s`'s deletable targets); nothing was deleted", host, table.concat(bad, ", "), host), 0)
  end
  local lines = {}
  for _, path in ipairs(paths) do
    local x = listed[path]
    lines[#lines + 1] = string.format("%s (%s, %s)", path, x.kind, x.files and (x.files .. " files") or storage.human(x.bytes))
  end
  io.stderr:write("clean: about to delete on " .. host .. ":\n  " .. table.concat(lines, "\n  ") .. "\n")
  require("gpurent.lifecycle.gate").check{action = "delete_files", instance = host, targets = paths,
    profile_name = p.platform, out = io.stderr}
  local res = inst:sh(remote.script("clean_delete", {PATHS = remote.lines(paths, "clean: paths")}), {timeout = 1800})
  local failed = 0
  for line in res.stdout:gmatch("[^\n]+") do
    io.write(line, "\n")
    if line:match("^bad ") then failed = failed + 1 end
  end
  return failed == 0 and 0 or 1
end

function M.main(args)
  local opts, pos = cli.options(args, {delete = "flag", min_files = "value", json = "flag", profile = "value",
    ssh_config = "value", accept_new_host = "flag"}, M.usage)
  if opts.help then io.write(M.usage, "\n"); return 0 end
  local host = pos[1]
  if not host then errors.usage(M.usage, 0) end
  local paths = {}
  for i = 2, #pos do paths[#paths + 1] = pos[i] end
  if opts.delete and #paths == 0 then errors.usage("clean: --delete needs at least one PATH (a listed target)", 0) end
  if not opts.delete and #paths > 0 then
    errors.usage("clean: " .. paths[1] .. ": paths are only taken after --delete (gpurent clean HOST --delete PATH ...)", 0)
  end
  if opts.delete and opts.json then errors.usage("clean: --json lists; it does not go with --delete", 0) end
  local min_files = opts.min_files and tonumber(opts.min_files)
  if opts.min_files and (not min_files or min_files < 1 or min_files % 1 ~= 0) then
    errors.usage("clean: --min-files " .. opts.min_files .. " is not a positive integer", 0)
  end
  local p = profile_mod.load(opts.profile or default_profile(host))
  local inst = gpurent.connect(host, {config = opts.ssh_config, accept_new_host = opts.accept_new_host,
    accept_flag = "--accept-new-host"})
  inst.profile = p
  local l = M.list(inst, p, {min_files = min_files})
  if opts.delete then return delete(inst, host, p, l, paths) end
  if opts.json then
    io.write(json.encode_stable({host = host, targets = json.array(l.targets), context = json.array(l.context)}), "\n")
    return 0
  end
  print_list(host, l)
  return 0
end

return M
