# shellcheck shell=sh
# U-BUFFER (gotchas/universal.lua): every python's stdout target and whether it runs
# unbuffered: "py PID|STDOUT|N_PYTHONUNBUFFERED|ARGS".
# gpurent-include: procs_lib.sh
python_stdout() {
  d=$1; pid=$2
  case "$3" in python|python3|python3.*) ;; *) return 0 ;; esac
  args=$(proc_args "$d")
  out=$(readlink "$d/fd/1" 2>/dev/null)
  unb=$(tr '\0' '\n' < "$d/environ" 2>/dev/null | grep -c '^PYTHONUNBUFFERED=.')
  echo "py $pid|$out|$unb|$args"
}
for_each_proc python_stdout
echo "done"
