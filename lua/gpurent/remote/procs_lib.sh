# shellcheck shell=sh
# for_each_proc FN: call `FN /proc/PID PID A0` once per running process except this
# shell and PID 1; A0 is the base name of argv[0] (the probe's own shell never matches
# a python or a script name). A library for the gotcha probes.
for_each_proc() {
  for d in /proc/[0-9]*; do
    pid=${d#/proc/}
    { [ "$pid" = "$$" ] || [ "$pid" = 1 ]; } && continue
    a0=$(tr '\0' '\n' < "$d/cmdline" 2>/dev/null | head -n 1) || continue
    a0=${a0##*/}
    "$1" "$d" "$pid" "$a0"
  done
}
# proc_args /proc/PID: the process's argv joined by spaces
proc_args() { tr '\0' ' ' < "$1/cmdline" 2>/dev/null; }
