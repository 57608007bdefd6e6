-- gpurent.state.dir: where gpurent keeps its state ($GPURENT_STATE_DIR, else
-- $XDG_STATE_HOME/gpurent, else ~/.local/state/gpurent), and the "pending" marker
-- beside the ledger. The marker exists while the ledger holds work for the start of
-- every command (an open danger clock to remind of, a held notification to send):
-- checking it costs one stat, so a command with nothing due never loads the ledger
-- (start-up stays under its time and memory targets). Loaded at every start: no
-- SQLite, no other gpurent module.
--
--   dir.path() -> the state dir          dir.ledger_path() -> dir.path()/ledger.sqlite
--   dir.marker(ledger_path) -> its marker file
--   dir.has_pending([ledger_path]) -> bool
--   dir.mark_pending(ledger_path) / dir.clear_pending(ledger_path)   (best effort)
local dir = {}

local function env(k)
  local v = os.getenv(k)
  return v ~= "" and v or nil
end

function dir.path()
  if env("GPURENT_STATE_DIR") then return env("GPURENT_STATE_DIR") end
  local base = env("XDG_STATE_HOME") or ((env("HOME") or error("gpurent: HOME is not set", 0)) .. "/.local/state")
  return base .. "/gpurent"
end

function dir.ledger_path() return dir.path() .. "/ledger.sqlite" end

function dir.marker(ledger_path) return (ledger_path or dir.ledger_path()) .. ".pending" end

function dir.has_pending(ledger_path)
  local ok, path = pcall(dir.marker, ledger_path)
  local f = ok and io.open(path, "r")
  if f then f:close(); return true end
  return false
end

function dir.mark_pending(ledger_path)
  local f = io.open(dir.marker(ledger_path), "w")
  if f then f:close() end
end

function dir.clear_pending(ledger_path) os.remove(dir.marker(ledger_path)) end

return dir
