# shellcheck shell=sh
# U-ZOMBIE-VRAM (gotchas/universal.lua): per-GPU memory use and every compute app with
# its process state: "smi_rc N", "gpu IDX, MiB", "app PID MiB STATE|gone", "done".
out=$(nvidia-smi --query-gpu=index,memory.used --format=csv,noheader,nounits 2>&1); rc=$?
echo "smi_rc $rc"
printf '%s\n' "$out" | sed 's/^/gpu /'
apps=$(nvidia-smi --query-compute-apps=pid,used_memory --format=csv,noheader,nounits 2>/dev/null)
printf '%s\n' "$apps" | while IFS=', ' read -r pid mem; do
  [ -n "$pid" ] || continue
  st=gone; [ -r "/proc/$pid/stat" ] && st=$(sed 's/^.*) //' "/proc/$pid/stat" | cut -d' ' -f1)
  echo "app $pid $mem $st"
done
echo "done"
