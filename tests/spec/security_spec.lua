-- security_spec: the security promises a user relies on, checked against real parts
-- (a real sshd on loopback, a real ssh-agent, the testbed's AutoDL API server, a real
-- git repository as a shared library):
--   - gpurent never requests agent forwarding, even when ssh_config says ForwardAgent yes
--     (and a plain OpenSSH client against the same sshd shows it WOULD be forwarded);
--   - nothing shipped defaults to StrictHostKeyChecking=no; an unknown host is refused;
--   - the AutoDL token is in no process's argv during a billing call, in no file of the
--     state dir (ledger), and in no error message or dry-run output;
--   - the credential file the environment phase pushes is mode 600, even over a stale .tmp;
--   - a shared library's code cannot grant approval: core.approval is read-only, the gate
--     refuses, and a second `gpurent --approve` it spawns is refused (exit 3).
local sshd = require "sshd"
local api = require "autodl_api"
local lfs = require "lfs"

local is_root = io.popen("id -u"):read("l") == "0"

local function sh(cmd)
  local p = io.popen(cmd .. " 2>&1")
  local out = p:read("a")
  local _, _, code = p:close()
  return out, code
end

-- every regular file under dir (recursive)
local function files_under(dir, out)
  out = out or {}
  for name in lfs.dir(dir) do
    if name ~= "." and name ~= ".." then
      local p = dir .. "/" .. name
      local a = lfs.symlinkattributes(p)
      if a and a.mode == "directory" then files_under(p, out)
      elseif a and a.mode == "file" then out[#out + 1] = p end
    end
  end
  return out
end

-- `gpurent host add` is the person's explicit first contact: it records the key it is
-- shown (printing the fingerprint), like OpenSSH's accept-new; a CHANGED key is still refused.
local ALLOWED_ACCEPT_NEW = {["lua/gpurent/commands/host.lua"] = true}

describe("security: ssh", function()
  local fx
  setup(function() fx = sshd.start{ssh_options = "ForwardAgent yes"} end)
  teardown(function() if fx then fx:stop() end end)

  it("no code path requests agent forwarding", function()
    local hits = {}
    for _, f in ipairs(files_under(T.root .. "/runtime")) do
      local text = T.read(f)
      if text:find("request_auth_agent", 1, true) or text:find("auth-agent-req", 1, true) then hits[#hits + 1] = f end
    end
    for _, f in ipairs(files_under(T.root .. "/lua")) do
      local text = T.read(f):lower()
      -- sshconfig.lua names the keyword only to class it as never honoured (checked below)
      if (text:find("forwardagent", 1, true) and not f:find("/lua/gpurent/transport/sshconfig%.lua$"))
        or text:find("auth-agent", 1, true) then hits[#hits + 1] = f end
    end
    assert.are.same({}, hits)
    assert.are.equal("irrelevant", require("gpurent.transport.sshconfig").KEYWORDS.forwardagent)
  end)

  it("does not forward a local agent (SSH_AUTH_SOCK stays unset remotely) even with ForwardAgent yes", function()
    local dir = T.tmpdir()
    local sock = dir .. "/agent.sock"
    local out = sh("ssh-agent -a " .. T.q(sock) .. " -s")
    local agent_pid = tonumber(out:match("SSH_AGENT_PID=(%d+)"))
    assert.truthy(agent_pid, out)
    local ok, err = pcall(function()
      -- control: OpenSSH's client honours ForwardAgent yes against this sshd
      local ctl = sh(string.format("SSH_AUTH_SOCK=%s ssh -F %s -o BatchMode=yes %s 'echo AUTH=$SSH_AUTH_SOCK'",
        T.q(sock), T.q(fx.config), fx.aliases[1]))
      assert.matches("AUTH=/%S+", ctl)
      -- gpurent, same config, same agent in its environment
      local script = dir .. "/agent.lua"
      T.write(script, string.format([[
local inst = gpurent.connect(%q, {config = %q})
io.write(inst:sh("echo AUTH=$SSH_AUTH_SOCK").stdout)
]], fx.aliases[1], fx.config))
      local code, stdout, stderr = T.run("run " .. T.q(script), {env = "SSH_AUTH_SOCK=" .. T.q(sock)})
      assert.are.equal(0, code, stderr)
      assert.are.equal("AUTH=\n", stdout)
    end)
    os.execute("kill " .. agent_pid)
    T.rmtree(dir)
    assert(ok, err)
  end)

  it("ships no StrictHostKeyChecking=no (or known_hosts /dev/null) default", function()
    local hits = {}
    for _, top in ipairs{"lua", "profiles", "recipes", "runtime", "examples"} do
      if lfs.attributes(T.root .. "/" .. top) then
        for _, f in ipairs(files_under(T.root .. "/" .. top)) do
          local n = 0
          for line in (T.read(f) or ""):gmatch("[^\n]*") do
            n = n + 1
            local l = line:lower()
            if l:find("stricthostkeychecking%s*[=:]?%s*[\"']?no") or l:find("stricthostkeychecking%s*[=:]?%s*[\"']?off")
              or l:find("userknownhostsfile%s*[=:]?%s*[\"']?/dev/null")
              or (l:find("accept_new_host%s*=%s*true") and not ALLOWED_ACCEPT_NEW[f:sub(#T.root + 2)]) then
              hits[#hits + 1] = f:sub(#T.root + 2) .. ":" .. n .. ": " .. line
            end
          end
        end
      end
    end
    assert.are.same({}, hits)
  end)

  it("refuses an unknown host by default and leaves known_hosts untouched", function()
    local dir = T.tmpdir()
    local kh = dir .. "/known_hosts"
    T.write(kh, "")
    local cfg = dir .. "/ssh_config"
    T.write(cfg, T.read(fx.config):gsub("UserKnownHostsFile %S+", "UserKnownHostsFile " .. kh))
    local ok, err = pcall(gpurent.connect, fx.aliases[1], {config = cfg})
    local after = T.read(kh)
    T.rmtree(dir)
    assert.is_false(ok)
    assert.matches("is not known", tostring(err), 1, true)
    assert.matches("refusing to connect", tostring(err), 1, true)
    assert.are.equal("", after)
  end)

  it("the environment phase writes the credential file mode 600, even over a stale world-readable .tmp", function()
    local environment = require "gpurent.lifecycle.phases.environment"
    local secret = require "gpurent.util.secret"
    local inst = fx:connect(1)
    local cred = fx.home .. "/cred.env"
    -- a .tmp left behind (an interrupted push under another umask) must not donate its mode
    inst:sh("rm -f " .. T.q(cred) .. "; umask 022; echo old > " .. T.q(cred .. ".tmp"), {check = true})
    local r = {host = fx.aliases[1], say = function() end,
               profile = {platform = "t", overrides = {CRED_FILE = cred}, env = {python = "python3"}}}
    environment.run({inst = inst, run = r}, {secrets = {HF_TOKEN = secret("hf_s3cr3t'x")}})
    local res = inst:sh("stat -c %a " .. T.q(cred) .. "; . " .. T.q(cred) .. " && printf '%s' \"$HF_TOKEN\"")
    inst:close()
    assert.are.equal("600\nhf_s3cr3t'x", res.stdout)
  end)
end)

describe("security: the AutoDL token", function()
  local srv, tokfile, env
  setup(function()
    srv = api.start{settle_delay = 0.3}
    srv:register{uuid = "pro-sec1", name = "sec1", price = 2}
    tokfile = srv.dir .. "/token"
    T.write(tokfile, srv.token .. "\n")
    os.execute("chmod 600 " .. T.q(tokfile))
    -- the token reaches gpurent through a file: no shell command line of ours holds it
    env = "AUTODL_TOKEN_FILE=" .. T.q(tokfile) .. " GPURENT_AUTODL_BASE_URL=" .. T.q(srv.url) ..
          " GPURENT_STATE_DIR=" .. T.q(srv.state) .. " HOME=" .. T.q(srv.dir)
  end)
  teardown(function() if srv then srv:stop() end end)
  before_each(function() srv:admin("/__sim/faults", {clear = true}) end)

  it("is in no process's argv while a billing call is in flight", function()
    assert.is_true(#srv.token >= 8)
    srv:admin("/__sim/faults", {delay_count = 1, delay_seconds = 2, match = "wallet"})
    local out = srv.dir .. "/bg.out"
    local pid = tonumber((sh(string.format("%s %s billing status >%s 2>&1 </dev/null & echo $!", env, T.q(T.bin), T.q(out)))))
    local seen, leaks = 0, {}
    for _ = 1, 30 do                                     -- bounded: ~1.5 s of samples
      for name in lfs.dir("/proc") do
        if name:match("^%d+$") then
          local f = io.open("/proc/" .. name .. "/cmdline", "rb")
          local argv = f and f:read("a") or ""
          if f then f:close() end
          if tonumber(name) == pid and argv:find("billing", 1, true) then seen = seen + 1 end
          if argv:find(srv.token, 1, true) then leaks[#leaks + 1] = name .. ": " .. argv:gsub("%z", " ") end
        end
      end
      require("gpurent.core").sys.sleep(0.05)
    end
    os.execute("wait " .. pid .. " 2>/dev/null; sleep 0")
    for _ = 1, 100 do if not lfs.attributes("/proc/" .. pid) then break end; require("gpurent.core").sys.sleep(0.05) end
    assert.is_true(seen > 0, "never saw the gpurent billing process")
    assert.are.same({}, leaks)
    assert.matches("sec1", T.read(out))
  end)

  it("a token file others can read is refused, naming the file and the fix, before any API call", function()
    local before = #srv:journal_now("")
    local open = srv.dir .. "/token.644"
    T.write(open, srv.token .. "\n")
    os.execute("chmod 644 " .. T.q(open))
    local code, out, err = T.run("billing status", {env = env:gsub("AUTODL_TOKEN_FILE=%S+", "AUTODL_TOKEN_FILE=" .. T.q(open))})
    assert.are_not.equal(0, code)
    assert.matches("token file " .. open:gsub("%p", "%%%0") .. " is readable or writable by others %(mode 644%): run chmod 600", err)
    assert.is_nil((out .. err):find(srv.token, 1, true))
    assert.are.equal(before, #srv:journal_now(""))
    os.execute("chmod 600 " .. T.q(open))                 -- the fix it names works
    code, out, err = T.run("billing status", {env = env:gsub("AUTODL_TOKEN_FILE=%S+", "AUTODL_TOKEN_FILE=" .. T.q(open))})
    assert.are.equal(0, code, out .. err)
  end)

  it("is in no error message, dry-run output, or state-dir file (ledger)", function()
    -- a dry-run power-off prints the exact call, token shown as ***
    local code, out, err = T.run("billing power-off sec1 --dry-run --approve sec1", {env = env})
    assert.are.equal(0, code, err)
    assert.matches("***", out, 1, true)
    assert.is_nil((out .. err):find(srv.token, 1, true))
    -- a 5xx and a timeout: errors name method and URL, never the token
    srv:admin("/__sim/faults", {http_5xx = 1, match = "wallet"})
    code, out, err = T.run("billing status", {env = env})
    assert.are_not.equal(0, code)
    assert.matches("502", out .. err, 1, true)
    assert.is_nil((out .. err):find(srv.token, 1, true))
    -- a real power-off, recorded in the ledger
    code, out, err = T.run("billing power-off sec1 --no-wait --approve sec1", {env = env})
    assert.are.equal(0, code, out .. err)
    assert.is_nil((out .. err):find(srv.token, 1, true))
    local files = files_under(srv.state)
    local has_ledger = false
    for _, f in ipairs(files) do
      if f:match("ledger%.sqlite$") then has_ledger = true end
      assert.is_nil(T.read(f):find(srv.token, 1, true), f .. " holds the token")
    end
    assert.is_true(has_ledger, "no ledger written in " .. srv.state)
    -- a token-bearing Lua error raised in a recipe prints ***
    local script = srv.dir .. "/err.lua"
    T.write(script, 'local t = require("gpurent.platform.autodl.api").client().token\nerror("failed with " .. t)\n')
    code, out, err = T.run("run " .. T.q(script), {env = env})
    assert.are.equal(1, code)
    assert.matches("failed with ***", err, 1, true)
    assert.is_nil((out .. err):find(srv.token, 1, true))
  end)
end)

describe("security: a shared library cannot grant approval", function()
  local dir, env, proj, srv
  setup(function()
    dir = T.tmpdir()
    srv = api.start{}
    srv:register{uuid = "pro-box9", name = "box9", status = "running"}
    local repo = dir .. "/evil"
    proj = dir .. "/proj"
    os.execute("mkdir -p " .. T.q(repo) .. " " .. T.q(proj) .. " " .. T.q(dir .. "/home"))
    env = table.concat({"HOME=" .. T.q(dir .. "/home"), "GPURENT_DATA_DIR=" .. T.q(dir .. "/data"),
      "XDG_CONFIG_HOME=" .. T.q(dir .. "/config"), "GPURENT_STATE_DIR=" .. T.q(dir .. "/state"),
      "AUTODL_TOKEN=" .. T.q(srv.token), "GPURENT_AUTODL_BASE_URL=" .. T.q(srv.url)}, " ")
    -- the library's recipe tries every way we know to approve "box9", then power-off
    -- and release it through the client, catching every error
    T.write(repo .. "/tidy.lua", [[
-- a team library's helper that "tidies up" by releasing the box: refused in C
local c = require("gpurent.platform.autodl.api").client{}
return {run = function() return c:release("pro-box9") end}
]])
    T.write(repo .. "/grab.lua", [[
local core = require "gpurent.core"
local function try(what, f)
  local ok, e = pcall(f)
  print(what .. ": " .. (ok and "ok" or "error") .. " granted=" .. tostring(core.approval.granted("box9")))
end
try("assign", function() core.approval.granted = function() return true end end)
try("setmetatable", function() setmetatable(core.approval, {}) end)
try("debug.setmetatable", function() debug.setmetatable(core.approval, {__index = {granted = function() return true end}}) end)
try("debug.setupvalue", function() debug.setupvalue(core.approval.granted, 1, true) end)
try("debug.getregistry", function() debug.getregistry()["gpurent.approved"] = true end)
try("gate", function()
  require("gpurent.lifecycle.gate").check{action = "power_off", instance = "box9", names = {"box9"}, interactive = false,
    out = io.stdout}
end)
-- the C side: the client's verbs are refused without the person's approval, whatever Lua passes
local c = require("gpurent.platform.autodl.api").client{out = io.stdout}
for _, verb in ipairs{"power_off", "release"} do
  local ok, e = pcall(c[verb], c, "pro-box9", {approval = "box9", wait = false})
  print(verb .. " refused=" .. tostring(type(e) == "table" and e.exit == 3) .. " " .. tostring(e))
end
-- spawn a second gpurent, the very binary we run in, with --approve
local exe = io.popen("readlink /proc/" .. core.sys.getpid() .. "/exe"):read("l")
local f = io.popen(string.format("'%s' --approve box9 -e 'print(\"child granted=\" .. tostring(require(\"gpurent.core\").approval.granted(\"box9\")))' 2>&1; echo child_exit=$?", exe))
io.write(f:read("a"))
f:close()
print("final granted=" .. tostring(core.approval.granted("box9")))
]])
    assert.are.equal("", (sh("cd " .. T.q(repo) .. " && git init -q -b main && git add -A && " ..
      "git -c user.name=t -c user.email=t@t commit -qm v1 >/dev/null && echo -n")))
    T.write(proj .. "/gpurent.lock", "")
    local code, out, err = T.run("lib add evil " .. T.q(repo), {env = env, cwd = proj})
    assert.are.equal(0, code, out .. err)
  end)
  teardown(function() srv:stop(); T.rmtree(dir) end)

  it("core.approval is read-only, debug cannot reach it, the client's verbs are refused, the run exits 3", function()
    local code, out, err = T.run("run evil/grab.lua", {env = env, cwd = proj})
    -- every refusal was caught by the recipe, yet the process exits 3 (sticky, main.c)
    assert.are.equal(3, code, out .. err)
    assert.matches("assign: error granted=false", out, 1, true)
    assert.matches("setmetatable: error granted=false", out, 1, true)
    assert.matches("debug.setmetatable: error granted=false", out, 1, true)
    assert.matches("debug.setupvalue: error granted=false", out, 1, true)
    assert.matches("debug.getregistry: error granted=false", out, 1, true)
    assert.matches("gate: power_off box9: refused", out, 1, true)
    assert.matches("gate: error", out, 1, true)
    assert.matches("power_off refused=true", out, 1, true)
    assert.matches("release refused=true", out, 1, true)
    assert.matches("refused: --approve is ignored when gpurent is started by another gpurent", out, 1, true)
    assert.matches("child_exit=3", out, 1, true)
    assert.is_nil(out:find("child granted=true", 1, true))
    assert.are.same({}, srv:journal_now("/power_off"))
    assert.are.same({}, srv:journal_now("/release"))
  end)
  it("a module of the library that releases the box is refused in C: exit 3, nothing sent", function()
    local code, out, err = T.run("-e " .. T.q('require("evil.tidy").run()'), {env = env, cwd = proj})
    assert.are.equal(3, code, out .. err)
    assert.matches("release of box9 (pro-box9): refused: the person has not approved it", err, 1, true)
    assert.are.same({}, srv:journal_now("/release"))
  end)

  it("the same `--approve` typed by the person (not under a gpurent) is accepted", function()
    -- control for the test above: the ancestry check must not refuse the person
    local code, out = T.run("--approve box9 -e " .. T.q('print(require("gpurent.core").approval.granted("box9"))'))
    assert.are.equal(0, code)
    assert.are.equal("true\n", out)
  end)

  it("a gpurent started by the very binary of an ancestor gpurent is refused with exit 3", function()
    -- T.bin_nested is the runner's own file: this spec runs inside it
    local code, _, err = T.run("--approve box9 -e 'print(1)'", {bin = T.bin_nested})
    assert.are.equal(3, code)
    assert.matches("started by another gpurent", err, 1, true)
  end)
end)

-- Issue 14: every Lua path to a gated provider verb ends in the one C path
-- (runtime/provider.c), which sends only with the person's approval for that instance,
-- keeps the token in C, sends it only where the installed profile or the person's config
-- dir says, and a Lua state that cannot load native code or bytecode.
describe("security: the provider boundary", function()
  local srv, dir, env, tokfile
  local function journal_verbs()
    return #srv:journal_now("/power_off") + #srv:journal_now("/release")
  end
  setup(function()
    srv = api.start{settle_delay = 0.2}
    srv:register{uuid = "pro-a1", name = "a1", status = "running"}
    srv:register{uuid = "pro-b2", name = "b2", status = "running"}
    dir = T.tmpdir()
    tokfile = dir .. "/token"
    T.write(tokfile, srv.token .. "\n")
    os.execute("chmod 600 " .. T.q(tokfile) .. "; mkdir -p " .. T.q(dir .. "/home"))
    env = "AUTODL_TOKEN_FILE=" .. T.q(tokfile) .. " GPURENT_AUTODL_BASE_URL=" .. T.q(srv.url) ..
          " GPURENT_STATE_DIR=" .. T.q(dir .. "/state") .. " HOME=" .. T.q(dir .. "/home") ..
          " XDG_CONFIG_HOME=" .. T.q(dir .. "/config")
  end)
  teardown(function() srv:stop(); T.rmtree(dir) end)

  local careless = 'local c = require("gpurent.platform.autodl.api").client{}; local u = c:find("a1").uuid; '
    .. 'c:power_off(u, {wait = false}); c:release(u)'

  it("gpurent -e calling the client's power_off and release: exit 3, nothing sent, a ledger line", function()
    local code, out, err = T.run("-e " .. T.q(careless) .. " </dev/null", {env = env})
    assert.are.equal(3, code, out .. err)
    assert.matches("AutoDL power_off of a1 (pro-a1): refused: the person has not approved it", err, 1, true)
    assert.are.equal(0, journal_verbs())
    local L = require("gpurent.state.ledger").open(dir .. "/state/ledger.sqlite")
    local rows = L.db:query("SELECT gate, action, decision FROM gate_decisions WHERE gate = 'provider'")
    L:close()
    assert.are.same({gate = "provider", action = "power_off", decision = "refuse"}, rows[#rows])
  end)

  it("a refusal caught by pcall still ends the process with exit 3", function()
    local code, out, err = T.run("-e " .. T.q('print(pcall(function() ' .. careless .. ' end)); print("carried on")'),
      {env = env})
    assert.are.equal(3, code, out .. err)
    assert.matches("carried on", out, 1, true)
    assert.are.equal(0, journal_verbs())
  end)

  it("approval is for that exact instance: --approve b2 does not release a1; --approve a1 powers it off", function()
    local code, out, err = T.run("--approve b2 -e " .. T.q(careless), {env = env})
    assert.are.equal(3, code, out .. err)
    assert.are.equal(0, journal_verbs())
    -- control: the person's approval of a1 lets the same chunk's power-off through
    code, out, err = T.run("--approve a1 -e " .. T.q('local c = require("gpurent.platform.autodl.api").client{}; '
      .. 'c:power_off(c:find("a1").uuid, {wait = false}); print("sent")'), {env = env})
    assert.are.equal(0, code, out .. err)
    assert.matches("sent", out, 1, true)
    assert.are.equal(1, #srv:journal("/power_off", 1))
  end)

  it("a recipe may gate one more verb, and C then refuses it too; a trusted overlay's gated: true does the same", function()
    local code, out, err = T.run("-e " .. T.q('local core = require("gpurent.core"); core.provider.gate("autodl", "power_on"); '
      .. 'local c = require("gpurent.platform.autodl.api").client{}; c:power_on(c:find("a1").uuid, {wait = false})'), {env = env})
    assert.are.equal(3, code, out .. err)
    assert.matches("AutoDL power_on of a1 (pro-a1): refused", err, 1, true)
    assert.are.equal(0, #srv:journal_now("/power_on"))
    -- an overlay that extends autodl (here in GPURENT_PROFILE_PATH, set by the person) gates create
    local pdir = dir .. "/team-profiles"
    os.execute("mkdir -p " .. T.q(pdir))
    T.write(pdir .. "/team.yaml", "extends: autodl\nbilling:\n  api:\n    endpoints:\n" ..
      "      create: {method: POST, path: /api/v1/dev/instance/pro/create, billable: true, gated: true}\n")
    code, out, err = T.run("-e " .. T.q('require("gpurent.config.profile").load("team"); '
      .. 'print(table.concat(require("gpurent.core").provider.gated("autodl"), ","))'),
      {env = env .. " GPURENT_PROFILE_PATH=" .. T.q(pdir)})
    assert.are.equal(0, code, out .. err)
    assert.matches("create", out, 1, true)
  end)

  it("the raw HTTP primitive, with the token the recipe read from its file, is refused for the API host", function()
    local before = #srv:journal_now()
    local chunk = string.format([[
local tok = io.open(%q):read("l")
local core = require("gpurent.core")
core.http.request{method = "POST", url = %q, headers = {"Authorization: " .. tok,
  "Content-Type: application/json"}, body = '{"instance_uuid":"pro-a1"}'}
]], tokfile, srv.url .. "/api/v1/dev/instance/pro/release")
    local code, out, err = T.run("-e " .. T.q(chunk), {env = env})
    assert.are.equal(3, code, out .. err)
    assert.matches("is a provider API", err, 1, true)
    assert.are.equal(before, #srv:journal_now())
  end)

  it("the REPL: a typed release is refused, nothing sent, the REPL lives on", function()
    local tty = require "tty"
    local term = tty.start(T.q(T.bin) .. " repl --local", {env = env})
    local ok, e = pcall(function()
      term:wait_for("local>", 5, true)
      term:line('c = require("gpurent.platform.autodl.api").client{}')
      term:line('c:release(c:find("a1").uuid)')
      term:wait_for("refused: the person has not approved it", 10, true)
      term:line('print("alive" .. "!")')
      term:wait_for("alive!", 5, true)
    end)
    term:close()
    assert(ok, e)
    assert.are.equal(0, #srv:journal_now("/release"))
  end)

  it("the REPL's power_off goes through the gate: a wrong typed name refuses, the right one powers off", function()
    local tty = require "tty"
    srv:admin("/__sim/set-state", {instance_uuid = "pro-b2", status = "running"})
    local before = #srv:journal_now("/power_off")
    local term = tty.start(T.q(T.bin) .. " repl --local", {env = env})
    local ok, e = pcall(function()
      term:wait_for("local>", 5, true)
      term:line('power_off("b2")')
      term:wait_for("Type the instance name (b2)", 10, true)
      term:line("a1")
      term:wait_for("refused", 10, true)
      assert.are.equal(before, #srv:journal_now("/power_off"))
      term:line('power_off("b2")')
      -- the first ask is still on the screen: wait for the second one, else the typed
      -- name can arrive while the line editor still owns the terminal and be flushed
      local asked = false
      for _ = 1, 200 do
        if term:count("Type the instance name (b2)") >= 2 then asked = true; break end
        os.execute("sleep 0.05")
      end
      assert(asked, "the second approval prompt never appeared:\n" .. term:screen())
      term:line("b2")
      term:wait_for("gate: power_off b2: allowed (approval: tty", 10, true)
      -- the gate's line comes before the API call: the REPL (and the call in flight)
      -- lives until the call reached the API (bounded: 15 s; on a loaded machine the
      -- terminal closed right after the gate's line killed the call: 1 of 2 calls)
      for _ = 1, 300 do
        if #srv:journal_now("/power_off") > before then break end
        os.execute("sleep 0.05")
      end
    end)
    term:close()
    assert(ok, e)
    assert.are.equal(before + 1, #srv:journal_now("/power_off"))
  end)

  it("the token never enters Lua: the client holds a handle that prints *** and has no accessor", function()
    local code, out, err = T.run("-e " .. T.q([[
local c = require("gpurent.platform.autodl.api").client{}
print(tostring(c.token), getmetatable(c.token), pcall(function() return c.token.value end))
print(pcall(setmetatable, c.token, {}))
]]), {env = env})
    assert.are.equal(0, code, out .. err)
    assert.matches("^%*%*%*\tgpurent.provider.token\tfalse", out)
    assert.matches("the provider token stays in gpurent's C host", out, 1, true)
    assert.is_nil(out:find(srv.token, 1, true))
  end)

  it("no native code: package.loadlib, C modules from package.cpath and bytecode are unavailable", function()
    local so = dir .. "/evil.so"
    T.write(dir .. "/evil.c", [[
#include <dlfcn.h>
typedef int (*grant_fn)(const char *);
int luaopen_evil(void *L) {
  (void)L;
  grant_fn g = (grant_fn)dlsym(RTLD_DEFAULT, "gr_approval_grant");
  if (g) g("a1");
  return 0;
}
]])
    local cc_out, cc_code = sh("cc -shared -fPIC -o " .. T.q(so) .. " " .. T.q(dir .. "/evil.c") .. " -ldl")
    assert.are.equal(0, cc_code, cc_out)
    local chunk = string.format([[
print("loadlib", pcall(function() return package.loadlib(%q, "luaopen_evil") end))
package.cpath = %q
print("require", pcall(require, "evil"))
print("bytecode", pcall(load, string.dump(function() return 1 end)))
print("bytecode-b", load(string.dump(function() return 1 end), "x", "b"))
print("granted", require("gpurent.core").approval.granted("a1"))
]], so, dir .. "/?.so")
    local code, out, err = T.run("-e " .. T.q(chunk), {env = env})
    assert.are.equal(0, code, out .. err)
    assert.matches("loadlib\tfalse", out, 1, true)
    assert.matches("require\tfalse\t[^\n]*module 'evil' not found", out)
    assert.is_nil(out:find(so, 1, true), "the searcher must not even look in package.cpath")
    assert.matches("bytecode\ttrue\tnil\tattempt to load a binary chunk", out, 1, true)
    assert.matches("bytecode-b\tnil\tload: binary chunks are disabled", out, 1, true)
    assert.matches("granted\tfalse", out, 1, true)
    -- and were such code loaded by other means, no internal symbol is exported to find
    local syms = sh("nm -D --defined-only " .. T.q(T.bin))
    assert.is_nil(syms:find("gr_approval_grant", 1, true))
    assert.is_nil(syms:find("gr_", 1, true))
  end)

  it("of debug only traceback and getinfo remain", function()
    local code, out = T.run("-e " .. T.q('local k = {} for n in pairs(debug) do k[#k+1] = n end table.sort(k) print(table.concat(k, ","))'))
    assert.are.equal(0, code)
    assert.are.equal("getinfo,traceback\n", out)
  end)

  it("the token goes only where the installed profile or the config dir says, https or the loopback override", function()
    local cwd = dir .. "/cloned"
    os.execute("mkdir -p " .. T.q(cwd .. "/profiles") .. " " .. T.q(dir .. "/config/gpurent/profiles"))
    T.write(cwd .. "/profiles/autodl.yaml", "extends: autodl\nbilling:\n  api:\n    base_url: http://127.0.0.1:47999\n")
    local show = T.q('print((select(2, require("gpurent.core").provider.describe("autodl", "balance"))))')
    local noenv = "env -u GPURENT_AUTODL_BASE_URL " .. env:gsub("GPURENT_AUTODL_BASE_URL=%S+", "")
    -- a working directory's profile never steers C, trusted or not
    local code, out, err = T.run("-e " .. show, {env = noenv, cwd = cwd})
    assert.are.equal(0, code, out .. err)
    assert.are.equal("https://api.autodl.com/api/v1/dev/wallet/balance\n", out)
    -- the person's config dir does; plain http to a non-loopback host is refused
    T.write(dir .. "/config/gpurent/profiles/autodl.yaml", "billing:\n  api:\n    base_url: http://api.example.org\n")
    code, out, err = T.run("-e " .. show, {env = noenv})
    assert.are.equal(3, code, out .. err)
    assert.matches("the token goes only over https", err, 1, true)
    T.write(dir .. "/config/gpurent/profiles/autodl.yaml",
      "billing:\n  api:\n    base_url: https://api.example.org\n    endpoints:\n      release: {method: POST, path: /r, gated: false}\n")
    code, out, err = T.run("-e " .. T.q('local p = require("gpurent.core").provider print(select(2, p.describe("autodl", "balance")), table.concat(p.gated("autodl"), ","))'), {env = noenv})
    assert.are.equal(0, code, out .. err)
    -- honoured, and an overlay cannot lift a gate
    assert.matches("^https://api.example.org/api/v1/dev/wallet/balance\t[^\n]*release", out)
    os.remove(dir .. "/config/gpurent/profiles/autodl.yaml")
  end)

  it("no core file holds the token: once it is loaded the process is not dumpable and RLIMIT_CORE is 0", function()
    -- ASan disables core files itself, so the control below cannot produce one there
    if T.sanitizer then pending("under " .. T.sanitizer .. ": the sanitizer disables core files"); return end
    local function abort_in(where, chunk)
      os.execute("mkdir -p " .. T.q(where))
      local code, out, err = T.run("-e " .. T.q(chunk .. '; os.execute("kill -ABRT " .. require("gpurent.core").sys.getpid())'
        .. '; require("gpurent.core").sys.sleep(5)'), {env = "ulimit -c unlimited; " .. env, cwd = where})
      local cores = {}
      for name in lfs.dir(where) do if name:match("^core") then cores[#cores + 1] = where .. "/" .. name end end
      return code, cores, out .. err
    end
    -- control: without a token loaded, SIGABRT leaves a core file here (the test can see one)
    local code, cores = abort_in(dir .. "/ctl", 'print(1)')
    assert.are_not.equal(0, code)
    assert.is_true(#cores > 0, "no core file even without a token: the control does not work on this machine")
    local code2, cores2, text = abort_in(dir .. "/tok", 'require("gpurent.platform.autodl.api").client{}:balance()')
    assert.are_not.equal(0, code2, text)
    assert.are.same({}, cores2)
  end)
end)
