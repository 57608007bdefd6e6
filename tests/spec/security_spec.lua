-- security_spec: the security promises a user relies on, checked against real parts
-- (a real sshd on loopback, a real ssh-agent, the testbed's AutoDL API server, a real
-- git repository as a shared library):
--   - gpurent never requests agent forwarding, even when ssh_config says ForwardAgent yes
--     (and a plain OpenSSH client against the same sshd shows it WOULD be forwarded);
--   - nothing shipped defaults to StrictHostKeyChecking=no; an unknown host is refused;
--   - the AutoDL token is in no process's argv during a billing call, in no file of the
--     state dir (ledger), and in no error message or dry-run output;
--   - the credential file the connect phase pushes is mode 600, even over a stale .tmp;
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
      if text:find("forwardagent", 1, true) or text:find("auth-agent", 1, true) then hits[#hits + 1] = f end
    end
    assert.are.same({}, hits)
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

  it("the connect phase writes the credential file mode 600, even over a stale world-readable .tmp", function()
    local connect = require "gpurent.phases.connect"
    local secret = require "gpurent.secret"
    local inst = fx:connect(1)
    local cred = fx.home .. "/cred.env"
    -- a .tmp left behind (an interrupted push under another umask) must not donate its mode
    inst:sh("rm -f " .. T.q(cred) .. "; umask 022; echo old > " .. T.q(cred .. ".tmp"), {check = true})
    local r = {host = fx.aliases[1], say = function() end,
               profile = {platform = "t", overrides = {CRED_FILE = cred}, env = {python = "python3"}}}
    connect.run(inst, r, {secrets = {HF_TOKEN = secret("hf_s3cr3t'x")}})
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
    assert.matches("token file " .. open:gsub("%p", "%%%0") .. " is readable or writable by others %(rw%-r%-%-r%-%-%): run chmod 600", err)
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
    T.write(script, 'local t = require("gpurent.billing.autodl").token()\nerror("failed with " .. t)\n')
    code, out, err = T.run("run " .. T.q(script), {env = env})
    assert.are.equal(1, code)
    assert.matches("failed with ***", err, 1, true)
    assert.is_nil((out .. err):find(srv.token, 1, true))
  end)
end)

describe("security: a shared library cannot grant approval", function()
  local dir, env, proj
  setup(function()
    dir = T.tmpdir()
    local repo = dir .. "/evil"
    proj = dir .. "/proj"
    os.execute("mkdir -p " .. T.q(repo) .. " " .. T.q(proj) .. " " .. T.q(dir .. "/home"))
    env = table.concat({"HOME=" .. T.q(dir .. "/home"), "GPURENT_DATA_DIR=" .. T.q(dir .. "/data"),
      "XDG_CONFIG_HOME=" .. T.q(dir .. "/config"), "GPURENT_STATE_DIR=" .. T.q(dir .. "/state")}, " ")
    -- the library's recipe tries every way we know to approve "box9"
    T.write(repo .. "/grab.lua", [[
local core = require "gpurent.core"
local function try(what, f)
  local ok, e = pcall(f)
  print(what .. ": " .. (ok and "ok" or "error") .. " granted=" .. tostring(core.approval.granted("box9")))
end
try("assign", function() core.approval.granted = function() return true end end)
try("setmetatable", function() setmetatable(core.approval, {}) end)
try("debug.setmetatable", function() debug.setmetatable(core.approval, {__index = {granted = function() return true end}}) end)
try("gate", function()
  require("gpurent.gate").check{action = "power_off", instance = "box9", names = {"box9"}, interactive = false,
    out = io.stdout}
end)
-- the C side of a destructive call: http refuses a release without the person's approval,
-- whatever Lua believes (nothing listens on 127.0.0.1:1; a refusal comes before any connect)
try("release", function()
  local c = require("gpurent.billing.autodl").client{token = "x", base_url = "http://127.0.0.1:1"}
  local ok, e = pcall(c.release, c, "pro-box9", {approval = "box9"})
  print("release refused=" .. tostring(type(e) == "table" and e.exit == 3) .. " " .. tostring(e))
end)
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
  teardown(function() T.rmtree(dir) end)

  it("core.approval is read-only, the gate refuses, and a spawned `gpurent --approve` is refused (exit 3)", function()
    local code, out, err = T.run("run evil/grab.lua", {env = env, cwd = proj})
    assert.are.equal(0, code, out .. err)
    assert.matches("assign: error granted=false", out, 1, true)
    assert.matches("setmetatable: error granted=false", out, 1, true)
    -- debug.setmetatable CAN swap the proxy's metatable, so Lua's own view of
    -- granted() is forgeable; what must hold is that the gate and the C request refuse
    assert.matches("debug.setmetatable: ok", out, 1, true)
    assert.matches("gate: power_off box9: refused", out, 1, true)
    assert.matches("gate: error", out, 1, true)
    assert.matches("release refused=true", out, 1, true)
    assert.matches("refused: --approve is ignored when gpurent is started by another gpurent", out, 1, true)
    assert.matches("child_exit=3", out, 1, true)
    assert.is_nil(out:find("child granted=true", 1, true))
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
