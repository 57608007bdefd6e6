-- repl_spec: `gpurent repl` driven through a real terminal (tmux): completion,
-- multi-line input, readable results, errors that keep it alive, Ctrl-C, history
-- that never keeps a secret, Ctrl-D. The remote half (!cmd, reconnect) is in
-- repl_remote_spec.lua, against a real sshd.
local tty = require "tty"

describe("gpurent repl (local)", function()
  local term, state
  before_each(function()
    state = T.tmpdir()
    term = tty.start(T.q(T.bin) .. " repl --local", {env = "GPURENT_STATE_DIR=" .. T.q(state)})
    term:wait_for("local>", 5, true)
  end)
  after_each(function()
    term:close()
    T.rmtree(state)
  end)

  it("prints bare expressions and =expr, tables pretty-printed", function()
    term:line("t = {1, 2, name = 'box', nested = {x = 1}}")
    term:line("t")
    term:wait_for('name = "box",', 5, true)
    term:line("=6*7")
    term:wait_for("\n42\n", 5, true)
    assert.matches("nested = {\n +x = 1,", term:screen())
  end)

  it("continues an incomplete statement on the next line", function()
    term:line("for i = 1, 3 do")
    term:wait_for(">>", 5, true)
    term:line("io.write('row', i, ' ')")
    term:line("end")
    term:wait_for("row1 row2 row3", 5, true)
  end)

  it("keeps running after an error and after Ctrl-C of a busy loop", function()
    term:line("error('deliberate')")
    term:wait_for("stdin:1: deliberate", 5, true)
    term:line("while true do end")
    os.execute("sleep 0.3")
    term:keys("C-c")
    term:wait_for("interrupted", 5, true)
    term:line("print('still' .. 'here')")
    term:wait_for("stillhere", 5, true)
    assert.is_true(term:alive())
  end)

  it("completes globals, module fields and methods with Tab", function()
    term:type("gpurent.share_d")
    term:keys("Tab")
    term:wait_for("gpurent.share_dir", 5, true)
    term:keys("C-u")
    term:line("box = setmetatable({}, {__index = {frobnicate = function() end, fry = 1}})")
    term:type("box:fro")
    term:keys("Tab")
    term:wait_for("box:frobnicate", 5, true)
    term:keys("C-u")
    term:type("string.up")
    term:keys("Tab")
    term:wait_for("string.upper", 5, true)
  end)

  it("help prints the helpers; exit and quit leave, bare or called", function()
    term:line("help")
    term:wait_for("gotchas()          the gotchas the profile checks", 5, true)
    assert.is_nil(term:screen():find("\nnil\n", 1, true), term:screen())
    -- a name the person reassigned is theirs again
    term:line("help = 41 + 1")
    term:line("help")
    term:wait_for("\n42\n", 5, true)
    for _, word in ipairs({"exit", "quit()"}) do
      term:line(word)
      local deadline = os.time() + 5
      while term:alive() and os.time() <= deadline do os.execute("sleep 0.05") end
      assert.is_false(term:alive(), word .. " did not leave the REPL")
      if word == "exit" then
        term = tty.start(T.q(T.bin) .. " repl --local", {env = "GPURENT_STATE_DIR=" .. T.q(state)})
        term:wait_for("local>", 5, true)
      end
    end
  end)

  it("completes local paths inside strings with Tab", function()
    local dir = T.tmpdir()
    os.execute("mkdir " .. T.q(dir .. "/results-dir") .. " && touch " .. T.q(dir .. "/notes-file.txt"))
    term:type('f = io.open("' .. dir .. '/res')
    term:keys("Tab")
    term:wait_for(dir .. "/results-dir/", 5, true)
    term:keys("C-u")
    term:type('put("' .. dir .. '/note')
    term:keys("Tab")
    term:wait_for('put("' .. dir .. '/notes-file.txt', 5, true)
    -- names still complete outside strings
    term:keys("C-u")
    term:type("string.up")
    term:keys("Tab")
    term:wait_for("string.upper", 5, true)
    T.rmtree(dir)
  end)

  it("keeps lines that create or use a secret out of the history file", function()
    term:line("token = gpurent.secret and gpurent.secret('hunter2') or require('gpurent.util.secret').new('hunter2')")
    term:line("tok2 = token")
    term:line("print(token)")
    term:wait_for("***", 5, true)
    term:line("plain = 41 + 1")
    term:keys("C-d")
    local deadline = os.time() + 5
    while term:alive() and os.time() < deadline do os.execute("sleep 0.05") end
    assert.is_false(term:alive(), "Ctrl-D did not leave the REPL")
    local hist = T.read(state .. "/repl_history")
    assert.truthy(hist, "no history file written")
    assert.matches("plain", hist)
    assert.not_matches("hunter2", hist)
    assert.not_matches("token", hist)
    assert.not_matches("tok2", hist)
  end)

  it("recalls the last session's lines with Up and runs them edited", function()
    term:line("recalled = 6 * 7")
    term:wait_for("local>", 5, true)
    term:keys("C-d")
    local deadline = os.time() + 5
    while term:alive() and os.time() < deadline do os.execute("sleep 0.05") end
    assert.is_false(term:alive(), "Ctrl-D did not leave the REPL")
    term:close()
    term = tty.start(T.q(T.bin) .. " repl --local", {env = "GPURENT_STATE_DIR=" .. T.q(state)})
    term:wait_for("local>", 5, true)
    term:keys("Up")
    term:wait_for("local> recalled = 6 * 7", 5, true)
    term:keys("BSpace")
    term:type("8")
    term:keys("Enter")
    term:line("=recalled")
    term:wait_for("\n48\n", 5, true)
  end)
end)
