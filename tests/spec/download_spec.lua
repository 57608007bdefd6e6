-- download_spec.lua: gpurent.lifecycle.download on the simulated AutoDL (seed AD1/AD2:
-- a stall is not a failure): a server on the host (instances share its loopback) that
-- stalls the first transfer mid-file; the loop times the attempt out, resumes the
-- partial file with a Range request, and the file on the box is whole. A URL that
-- never works fails after the given tries, naming each attempt.
local download = require "gpurent.lifecycle.download"
local hash = require "gpurent.util.hash"
local simbox = require "simbox"
local q = T.q

local SERVER = [[
import http.server, sys, time
data = open(sys.argv[1], "rb").read()
seen = []
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path != "/f.bin":
            self.send_error(404); return
        rng = self.headers.get("Range")
        with open(sys.argv[3], "a") as f: f.write((rng or "-") + "\n")
        start = int(rng.split("=")[1].split("-")[0]) if rng else 0
        body = data[start:]
        self.send_response(206 if rng else 200)
        if rng: self.send_header("Content-Range", "bytes %d-%d/%d" % (start, len(data) - 1, len(data)))
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        seen.append(1)
        if len(seen) == 1:
            self.wfile.write(body[:100000]); self.wfile.flush(); time.sleep(60); return
        self.wfile.write(body)
    def log_message(self, *a): pass
s = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
s.daemon_threads = True
with open(sys.argv[2] + ".tmp", "w") as f: f.write(str(s.server_address[1]))
import os; os.rename(sys.argv[2] + ".tmp", sys.argv[2])
s.serve_forever()
]]

local ok_sim, why = simbox.available()
local desc = ok_sim and describe or function(name) describe(name, function() pending(why) end) end

desc("the download retry loop on the testbed", function()
  local box, inst, dir, pid, port
  setup(function()
    box = simbox.new()
    inst = box:up("d1", "--region dA --data-size 32M --fs-size 16M")
    dir = T.tmpdir()
    local f = io.open(dir .. "/f.bin", "wb")
    for i = 1, 3000 do f:write(string.format("%099d\n", i)) end
    f:close()
    T.write(dir .. "/srv.py", SERVER)
    local p = io.popen("python3 " .. q(dir .. "/srv.py") .. " " .. q(dir .. "/f.bin") .. " " .. q(dir .. "/port") .. " " ..
      q(dir .. "/ranges") .. " >/dev/null 2>&1 & echo $!")
    pid = tonumber(p:read("a"):match("%d+"))
    p:close()
    for _ = 1, 100 do
      port = T.read(dir .. "/port")
      if port then break end
      os.execute("sleep 0.1")
    end
    assert(port, "the test server did not start")
  end)
  teardown(function()
    if pid then os.execute("kill " .. pid .. " 2>/dev/null") end
    if box then box:down() end
    if dir then T.rmtree(dir) end
  end)

  it("times out a stalled transfer, resumes the partial file, and ends with the whole file", function()
    local got = download.fetch(inst, inst.profile, {url = "http://127.0.0.1:" .. port .. "/f.bin",
      dest = "/root/autodl-tmp/data/f.bin", tries = 3, timeout = 2, backoff = 0})
    assert.are.equal(2, got.attempts)
    assert.are.equal(300000, got.bytes)
    local have = tonumber(got.failures[1]:match("^attempt 1 exit 124 have (%d+)$"))
    assert.truthy(have and have > 0 and have <= 100000, got.failures[1])
    -- the second request resumed where the partial file ended
    assert.are.equal("-\nbytes=" .. have .. "-\n", T.read(dir .. "/ranges"))
    local r = inst:sh("sha256sum < /root/autodl-tmp/data/f.bin && ! test -e /root/autodl-tmp/data/f.bin.part", {timeout = 30})
    assert.are.equal(0, r.code, r.stderr)
    assert.are.equal(hash.sha256_file(dir .. "/f.bin"), r.stdout:match("%x+"))
  end)

  it("fails after the given tries, naming each attempt", function()
    local ok, err = pcall(download.fetch, inst, inst.profile, {url = "http://127.0.0.1:" .. port .. "/missing",
      dest = "/root/autodl-tmp/data/missing.bin", tries = 2, timeout = 5, backoff = 0})
    assert.is_false(ok)
    local text = tostring(require("gpurent.util.errors").message(err))
    assert.matches("download of http://127%.0%.0%.1:%d+/missing to /root/autodl%-tmp/data/missing%.bin failed after 2 attempt", text)
    assert.matches("attempt 1 exit 22", text)
    assert.matches("attempt 2 exit 22", text)
  end)

  it("refuses bad arguments before touching the box", function()
    assert.has_error(function() download.fetch(inst, inst.profile, {url = "http://x/y", dest = "relative/path"}) end)
    assert.has_error(function() download.fetch(inst, inst.profile, {url = "http://x/y", hf = "org/m", dest = "/x"}) end)
    assert.has_error(function() download.fetch(inst, inst.profile, {url = "http://x/y", dest = "/x", tries = 0}) end)
  end)
end)
