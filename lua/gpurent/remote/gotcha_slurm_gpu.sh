# shellcheck shell=sh
# S-GPU-ALLOC (gotchas/slurm.lua): a one-minute allocation with one GPU (srun, the
# profile's partition/account/QoS/GRES in OPTIONS, one a line) that lists what it sees:
# nvidia-smi -L, CUDA_VISIBLE_DEVICES, the profile's PYTHON, conda and `module`, and
# the same tools on the login node. Bounded: srun --immediate=WAIT gives up when the
# allocation does not start in time (inconclusive), timeout ends a hang.
OPTIONS=@OPTIONS@; WAIT=@WAIT@; PYTHON=@PYTHON@
# shellcheck disable=SC2016 # expanded where it runs: on the login node and in the job
TOOLS='for t in "$PYTHON" conda; do echo "${W}_tool $t $(command -v "$t" 2>/dev/null || echo none)"; done
if command -v module >/dev/null 2>&1 || [ -n "${MODULESHOME:-}" ]; then echo "${W}_module yes"; else echo "${W}_module no"; fi'
# shellcheck disable=SC2034 # W is read by $TOOLS
W=login; eval "$TOOLS"
if ! command -v srun >/dev/null 2>&1; then echo "srun_rc 127"; echo "done"; exit 0; fi
set --
while IFS= read -r o; do [ -n "$o" ] && set -- "$@" "$o"; done <<EOF_OPTS
$OPTIONS
EOF_OPTS
# shellcheck disable=SC2016 # runs in the allocation
inner='nvidia-smi -L 2>&1 | sed "s/^/smi /"; echo "cvd ${CUDA_VISIBLE_DEVICES:-unset}"; echo "node $(hostname)"; W=compute; eval "$TOOLS"'
out=$(PYTHON=$PYTHON TOOLS=$TOOLS timeout $((WAIT + 60)) srun "$@" --immediate="$WAIT" -t 1 -N 1 -n 1 --export=ALL sh -c "$inner" 2>&1)
rc=$?
echo "srun_rc $rc"
printf '%s\n' "$out" | head -n 40 | sed 's/^/out /'
echo "done"
