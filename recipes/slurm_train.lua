-- slurm_train.lua: one training job on a Slurm cluster, the same arc as autodl_train.lua:
-- connect (the login node) -> setup -> audit -> environment -> prepare -> launch (sbatch:
-- gpurent.platform.slurm) -> watch (the job's state: PENDING is not stalled) -> close
-- -> pull. No teardown: nothing to power off; a job is stopped with scancel (gated).
-- Time limits and pre-emption: with the profile's `slurm.requeue: true` and `signal: USR1`
-- the trainer gets SIGUSR1 `signal_seconds` before the limit; it writes its checkpoint
-- and exits, and the job requeues itself (scontrol requeue; Slurm does not requeue a
-- TIMEOUT). The restarted job finds the newest checkpoint (checkpoints.scratch, e.g.
-- out/latest.pth) in $GPURENT_RESUME and $GPURENT_RESTART > 0: resume from it. Watch
-- says "requeued (attempt N), resuming from <checkpoint>"; it is never a relaunch. Slurm
-- requeues such a job itself when it is pre-empted or its node fails (the watch waits
-- for it the same way); with `requeue: false` the job ends PREEMPTED / NODE_FAIL, and the
-- watch ends the run naming that state: it relaunches nothing.
-- Multi-node: nodes=2 asks for two nodes (--nodes=2, one task each) and runs the train
-- command once a node through srun, with MASTER_ADDR MASTER_PORT NNODES NODE_RANK
-- WORLD_SIZE from Slurm's variables: 'train=torchrun --nnodes=$NNODES --node_rank=$NODE_RANK
-- --nproc_per_node=gpu --master_addr=$MASTER_ADDR --master_port=$MASTER_PORT train.py'.
-- Each step is a phase in lua/gpurent/lifecycle/phases/; gpurent.lifecycle runs them
-- and owns errors, the ledger, Ctrl-C and the ending. Your own recipe replaces one
-- (lifecycle.replace(list, "watch", mine)) or inserts its own (lifecycle.insert_after).
-- The parameters every lifecycle recipe shares are declared once, by name, in
-- gpurent.lifecycle.params; this recipe's own (and its changes to shared ones) are tables.
local shared = require "gpurent.lifecycle.params"
local params = gpurent.recipe {
  description = "Train one job on a Slurm cluster end to end: audit, sbatch, watch the job, seal, pull, verify",
  params = shared.list {
    {name = "host", help = "ssh alias of the login node (gpurent host add NAME 'ssh user@login')"},
    {name = "profile", default = "slurm", help = "the cluster's profile (slurm, or a site overlay extending it)"},
    "project", "code", "train", "smoke", "expected", "load", "box_load", "local_dir", "secrets",
    "interval", "stall", "expected_seconds", "max_relaunches", "max_wait", "ckpt_size", "gotchas",
    {name = "nodes", type = "integer", default = 1, help = "nodes for one multi-node job: --nodes=N, the command " ..
     "run once a node by srun with MASTER_ADDR MASTER_PORT NNODES NODE_RANK WORLD_SIZE set (for torchrun)"},
    "id",
  },
}
local lifecycle = require "gpurent.lifecycle"
local phases = require "gpurent.lifecycle.phases"
local run = require "gpurent.lifecycle.run"

local r = run.new{host = params.host, project = params.project, recipe = "slurm_train", id = params.id, profile = params.profile,
  local_dir = params.local_dir, interval = params.interval, stall_seconds = params.stall,
  expected_seconds = params.expected_seconds, max_relaunches = params.max_relaunches, max_wait = params.max_wait,
  roster = params.expected, load_cmd = params.load, nodes = params.nodes}
local P = require("gpurent.platform").of(r.profile)
if params.nodes ~= 1 and not P.multinode_command then
  gpurent.usage_error("nodes=" .. params.nodes .. ": profile " .. r.profile_name .. " has no multi-node launcher (a Slurm profile has)", 0)
end
local train = P.multinode_command and P.multinode_command(params.train, params.nodes) or params.train
r:say("run", "run %s: %s on %s (profile %s); re-attach from any shell: gpurent watch %s", r.id, params.project,
  params.host, r.profile_name, r.id)

lifecycle.run(r, phases.train(), {options = {
  audit = {ckpt_bytes = params.ckpt_size, gotchas = params.gotchas},
  environment = {secrets = run.secrets_from_env(params.secrets)},
  prepare = {code_dir = params.code, smoke = params.smoke, command = params.train, params = params},
  launch = {command = train, roster = params.expected, box_load = params.box_load},
  close = {roster = params.expected, box_load = params.box_load},
  pull = {roster = params.expected, load_cmd = params.load, local_dir = params.local_dir},
  teardown = {skip = true},
}})
