# shellcheck shell=sh
# Measure storage tiers and cgroup memory/CPU in one round trip (storage.measure, and
# folded into the run probe). TIERS: "NAME<TAB>PATH" lines, a PATH of ~ or ~/x is the
# box's $HOME. Prints "tier NAME bytes|inodes <df line>" or "tier NAME missing",
# "cg v1|v2|none", the cgroup files (mem_*, cpu_*), host_mem, host_cores.
# gpurent-include: measure_lib.sh
measure_tiers @TIERS@
measure_cgroup
