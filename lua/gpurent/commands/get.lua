-- gpurent get HOST SRC... DST: lua/gpurent/commands/put.lua in the other direction.
local put = require "gpurent.commands.put"

local M = {usage = put.usage_of("get")}

function M.main(args) return put.main_for("get", args) end

return M
