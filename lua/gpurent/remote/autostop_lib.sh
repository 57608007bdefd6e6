# shellcheck shell=sh
# Shared by the autostop_*.sh scripts (lua/gpurent/billing/autostop.lua): the state
# dir, the exact-PID identity check of the watchdog, and stopping it. A library:
# functions only, no placeholders. ST matches autostop.STATE in autostop.lua.
ST="${HOME:-/root}/.gpurent/autostop"
is_uint() { case "$1" in ''|*[!0-9]*) return 1;; esac; return 0; }
pfield() { sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f"$2"; }
# alive: /proc/PID is the watchdog we started (start time and script path match), not a zombie
wd_alive() {
  is_uint "$1" && [ -d "/proc/$1" ] && [ "$(pfield "$1" 1)" != Z ] && [ "$(pfield "$1" 20)" = "$2" ] &&
    tr '\0' ' ' < "/proc/$1/cmdline" 2>/dev/null | grep -qF -- "$ST/autostop-"
}
WPID=; WST=
[ -f "$ST/pid" ] && read -r WPID WST < "$ST/pid"

# wd_stop SESSION: stop the live watchdog: its exact tmux session, then its exact PID
# (TERM, bounded wait, KILL). Never a name pattern. Exits 3 when it will not die.
wd_stop() {
  live=; wd_alive "$WPID" "$WST" && live=1
  if command -v tmux >/dev/null 2>&1 && tmux has-session -t "=$1" 2>/dev/null; then
    tmux kill-session -t "=$1" 2>/dev/null && echo "gr_stopped_session $1"
  fi
  if [ -n "$live" ]; then
    if wd_alive "$WPID" "$WST"; then
      pg=$(pfield "$WPID" 3)
      if [ "$pg" = "$WPID" ]; then kill -TERM -- "-$WPID" 2>/dev/null; else kill -TERM "$WPID" 2>/dev/null; fi
    fi
    i=0; while wd_alive "$WPID" "$WST" && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
    if wd_alive "$WPID" "$WST"; then kill -KILL "$WPID" 2>/dev/null; sleep 0.2; fi
    if wd_alive "$WPID" "$WST"; then echo "gr_refuse watchdog PID $WPID is still alive"; exit 3; fi
    echo "gr_stopped_pid $WPID"
  fi
}
