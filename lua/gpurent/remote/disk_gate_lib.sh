# shellcheck shell=sh
# The per-cell disk-budget gate (a library, included by run_queue.sh: the on-box sweep
# queue, before it takes each cell; and by slurm_queue_submit.sh into each array task's
# batch script, before the cell's wrapper runs on the compute node). LIFECYCLE.md: the
# check before each cell is a gate (abort below the floor), not a printed number.
#   disk_gate LINES   LINES: "tier<TAB>min free bytes<TAB>min free inodes<TAB>path", one
#                     a line (gpurent.lifecycle.queue.gate_lines). Returns 0 when every
#                     tier is at or above both floors; else 1 with GATE_SHORT naming the
#                     tier, its path and the dimension (bytes or inodes) that is short.
#                     GATE_NOTE: a tier whose filesystem reports no inode count (only
#                     its bytes were gated), for the caller's log; empty otherwise.
# shellcheck disable=SC2034 # GATE_SHORT and GATE_NOTE are the caller's to read
disk_gate() {
  GATE_SHORT=; GATE_NOTE=
  dg_tab=$(printf '\t')
  while IFS=$dg_tab read -r dg_tier dg_bytes dg_inodes dg_path; do
    [ -n "$dg_tier" ] || continue
    dg_b=$(df -P -B1 "$dg_path" 2>/dev/null | awk 'NR==2{print $4}')
    dg_i=$(df -P -i "$dg_path" 2>/dev/null | awk 'NR==2{print $4}')
    case $dg_b in ''|*[!0-9]*) GATE_SHORT="tier $dg_tier ($dg_path): df -B1 gives no free bytes"; return 1;; esac
    if [ "$dg_b" -lt "$dg_bytes" ]; then
      GATE_SHORT="tier $dg_tier ($dg_path) is short of bytes: $dg_b free, below the floor of $dg_bytes"; return 1
    fi
    case $dg_i in
      ''|*[!0-9]*) GATE_NOTE="$GATE_NOTE${GATE_NOTE:+; }tier $dg_tier ($dg_path): df -i reports no inode count; only its bytes are gated" ;;
      *) if [ "$dg_i" -lt "$dg_inodes" ]; then
           GATE_SHORT="tier $dg_tier ($dg_path) is short of inodes: $dg_i free, below the floor of $dg_inodes"; return 1
         fi ;;
    esac
  done <<EOF_GATE
$1
EOF_GATE
  return 0
}
