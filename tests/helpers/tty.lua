-- tty.lua: drive a program in a real terminal for specs: a tmux server on a private
-- socket, send-keys to type (literal text with -l, so "end" is not the End key),
-- capture-pane to read the screen, bounded waits for what should appear.
local tty = {}
tty.__index = tty

local function sh(cmd)
  local p = io.popen(cmd .. " 2>&1")
  local out = p:read("a")
  local ok = p:close()
  return ok, out
end

-- tty.start(command, {env = "K=V ...", width =, height =}) -> term
function tty.start(command, opts)
  opts = opts or {}
  local self = setmetatable({}, tty)
  self.socket = os.tmpname()
  os.remove(self.socket)
  self.tmux = "tmux -S " .. T.q(self.socket)
  local ok, out = sh(string.format("%s new-session -d -s t -x %d -y %d %s", self.tmux,
    opts.width or 150, opts.height or 50, T.q((opts.env and ("env " .. opts.env .. " ") or "") .. command)))
  assert(ok, "tmux new-session failed: " .. out)
  return self
end

function tty:type(text) sh(self.tmux .. " send-keys -t t -l " .. T.q(text)) end
function tty:keys(...) sh(self.tmux .. " send-keys -t t " .. table.concat({...}, " ")) end
function tty:line(text) self:type(text); self:keys("Enter") end

function tty:screen()
  local _, out = sh(self.tmux .. " capture-pane -p -S -200 -t t")
  return out
end

-- Wait (bounded) until the screen matches pattern; returns the screen or fails.
function tty:wait_for(pattern, seconds, plain)
  local deadline = os.time() + (seconds or 5)
  local screen
  repeat
    screen = self:screen()
    if screen:find(pattern, 1, plain) then return screen end
    os.execute("sleep 0.05")
  until os.time() > deadline
  error("timed out waiting for " .. pattern .. "; screen:\n" .. screen, 2)
end

-- Count of matches of a plain string on the screen.
function tty:count(text)
  local n, i = 0, 1
  local s = self:screen()
  while true do
    local a, b = s:find(text, i, true)
    if not a then return n end
    n, i = n + 1, b + 1
  end
end

function tty:alive()
  local ok = sh(self.tmux .. " has-session -t t")
  return ok == true
end

function tty:close()
  sh(self.tmux .. " kill-server")
  os.remove(self.socket)
end

return tty
