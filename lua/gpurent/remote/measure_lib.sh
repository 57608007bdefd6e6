# shellcheck shell=sh
# Storage and memory readings (lua/gpurent/lifecycle/storage.lua), shared by
# storage_measure.sh and run_probe.sh. A library: functions only, no placeholders.
# gpurent-include: home_path.sh
LC_ALL=C; export LC_ALL
tier() {
  if [ ! -e "$2" ]; then echo "tier $1 missing"; return 0; fi
  echo "tier $1 bytes $(df -P -B1 "$2" 2>&1 | tail -n 1)"
  echo "tier $1 inodes $(df -P -i "$2" 2>&1 | tail -n 1)"
}
# measure_tiers LINES: one "NAME<TAB>PATH" a line
measure_tiers() {
  tab=$(printf '\t')
  while IFS= read -r line; do
    [ -n "$line" ] || continue
    tier "${line%%"$tab"*}" "$(home_path "${line#*"$tab"}")"
  done <<EOF_TIERS
$1
EOF_TIERS
}
rd() { [ -r "$2" ] && echo "$1 $(tr '\n' ' ' < "$2")"; return 0; }
measure_cgroup() {
  if [ -r /sys/fs/cgroup/memory.max ]; then
    echo "cg v2"
    rd mem_limit /sys/fs/cgroup/memory.max; rd mem_usage /sys/fs/cgroup/memory.current
    rd mem_peak /sys/fs/cgroup/memory.peak; rd mem_events /sys/fs/cgroup/memory.events
    rd cpu_max /sys/fs/cgroup/cpu.max
  elif [ -r /sys/fs/cgroup/memory/memory.limit_in_bytes ]; then
    echo "cg v1"
    rd mem_limit /sys/fs/cgroup/memory/memory.limit_in_bytes
    rd mem_usage /sys/fs/cgroup/memory/memory.usage_in_bytes
    rd mem_peak /sys/fs/cgroup/memory/memory.max_usage_in_bytes
    rd mem_events /sys/fs/cgroup/memory/memory.oom_control
    rd cpu_quota /sys/fs/cgroup/cpu/cpu.cfs_quota_us; rd cpu_period /sys/fs/cgroup/cpu/cpu.cfs_period_us
  else
    echo "cg none"
  fi
  echo "host_mem $(awk '/^MemTotal:/ {printf "%.0f", $2 * 1024}' /proc/meminfo 2>/dev/null)"
  echo "host_cores $(getconf _NPROCESSORS_ONLN 2>/dev/null || nproc 2>/dev/null)"
}
