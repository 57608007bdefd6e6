-- gpurent.shell: building POSIX shell command lines safely. quote(s) makes one
-- word of any string (single quotes, with embedded ' closed, escaped, reopened),
-- so remote and local commands never split or expand a path or a value.
local shell = {}

function shell.quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

return shell
