-- slurm_noacct_spec.lua: the fair-share probe (S-FAIRSHARE, lua/gpurent/gotchas/slurm.lua)
-- on a cluster that keeps no accounting (tests/sim/slurm-sim up --no-accounting: no
-- slurmdbd): sshare answers nothing and sacctmgr refuses, which is "n/a" with both
-- reasons - never ok with empty fields, never a failure of `gpurent check`. Needs root
-- and `make deps`: fails (not skips) without them.
local slurmbed = require "slurmbed"
local cjson = require "cjson"


describe("the Slurm fair-share probe without accounting", function()
  local c
  setup(function()
    assert(slurmbed.available())
    c = slurmbed.new()
    c:up("--no-accounting")
    c:workspace{simcluster = slurmbed.SITE}
  end)
  teardown(function() if c then c:teardown() end end)

  it("is n/a, saying no fair-share is kept and sacctmgr is not permitted", function()
    local code, out, err = c:gpurent("check cluster --profile simcluster --json --only S-FAIRSHARE")
    assert.are.equal(0, code, out .. err)
    local r = cjson.decode(out).results[1]
    assert.are.equal("S-FAIRSHARE", r.id)
    assert.are.equal("n/a", r.status, r.evidence)
    assert.truthy(r.evidence:find("no fair-share kept for this user", 1, true), r.evidence)
    assert.truthy(r.evidence:find("sacctmgr show assoc: not permitted (", 1, true), r.evidence)
  end)
end)
