-- secret_ask_spec: secret.ask("label") in a real terminal (tmux): the value typed
-- is read from /dev/tty with echo off, becomes a gpurent.secret (prints ***), and
-- appears nowhere: not on the screen, not in the history file, not in any file
-- gpurent writes. Ctrl-C at the prompt leaves the terminal echoing. Without a
-- controlling terminal it fails with an error that says what to do instead.
local tty = require "tty"

-- Every file under dir whose bytes contain needle (plain).
local function files_holding(dir, needle)
  local hits = {}
  local p = io.popen("find " .. T.q(dir) .. " -type f 2>/dev/null")
  for path in p:lines() do
    local data = T.read(path)
    if data and data:find(needle, 1, true) then hits[#hits + 1] = path end
  end
  p:close()
  return hits
end

-- The terminal's local modes as `stty -a` reports them, run from the REPL's `!`.
local function stty_echo(term, tag)
  term:line("!stty -a | tr ' ;' '\\n\\n' | grep -x -- '-\\?echo' | sed 's/^/" .. tag .. "=/'")
  local screen = term:wait_for(tag .. "=%-?echo\n", 5)
  return screen:match(tag .. "=(%-?echo)\n")
end

local function wait_exit(term)
  local deadline = os.time() + 5
  while term:alive() and os.time() < deadline do os.execute("sleep 0.05") end
  assert.is_false(term:alive(), "Ctrl-D did not leave the REPL")
end

describe("secret.ask in the REPL", function()
  local term, home
  local VALUE = "wb-Zq7" .. "Kx93-TOKEN"   -- split so this file's text is not the needle's only source
  before_each(function()
    home = T.tmpdir()
    local env = "HOME=" .. T.q(home) .. " XDG_STATE_HOME= XDG_CONFIG_HOME= GPURENT_STATE_DIR=" .. T.q(home .. "/state")
    term = tty.start(T.q(T.bin) .. " repl --local", {env = env})
    term:wait_for("local>", 5, true)
  end)
  after_each(function()
    term:close()
    T.rmtree(home)
  end)

  it("reads the value without echo into a secret that prints ***, and keeps it out of every file", function()
    term:line('t = secret.ask("wandb token")')
    term:wait_for("wandb token:", 5, true)
    term:type(VALUE)
    term:keys("Enter")
    term:line("print('got:', t, secret.is(t), secret.reveal(t) == 'wb-Zq7' .. 'Kx93-TOKEN')")
    term:wait_for("got:%s+%*%*%*%s+true%s+true\n", 5)  -- capture-pane shows tabs as spaces
    assert.equals("echo", stty_echo(term, "after_ask"))
    assert.is_nil(term:screen():find(VALUE, 1, true), "the typed value was echoed on the screen")
    term:line("plain = 40 + 2")
    term:keys("C-d")
    wait_exit(term)
    local hist = T.read(home .. "/state/repl_history")
    assert.truthy(hist, "no history file written")
    assert.matches("plain", hist, 1, true)  -- libedit writes spaces as \040
    assert.is_nil(hist:find(VALUE, 1, true), "the typed value reached the history file")
    assert.same({}, files_holding(home, VALUE))
  end)

  it("leaves the terminal echoing after Ctrl-C at the secret prompt", function()
    term:line('t = secret.ask("api key")')
    term:wait_for("api key:", 5, true)
    term:type("half-typed")
    term:keys("C-c")
    term:wait_for("interrupted", 5, true)
    term:line("print('after' .. 'ctrlc', t)")
    local screen = term:wait_for("afterctrlc%s+nil\n", 5)
    assert.truthy(screen:find("print('after' .. 'ctrlc', t)", 1, true), "the typed line was not shown")
    assert.is_nil(screen:find("half-typed", 1, true), "the interrupted value was echoed")
    assert.equals("echo", stty_echo(term, "after_ctrlc"))
  end)
end)

describe("secret.ask without a terminal", function()
  it("fails naming /dev/tty and the non-interactive alternative", function()
    local code, out, err = T.run("-e " .. T.q('print(gpurent.secret.ask("x"))'), {env = "setsid -w"})
    assert.equals(1, code)
    assert.equals("", out)
    assert.matches("/dev/tty", err, 1, true)
    assert.matches("secret.ask needs a terminal", err, 1, true)
    assert.matches('gpurent.secret(os.getenv("VAR"))', err, 1, true)
  end)

  it("refuses a label that is missing or would write control characters to the terminal", function()
    local code, _, err = T.run("-e " .. T.q("gpurent.secret.ask()"), {env = "setsid -w"})
    assert.equals(1, code)
    assert.matches('secret.ask: expected a label naming the value, such as secret.ask("wandb token")', err, 1, true)
    code, _, err = T.run("-e " .. T.q('gpurent.secret.ask("x\\27[2J")'), {env = "setsid -w"})
    assert.equals(1, code)
    assert.matches("control characters", err, 1, true)
  end)
end)
