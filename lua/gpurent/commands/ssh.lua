-- gpurent ssh HOST: an interactive shell on an instance. It runs the system's OpenSSH
-- client (openssh-client is already a dependency) rather than a libssh2 PTY channel:
-- a terminal session needs what OpenSSH already does well (PTY modes, window-size
-- changes, escape sequences, agent and X11 forwarding, ControlMaster), and running
-- ssh itself makes "the same configuration and host-key checks" true by construction:
-- the same ssh_config file gpurent resolves (GPURENT_SSH_CONFIG, as ssh -F; else
-- ~/.ssh/config, which Includes the aliases `gpurent host add` writes) and the same
-- known_hosts files and StrictHostKeyChecking. gpurent waits for ssh and exits with
-- its exit code.
local cli = require "gpurent.cli"
local errors = require "gpurent.util.errors"

local M = {}
M.usage = [=[usage: gpurent ssh HOST [-- COMMAND [ARGS ...]]
Opens an interactive shell (with a PTY) on HOST, an ssh_config alias (gpurent host add)
or user@host:port, by running OpenSSH's ssh with the configuration gpurent uses:
ssh -F $GPURENT_SSH_CONFIG when that is set, else your ~/.ssh/config (which Includes
~/.ssh/gpurent_config); the host key is checked by ssh against the same known_hosts.
Words after -- are passed to ssh as the remote command (as `ssh HOST COMMAND`); for one
command with its exit code, `gpurent exec HOST -- COMMAND` is the usual way.
`gpurent ssh HOST --print` prints the ssh command line instead of running it.
Exit codes: ssh's (the remote shell's exit code, 255 for an ssh error), 2 usage.]=]

local q = require("gpurent.util.shell").quote

-- The ssh argv for target: an alias goes as is (ssh resolves it from the config);
-- user@host:port becomes -p PORT user@host, which ssh does not parse itself.
local function ssh_words(target, command)
  local words = {"ssh"}
  local config = os.getenv("GPURENT_SSH_CONFIG")
  if config and config ~= "" then words[#words + 1] = "-F"; words[#words + 1] = config end
  local user, host, port = require("gpurent.transport.sshconfig").parse_target(target)
  if port then words[#words + 1] = "-p"; words[#words + 1] = tostring(port) end
  words[#words + 1] = "--"
  words[#words + 1] = user and (user .. "@" .. host) or host
  for _, w in ipairs(command) do words[#words + 1] = w end
  return words
end

local function split(args)
  for i, a in ipairs(args) do
    if a == "--" then return table.move(args, 1, i - 1, 1, {}), table.move(args, i + 1, #args, 1, {}) end
  end
  return args, {}
end

function M.main(args)
  local before, command = split(args)
  local opts, pos = cli.options(before, {print = "flag"}, M.usage)
  if #pos ~= 1 then
    errors.usage((#pos == 0 and "ssh needs HOST" or ("ssh takes one HOST; put a remote command after --: gpurent ssh " ..
      pos[1] .. " -- " .. table.concat(pos, " ", 2))) .. "\n" .. M.usage, 0)
  end
  if pos[1]:sub(1, 1) == "-" then errors.usage("ssh: HOST " .. pos[1] .. " looks like an option\n" .. M.usage, 0) end
  local words = ssh_words(pos[1], command)
  local line = {}
  for i, w in ipairs(words) do line[i] = q(w) end
  if opts.print then io.write(table.concat(line, " "), "\n"); return 0 end
  io.stdout:flush()
  local ok, how, code = os.execute(table.concat(line, " "))
  if how == "signal" then return 128 + code end
  return ok and 0 or code
end

return M
