# shellcheck shell=sh
# tb_runs PORT: the pinned TensorBoard's own answer to /data/runs on 127.0.0.1:PORT
# ("tbrc N", and "tbbody JSON" on one line when curl exited 0). A library.
tb_runs() {
  tbbody=$(curl -s --noproxy '*' --max-time 5 "http://127.0.0.1:$1/data/runs" 2>/dev/null)
  tbrc=$?
  command -v curl >/dev/null 2>&1 || tbrc=127
  echo "tbrc $tbrc"
  [ "$tbrc" -eq 0 ] && printf 'tbbody %s\n' "$(printf '%s' "$tbbody" | tr '\n' ' ')"
  return 0
}
