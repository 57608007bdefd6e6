-- summary_output.lua: busted's plain terminal output, closed by the line CI reads:
-- "N passed, N failed, N skipped". Errors outside tests count as failed; a run that
-- executed no test fails.
return function(options)
  local busted = require "busted"
  local handler = require "busted.outputHandlers.plainTerminal" (options)
  busted.subscribe({"suite", "end"}, function()
    local passed = handler.successesCount
    local failed = handler.failuresCount + handler.errorsCount
    io.write(string.format("\n%d passed, %d failed, %d skipped\n", passed, failed, handler.pendingsCount))
    io.flush()
    if passed + failed == 0 then
      io.stderr:write("busted: no test was executed\n")
      os.exit(1)
    end
    return nil, true
  end)
  return handler
end
