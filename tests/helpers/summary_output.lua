-- summary_output.lua: busted's plain terminal output, closed by the line CI reads:
-- "N passed, N failed, N skipped". Errors outside tests count as failed; a run that
-- executed no test fails. Before it, the slowest spec files' wall times, so the suite's
-- time budget (well under 15 minutes in CI) is watched in every run. After them, one
-- "FAILED file:line name: message" line per failure or error, so that the tail of a
-- CI log (all a CI report may keep) names what failed; tests/run_lanes.sh repeats them.
local function failed_line(f)
  local t = f.trace or (f.element and f.element.trace) or {}
  local msg = tostring(f.message or ""):match("^[^\n]*"):sub(1, 240)
  return string.format("FAILED %s:%s %s: %s\n", t.short_src or "?", t.currentline or "?", f.name or "?", msg)
end

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
    for _, list in ipairs({handler.failures, handler.errors}) do
      for _, f in ipairs(list) do io.write(failed_line(f)) end
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
