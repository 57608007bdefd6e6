-- gpurent tunnel HOST [LOCAL:]REMOTE ...: local port forwarding (as ssh -L
-- LOCAL:127.0.0.1:REMOTE) over direct-tcpip channels of gpurent's own connection
-- (lua/gpurent/transport/tunnel.lua): the same ssh_config and host-key checks as every
-- command, many connections at once, and a dropped session reopened by the next
-- connection. Runs until Ctrl-C, which closes everything and exits 130.
local cli = require "gpurent.cli"
local errors = require "gpurent.util.errors"

local M = {}
M.usage = [[usage: gpurent tunnel HOST [LOCAL:]REMOTE ... [--accept-new-host]
Forwards local ports to ports on HOST (an ssh_config alias or user@host:port), like
ssh -L LOCAL:127.0.0.1:REMOTE: each local port listens on 127.0.0.1 only, and every
connection to it becomes a connection to 127.0.0.1:REMOTE as the box sees it. LOCAL
defaults to REMOTE; 0 picks a free port. Prints one line per port with the local URL,
e.g. for a box's custom service port and its TensorBoard:
  gpurent tunnel gpu-proj-1 6006 6007
  http://127.0.0.1:6006 -> gpu-proj-1 127.0.0.1:6006
  http://127.0.0.1:6007 -> gpu-proj-1 127.0.0.1:6007
A dropped SSH session is reopened by the next connection; the ports stay open.
Runs until Ctrl-C.
--accept-new-host records the key of a host never seen before (as
StrictHostKeyChecking=accept-new); a changed key is always refused.
Exit codes: 130 after Ctrl-C (every port closed), 1 a local port cannot be opened,
255 the box cannot be reached, 2 usage, 3 host key refused.]]

local function port_of(s, spec, zero_ok)
  local n = s:match("^%d+$") and math.tointeger(tonumber(s))
  if not n or n > 65535 or (n == 0 and not zero_ok) then
    errors.usage(string.format("tunnel: %q: ports are numbers 1-65535%s, as [LOCAL:]REMOTE, e.g. 6006 or 16006:6006\n%s",
      spec, zero_ok and " (LOCAL 0: any free port)" or "", M.usage), 0)
  end
  return n
end

local function parse(args)
  local opts, pos = cli.options(args, {accept_new_host = "flag"}, M.usage)
  if #pos == 0 then errors.usage("tunnel needs HOST and at least one port\n" .. M.usage, 0) end
  if pos[1]:sub(1, 1) == "-" then errors.usage("tunnel: HOST " .. pos[1] .. " looks like an option\n" .. M.usage, 0) end
  if #pos == 1 then errors.usage("tunnel needs at least one [LOCAL:]REMOTE port after HOST, e.g. gpurent tunnel " ..
    pos[1] .. " 6006\n" .. M.usage, 0) end
  local ports = {}
  for i = 2, #pos do
    local spec = pos[i]
    local l, r = spec:match("^([^:]*):([^:]*)$")
    if not l then l, r = nil, spec end
    if r:find(":", 1, true) then port_of("x", spec) end
    local remote = port_of(r, spec)
    ports[#ports + 1] = {remote = remote, localp = l and port_of(l, spec, true) or remote}
  end
  return pos[1], ports, opts
end

function M.main(args)
  local host, ports, opts = parse(args)
  local tunnel = require "gpurent.transport.tunnel"
  local sys = require "gpurent.util.sys"
  io.stdout:setvbuf("line")
  local ok, inst = pcall(require("gpurent.transport.instance").connect, host, {accept_new_host = opts.accept_new_host})
  if not ok then
    if errors.has_own_exit(inst) then error(inst, 0) end
    io.stderr:write("gpurent: tunnel ", host, ": ", errors.message(inst), "\n")
    return 255
  end
  local list = {}
  local function close_all()
    for _, t in ipairs(list) do pcall(t.close, t) end
    inst:close()
  end
  local function log(msg) io.stderr:write("[tunnel] ", msg, "\n") end
  for _, p in ipairs(ports) do
    local okf, t = pcall(tunnel.open, inst, p.remote, {local_port = p.localp, log = log})
    if not okf then
      close_all()
      if errors.has_own_exit(t) then error(t, 0) end
      io.stderr:write("gpurent: tunnel ", host, " ", p.localp, ":", p.remote, ": ", errors.message(t), "\n")
      return t.code == "listen" and 1 or 255
    end
    list[#list + 1] = t
    io.stdout:write(t.url, " -> ", host, " ", t.remote_host, ":", t.remote_port, "\n")
  end
  io.stdout:flush()
  local served, err = pcall(tunnel.serve, list)
  if sys.interrupted() or errors.is(err, "interrupted") then
    sys.clear_interrupt()
    close_all()
    io.stderr:write("[tunnel] closed\n")
    sys.set_interrupted()
    return 130
  end
  close_all()
  if not served then error(err, 0) end
  return 0
end

return M
