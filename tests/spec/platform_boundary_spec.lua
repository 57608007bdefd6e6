-- platform_boundary_spec: AutoDL knowledge lives behind the platform seam (issue 20).
-- Generic code (lua/gpurent/ and runtime/) names no AutoDL literal; what is
-- AutoDL-specific sits in the AutoDL platform (lua/gpurent/platform/autodl.lua or
-- lua/gpurent/platform/autodl/), its gotcha module (lua/gpurent/gotchas/autodl.lua), the
-- profiles (profiles/, not scanned) and the tests. The AutoDL platform owns no remote
-- script. Generic code reaches the platform through gpurent.platform.of(profile).
--
-- The literals (from the seed, /work/shared/seed/autodl-profile.md), case-insensitive:
--   autodl (the name, api.autodl.com, /root/autodl-fs, /root/autodl-tmp, AUTODL_TOKEN),
--   seetacloud (the SSH gateway), network_turbo (the proxy script), autopanel (the
--   in-container monitor), tf-logs (the pinned TensorBoard dir), wechat (its push
--   channel), and the console's words 关机 开机 释放 无卡模式 免密登录.
-- Allowed: a recipe's name, lowercase `autodl_<name>` (recipes/autodl_train.lua is a
-- file name a person types, not knowledge of the platform).
local fs = require "gpurent.util.fs"

local LITERALS = {"autodl", "seetacloud", "network_turbo", "autopanel", "tf-logs", "wechat",
                  "关机", "开机", "释放", "无卡模式", "免密登录"}

local OWNED = {               -- paths relative to the root, prefixes end in '/'
  "lua/gpurent/platform/autodl.lua", "lua/gpurent/platform/autodl/", "lua/gpurent/gotchas/autodl.lua",
}

local function owned(rel)
  for _, o in ipairs(OWNED) do
    if rel == o or (o:sub(-1) == "/" and rel:sub(1, #o) == o) then return true end
  end
  return false
end

local function walk(dir, rel, out)
  for f in fs.dir(dir) do
    if f ~= "." and f ~= ".." then
      local path, r = dir .. "/" .. f, rel .. "/" .. f
      if fs.is_dir(path) then walk(path, r, out)
      elseif f:match("%.lua$") or f:match("%.sh$") or f:match("%.[ch]$") then out[#out + 1] = r:sub(2) end
    end
  end
  return out
end

-- The hits of one line: each literal found after the allowed recipe names are blanked.
local function hits(line)
  local low = line:gsub("autodl_%l", "______"):lower()
  local found = {}
  for _, lit in ipairs(LITERALS) do
    if low:find(lit, 1, true) then found[#found + 1] = lit end
  end
  return found
end

local function scan(root, tops)
  local report = {}
  for _, top in ipairs(tops) do
    local files = walk(root .. "/" .. top, "/" .. top, {})
    table.sort(files)
    for _, rel in ipairs(files) do
      if not owned(rel) then
        local n = 0
        for line in io.lines(root .. "/" .. rel) do
          n = n + 1
          local h = hits(line)
          if #h > 0 then report[#report + 1] = string.format("%s:%d: %s: %s", rel, n, table.concat(h, ","), line:match("^%s*(.-)%s*$")) end
        end
      end
    end
  end
  return report
end

describe("the platform boundary", function()
  it("no AutoDL literal in lua/gpurent/ or runtime/ outside the AutoDL platform and its gotchas", function()
    local report = scan(T.root, {"lua/gpurent", "runtime"})
    assert.are.equal("", table.concat(report, "\n"),
      #report .. " AutoDL literal(s) outside platform/autodl*, gotchas/autodl.lua " ..
      "(move the knowledge into the platform, reached through gpurent.platform.of):\n" .. table.concat(report, "\n"))
  end)

  it("the check sees a literal, names file and line, and spares recipe names", function()
    local dir = T.tmpdir()
    for _, d in ipairs({"/lua/gpurent/platform/autodl", "/lua/gpurent/commands", "/runtime"}) do fs.mkdirs(dir .. d) end
    T.write(dir .. "/lua/gpurent/commands/x.lua", "-- run autodl_train\nlocal h = 'connect.x.SeetaCloud.com'\n")
    T.write(dir .. "/lua/gpurent/platform/autodl/api.lua", "local u = 'https://api.autodl.com'\n")
    T.write(dir .. "/runtime/y.c", "/* 关机 */\n")
    local report = scan(dir, {"lua/gpurent", "runtime"})
    assert.are.same({"lua/gpurent/commands/x.lua:2: seetacloud: local h = 'connect.x.SeetaCloud.com'",
                     "runtime/y.c:1: 关机: /* 关机 */"}, report)
    T.rmtree(dir)
  end)

  it("generic code never requires a platform module by name", function()
    local report = {}
    for _, top in ipairs({"lua/gpurent"}) do
      for _, rel in ipairs(walk(T.root .. "/" .. top, "/" .. top, {})) do
        if not rel:match("^lua/gpurent/platform/") then
          local n = 0
          for line in io.lines(T.root .. "/" .. rel) do
            n = n + 1
            if line:match("require%s*%(?%s*[\"']gpurent%.platform%.") then report[#report + 1] = rel .. ":" .. n .. ": " .. line end
          end
        end
      end
    end
    assert.are.equal("", table.concat(report, "\n"))
  end)
end)
