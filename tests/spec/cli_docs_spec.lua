-- cli_docs_spec: the man page and the bash/zsh completions are generated from the
-- same command table as `gpurent help` (lua/gpurent/cli/init.lua via gpurent.clidoc):
-- the committed copies are what the generator writes now, every command of the
-- table appears in each, bash really completes commands, verbs and options, and
-- `make install` / `make uninstall` put them in place and take everything away.
local cli = require "gpurent.cli"

local MAN, BASH, ZSH = "docs/gpurent.1", "contrib/completion/gpurent.bash", "contrib/completion/_gpurent"

local function bash_complete(line)
  -- the words of `line` as bash would split them; completes the last one
  local script = string.format([=[
    source %s
    COMP_WORDS=(%s); COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
    [[ %q == *" " ]] && { COMP_WORDS+=(""); COMP_CWORD=$((COMP_CWORD + 1)); }
    _gpurent; printf '%%s\n' "${COMPREPLY[@]}"]=], T.q(T.root .. "/" .. BASH), line, line)
  -- the completion runs `gpurent recipes --names`: a `gpurent` on PATH that is the binary
  -- under test, whatever its file is called (gpurent-asan under make asan)
  local bindir = T.tmpdir()
  os.execute("ln -s " .. T.q(T.bin) .. " " .. T.q(bindir .. "/gpurent"))
  local p = io.popen("PATH=" .. T.q(bindir) .. ":$PATH bash -c " .. T.q(script) .. " 2>&1")
  local out = p:read("a")
  p:close()
  T.rmtree(bindir)
  local set = {}
  for w in out:gmatch("[^\n]+") do set[w] = true end
  return set, out
end

describe("man page and completions", function()
  it("are committed as the generator writes them from the command table (make clidoc)", function()
    local dir = T.tmpdir()
    local code, _, err = T.run("-e " .. T.q(string.format('require("gpurent.cli.clidoc").write(%q, %q, %q)',
      dir .. "/m", dir .. "/b", dir .. "/z")))
    assert.are.equal(0, code, err)
    local fresh = {T.read(dir .. "/m"), T.read(dir .. "/b"), T.read(dir .. "/z")}
    T.rmtree(dir)
    for i, f in ipairs({MAN, BASH, ZSH}) do
      assert.are.equal(fresh[i], T.read(T.root .. "/" .. f), f .. " is stale: run make clidoc")
    end
  end)

  it("name every command of the table, with its summary in the man page", function()
    local man, bash, zsh = T.read(T.root .. "/" .. MAN), T.read(T.root .. "/" .. BASH), T.read(T.root .. "/" .. ZSH)
    for _, c in ipairs(cli.COMMANDS) do
      local roff_name = "\\fBgpurent " .. c.name .. "\\fR"
      assert.truthy(man:find(roff_name, 1, true), "the man page lacks " .. c.name)
      assert.truthy(man:find((c.summary:gsub("%-", "\\-")), 1, true), "the man page lacks the summary of " .. c.name)
      assert.truthy(bash:find("\n    " .. c.name .. ") ", 1, true), "bash completion lacks " .. c.name)
      assert.truthy(zsh:find("\n    " .. c.name .. ") ", 1, true), "zsh completion lacks " .. c.name)
      assert.truthy(zsh:find("'" .. c.name .. "\\:", 1, true), "zsh completion does not describe " .. c.name)
    end
    -- man renders without warnings
    local p = io.popen("MANWIDTH=80 man --warnings -l " .. T.q(T.root .. "/" .. MAN) .. " 2>&1 >/dev/null")
    local warnings = p:read("a")
    p:close()
    assert.are.equal("", warnings)
  end)

  it("bash completes commands, verbs and each command's options", function()
    local set, out = bash_complete("gpurent ")
    for _, c in ipairs(cli.COMMANDS) do assert.truthy(set[c.name], c.name .. " not completed: " .. out) end
    set, out = bash_complete("gpurent bi")
    assert.truthy(set.billing, out)
    set, out = bash_complete("gpurent billing ")
    assert.truthy(set["power-off"] and set.status and set.release, out)
    set, out = bash_complete("gpurent status --")
    assert.truthy(set["--json"] and set["--help"], out)
    set, out = bash_complete("gpurent exec h1 --t")
    assert.truthy(set["--timeout"], out)
    set, out = bash_complete("gpurent run autodl_t")
    assert.truthy(set.autodl_train, out)
  end)

  it("make install puts the man page and completions in place; make uninstall removes all it installed", function()
    local prefix = T.tmpdir()
    assert.is_true(os.execute("make -s install PREFIX=" .. T.q(prefix .. "/p") .. " >/dev/null 2>&1"))
    for _, f in ipairs({"bin/gpurent", "share/man/man1/gpurent.1", "share/bash-completion/completions/gpurent",
                        "share/zsh/site-functions/_gpurent", "share/gpurent/lua/gpurent/cli/init.lua"}) do
      assert.truthy(require("lfs").attributes(prefix .. "/p/" .. f), f .. " not installed")
    end
    assert.is_true(os.execute("make -s uninstall PREFIX=" .. T.q(prefix .. "/p") .. " >/dev/null 2>&1"))
    local p = io.popen("find " .. T.q(prefix .. "/p") .. " -type f -o -type l")
    local left = p:read("a")
    p:close()
    assert.truthy(require("lfs").attributes(prefix), "uninstall removed directories above PREFIX")
    T.rmtree(prefix)
    assert.are.equal("", left)
  end)
end)
