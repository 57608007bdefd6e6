-- deadput.lua: what a put killed mid-transfer leaves on the box, for the specs of the
-- put that comes next: its lock, naming a process of this machine that is gone, and
-- a process still holding the .part open that writes into it late (as the SFTP
-- server of the dead put does while the link delivers what was in flight).
local lfs = require "lfs"
local core = require "gpurent.core"

local deadput = {}

local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

-- The lock <final>.part.lock of a put whose process (on this machine) is gone.
function deadput.lock(final)
  local me = require("gpurent.transport.lock").identity()
  local p = io.popen("sh -c 'echo $$'")
  local dead = p:read("l")
  p:close()
  local ok, err = lfs.link(string.format("gpurent-lock host=%s pid=%s start=1 boot=%s nonce=ab since=1700000000",
    me.host, dead, me.boot), final .. ".part.lock", true)
  if not ok then error("deadput.lock: " .. tostring(err), 2) end
end

-- A process holding part open that writes 16 bytes at its start once final exists,
-- or after 3 s (bounded either way). flag: a path it creates once part is open;
-- returns once it did (bounded: 5 s).
function deadput.late_writer(part, final, flag)
  assert(os.execute(string.format("(exec 3<>%s; : > %s; i=0; while [ ! -e %s ] && [ $i -lt 60 ]; do sleep 0.05; " ..
    "i=$((i+1)); done; printf 'XXXXXXXXXXXXXXXX' >&3) >/dev/null 2>&1 &", q(part), q(flag), q(final))))
  for _ = 1, 250 do
    if lfs.attributes(flag) then return end
    core.sys.sleep(0.02)
  end
  error("deadput.late_writer: the writer did not start", 2)
end

return deadput
