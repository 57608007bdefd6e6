-- install_phase_spec.lua: the remote install (seed AD9). The filter under dash and
-- bash with a stand-in interpreter that records what pip was given (no network): the
-- framework pins (torch, torchvision, torchaudio, nvidia-*) dropped, everything else
-- kept, option lines kept, pip not run when nothing is left. Then on the simulated
-- AutoDL, inside recipes/autodl_train.lua: the install phase runs between prepare and
-- launch, the pins probe reads the pushed requirements (not n/a), and the filtered
-- file holds no framework pin.
local remote = require "gpurent.remote"
local testbed = require "testbed"
local q = T.q

local FILTER = "torch\ntorchvision\ntorchaudio\nnvidia-*"
local REQS = table.concat({
  "torch<2.5  # the project's stale pin", "torchvision==0.1.0", "TorchAudio>=0.1", "nvidia-cudnn-cu12==9.1.0",
  "numpy==1.26.4", "torchmetrics>=1.0", "--extra-index-url https://example.invalid/simple", "", "# a comment",
  "Pillow ; python_version > '3'",
}, "\n") .. "\n"

-- A stand-in interpreter: `-c ...` prints a torch version, `-m pip install -r F` copies F.
local function fake_python(dir)
  local path = dir .. "/python"
  T.write(path, "#!/bin/sh\nif [ \"$1\" = -c ]; then echo 2.8.0+cu128; exit 0; fi\n" ..
    "if [ \"$1\" = -m ] && [ \"$2\" = pip ]; then cp \"$5\" " .. q(dir .. "/pip-got.txt") .. "; echo installed; exit 0; fi\nexit 9\n")
  os.execute("chmod +x " .. q(path))
  return path
end

describe("the remote install's filter", function()
  for _, sh in ipairs({"dash", "bash"}) do
    it(sh .. ": drops the framework pins, keeps the rest, gives pip the rest", function()
      local dir = T.tmpdir()
      T.write(dir .. "/requirements.txt", REQS)
      local py = fake_python(dir)
      local script = remote.script("install_reqs", {CODE = dir, REQ = "requirements.txt", FILTER = FILTER, PY = py,
        OUT = dir .. "/meta/req.txt"})
      T.write(dir .. "/s.sh", script)
      local f = io.popen(sh .. " " .. q(dir .. "/s.sh") .. " 2>&1")
      local out = f:read("a")
      f:close()
      assert.truthy(out:find("filtered torch<2.5\n", 1, true), out)
      assert.truthy(out:find("filtered torchvision==0.1.0\n", 1, true), out)
      assert.truthy(out:find("filtered TorchAudio>=0.1\n", 1, true), out)
      assert.truthy(out:find("filtered nvidia-cudnn-cu12==9.1.0\n", 1, true), out)
      assert.truthy(out:find("kept 3\n", 1, true), out)
      assert.truthy(out:find("pip_exit 0\n", 1, true), out)
      assert.truthy(out:find("torch_before 2.8.0+cu128\n", 1, true) and out:find("torch_after 2.8.0+cu128", 1, true), out)
      local got = T.read(dir .. "/pip-got.txt")
      assert.are.equal("numpy==1.26.4\ntorchmetrics>=1.0\n--extra-index-url https://example.invalid/simple\n" ..
        "Pillow ; python_version > '3'\n", got)
      -- only framework pins: pip is not run at all
      os.remove(dir .. "/pip-got.txt")
      T.write(dir .. "/requirements.txt", "torch==2.4.0\nnvidia-nccl-cu12\n")
      f = io.popen(sh .. " " .. q(dir .. "/s.sh") .. " 2>&1")
      out = f:read("a")
      f:close()
      assert.truthy(out:find("kept 0\n", 1, true), out)
      assert.falsy(out:find("pip_exit", 1, true), out)
      assert.is_nil(T.read(dir .. "/pip-got.txt"))
      T.rmtree(dir)
    end)
  end
end)

local ok_tb, why = testbed.available()

describe("the install phase on the simulated AutoDL", function()
  if not ok_tb then pending("testbed unavailable: " .. why); return end
  local tb, code
  setup(function()
    tb = testbed.new()
    tb:up("n1", "--region westDC2 --data-size 256M --fs-size 64M --fs-inodes 4000")
    -- the image's torch build, as the pins probe reads it (a dist-info directory)
    local o, rc = tb:exec("n1", "d=$(ls -d /root/miniconda3/lib/python3*)/site-packages && " ..
      "mkdir -p \"$d/torch-2.8.0+cu128.dist-info\"")
    assert(rc == 0, o)
    code = tb.dir .. "/code"
    os.execute("cp -r " .. q(T.root .. "/examples/tiny-train") .. " " .. q(code))
    T.write(code .. "/requirements.txt", "torch<2.5  # stale\ntorchvision==0.1.0\nnvidia-cudnn-cu12==9.1.0\n")
  end)
  teardown(function() if tb then tb:down() end end)

  it("runs between prepare and launch: the probe reads the pushed file, the pins are filtered out", function()
    local args = testbed.train_args("n1", {local_dir = tb.dir .. "/pulled"}):gsub("code=examples/tiny%-train", "code=" .. q(code))
    local c, out, err = tb:gpurent(args)
    assert.are.equal(0, c, out .. err)
    local id = out:match("%[run%] run (%S+):")
    local active = "/root/autodl-tmp/tiny/active/" .. id
    assert.truthy(out:find("[install] pins probe AD9 on the pushed requirements: fail: " .. active ..
      "/code/requirements.txt:1 torch<2.5 would replace the image's torch 2.8.0+cu128", 1, true), out)
    assert.truthy(out:find("[install] filtered out of requirements.txt (torch, torchvision, torchaudio, nvidia-*; the " ..
      "image's build is kept): torch<2.5; torchvision==0.1.0; nvidia-cudnn-cu12==9.1.0", 1, true), out)
    assert.truthy(out:find("[install] nothing else to install: pip not run", 1, true), out)
    local p_install, p_launch, p_prepare = out:find("[install]", 1, true), out:find("[launch]", 1, true),
      out:find("[prepare] smoke passed", 1, true)
    assert.truthy(p_prepare < p_install and p_install < p_launch, out)
    local o, rc = tb:exec("n1", "cat " .. active .. "/.gpurent/requirements.remote.txt")
    assert.are.equal(0, rc, o)
    assert.are.equal("", o)
  end)
end)
