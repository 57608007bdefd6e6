# shellcheck shell=sh
# U-SCRIPT-CHANGED (gotchas/universal.lua): every running shell script with its
# process start and the file's mtime: "sc PID START_EPOCH MTIME PATH".
# gpurent-include: procs_lib.sh
btime=$(awk '/^btime/ {print $2}' /proc/stat); hz=$(getconf CLK_TCK 2>/dev/null || echo 100)
script_age() {
  d=$1; pid=$2
  case "$3" in bash|sh|dash) ;; *) return 0 ;; esac
  args=$(proc_args "$d")
  set -f
  # shellcheck disable=SC2086 # argv, joined by spaces above, split back into words (no globbing: set -f)
  set -- $args
  set +f; shift
  while [ $# -gt 0 ]; do case $1 in -*) shift ;; *) break ;; esac; done
  [ $# -gt 0 ] || return 0
  f=$1; case $f in /*) ;; *) f="$(readlink "$d/cwd")/$f" ;; esac
  [ -f "$f" ] || return 0
  st=$(sed 's/^.*) //' "$d/stat" | cut -d' ' -f20)
  mt=$(stat -c %Y "$f" 2>/dev/null) || return 0
  echo "sc $pid $((btime + st / hz)) $mt $f"
}
for_each_proc script_age
echo "done"
