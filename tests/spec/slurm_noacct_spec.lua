-- slurm_noacct_spec.lua: the fair-share probe (S-FAIRSHARE, lua/gpurent/gotchas/slurm.lua)
-- on a cluster that keeps no accounting (tests/sim/slurm-sim up --no-accounting: no
-- slurmdbd): sshare answers nothing and sacctmgr refuses, which is "n/a" with both
-- reasons - never ok with empty fields, never a failure of `gpurent check`. Needs root
-- and `make deps`: fails (not skips) without them.
local slurmbed = require "slurmbed"
local cjson = require "cjson"

local sh = slurmbed.sh
local q = T.q

describe("the Slurm fair-share probe without accounting", function()
  local c
  setup(function()
    assert(slurmbed.available())
    c = slurmbed.new()
    c:up("--no-accounting")
    sh("mkdir -p " .. q(c.dir .. "/state") .. " " .. q(c.dir .. "/profiles"))
    T.write(c.dir .. "/profiles/simcluster.yaml", "extends: slurm\ntiers:\n  home: {path: /root}\n  scratch: {path: /root/scratch}\n")
  end)
  teardown(function()
    if c and c.dir and sh("test -d " .. q(c.dir) .. " && echo y"):match("y") then c:down() end
  end)

  it("is n/a, saying no fair-share is kept and sacctmgr is not permitted", function()
    local env = "GPURENT_PROFILE_PATH=" .. q(c.dir .. "/profiles") .. " GPURENT_STATE_DIR=" .. q(c.dir .. "/state") ..
      " HOME=" .. q(c.dir) .. " timeout -k 5 120"
    local code, out, err = T.run("check cluster --profile simcluster --json --only S-FAIRSHARE --ssh-config " ..
      q(c.ssh_config), {env = env, cwd = T.root})
    assert.are.equal(0, code, out .. err)
    local r = cjson.decode(out).results[1]
    assert.are.equal("S-FAIRSHARE", r.id)
    assert.are.equal("n/a", r.status, r.evidence)
    assert.truthy(r.evidence:find("no fair-share kept for this user", 1, true), r.evidence)
    assert.truthy(r.evidence:find("sacctmgr show assoc: not permitted (", 1, true), r.evidence)
  end)
end)
