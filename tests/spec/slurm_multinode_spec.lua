-- slurm_multinode_spec.lua: multi-node jobs on the Slurm platform, as far as a
-- one-node testbed (tests/sim/slurm-sim) allows: the command wrapper
-- (slurm.multinode_command) run by a real job, where srun starts it once a node with
-- the rendezvous from Slurm's variables (MASTER_ADDR is the allocation's first host,
-- NODE_RANK the node's id) and the recipe's quoting intact; and slurm_train with
-- nodes=2, whose batch script asks for two nodes: this one-node cluster takes the job
-- and holds it PENDING (PartitionNodeLimit), which watch reports as pending - never
-- stalled - with a note that the reason does not clear by waiting. Needs root and
-- `make deps`: fails (not skips) without them.
local slurmbed = require "slurmbed"

local q = T.q

describe("multi-node Slurm jobs", function()
  local c, S
  setup(function()
    assert(slurmbed.available())
    c = slurmbed.new()
    c:up()
    S = require("gpurent.platform").of("slurm")
    c:workspace{simcluster = slurmbed.SITE}
  end)
  teardown(function() if c then c:teardown() end end)

  it("runs the command once a node through srun with the rendezvous from Slurm's variables", function()
    -- what launch.expand makes of a command: quoted paths, a $ the node's shell expands
    local command = [[echo "rank=$NODE_RANK of $NNODES addr=$MASTER_ADDR port=$MASTER_PORT world=$WORLD_SIZE" ]] ..
      [[host=$(hostname) > '/root/mn out/rank'$NODE_RANK.txt]]
    local wrapped = S.multinode_command(command, 2)
    assert.truthy(wrapped:find("srun --nodes=\"$NNODES\" --ntasks-per-node=1 --kill-on-bad-exit=1 bash -c", 1, true), wrapped)
    assert.are.equal(command, S.multinode_command(command, 1), "one node: the command unchanged")
    -- a job of one node (all this cluster has) with the batch lines a nodes=N run gets
    T.write(c.dir .. "/slurm/home/mn.sh", "#!/bin/bash\n#SBATCH --nodes=1\n#SBATCH --ntasks-per-node=1\n" ..
      "#SBATCH --gres=gpu:1\n#SBATCH -o /root/mn.out\nmkdir -p '/root/mn out'\n" .. wrapped .. "\n")
    local id = c:sbatch("mn.sh")
    assert.are.equal("COMPLETED", c:wait_state(id, {COMPLETED = true, FAILED = true, CANCELLED = true}, 60),
      c:ssh("cat mn.out"))
    local port = 20000 + tonumber(id) % 20000
    assert.are.equal(string.format("rank=0 of 1 addr=node1 port=%d world=1 host=node1\n", port),
      c:ssh("cat '/root/mn out/rank0.txt'"))
    assert.truthy(c:ssh("cat mn.out"):find("[gpurent] multi-node: 1 node(s) node1, rendezvous node1:" .. port, 1, true))
  end)

  it("refuses a reserved line in the command and a node count below 1", function()
    local errors = require "gpurent.util.errors"
    local ok, e = pcall(S.multinode_command, "echo a\n" .. S.MULTINODE_END .. "\necho b", 2)
    assert.is_false(ok)
    assert.are.equal(2, errors.exit_code(e))
    ok, e = pcall(S.multinode_command, "echo a", 0)
    assert.is_false(ok)
    assert.truthy(errors.message(e):find("nodes=0", 1, true), errors.message(e))
  end)

  it("slurm_train nodes=2 asks for two nodes; on one node the job pends with a reason that waiting does not clear", function()
    local code, out, err = c:gpurent(table.concat({"run recipes/slurm_train.lua host=cluster project=mn profile=simcluster",
      "code=examples/tiny-train", q("train={python} train.py --out {out} --steps 4 --step-seconds 0.1"),
      q("box_load={python} load_check.py {}"), "interval=0.5", "max_wait=6", "gotchas=no", "nodes=2",
      "local_dir=" .. q(c.pulled)}, " "), 180)
    local all = out .. err
    local job = out:match("under Slurm job (%d+) %(sbatch ")
    assert.truthy(job, all)
    finally(function() c:ssh("scancel " .. job) end)
    -- Slurm takes it (EnforcePartLimits=NO, its default) and holds it: pending, never stalled
    assert.truthy(all:find("job " .. job .. " PENDING (PartitionNodeLimit), PartitionNodeLimit does not clear by " ..
      "waiting: the job asks for more nodes than the partition has or allows (--nodes)", 1, true), all)
    assert.truthy(all:find("TIMEOUT: still not finished", 1, true), all)
    assert.falsy(all:find("STALLED", 1, true), all)
    assert.are_not.equal(0, code, all)
    local run_id = out:match("%[run%] run (%S+):")
    local batch = c:ssh("cat scratch/mn/active/" .. run_id .. "/.gpurent/a1/batch.sh")
    assert.truthy(batch:find("#SBATCH --nodes=2\n#SBATCH --ntasks-per-node=1\n", 1, true), batch)
    local script = c:ssh("cat scratch/mn/active/" .. run_id .. "/.gpurent/run-v1.sh")
    assert.truthy(script:find("srun --nodes=", 1, true), "the wrapper does not launch through srun:\n" .. script)
    assert.are.equal("PENDING", c:job_state(job))
  end)
end)
