-- summary_output.lua: busted's plain terminal output, closed by the line CI reads:
-- "N passed, N failed, N skipped". Errors outside tests count as failed; a run that
-- executed no test fails. Before it, the slowest spec files' wall times, so the suite's
-- time budget (well under 15 minutes in CI) is watched in every run.
return function(options)
  local busted = require "busted"
  local handler = require "busted.outputHandlers.plainTerminal" (options)
  local clock = require("gpurent.core").sys.now
  local files, started = {}, nil
  busted.subscribe({"file", "start"}, function() started = clock(); return nil, true end)
  busted.subscribe({"file", "end"}, function(file)
    if started then files[#files + 1] = {name = file.name, seconds = clock() - started} end
    return nil, true
  end)
  busted.subscribe({"suite", "end"}, function()
    table.sort(files, function(a, b) return a.seconds > b.seconds end)
    if #files > 1 then
      io.write("\nslowest spec files:")
      for i = 1, math.min(10, #files) do io.write(string.format("\n  %6.1fs %s", files[i].seconds, files[i].name)) end
      io.write("\n")
    end
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
