# shellcheck shell=sh
# gpurent's one detach starter (lua/gpurent/remote/detach.sh), included by the scripts
# that start something that must outlive the SSH connection and gpurent itself: a
# run's wrapper (run_start.sh), the autostop watchdog (autostop_start.sh), and the
# on-box sweep queue. A library: functions only, no placeholders.
#
# detach_start SESSION MODE LOG CMD [ARG ...]
#   MODE auto: tmux session SESSION when tmux is installed, else nohup + setsid;
#   MODE tmux: tmux only; MODE nohup: nohup + setsid even when tmux is there.
#   Under nohup the command's output is appended to LOG (under tmux it is the pane's).
#   Sets DETACH_MODE=tmux|nohup. Returns 0 started, 1 tmux new-session failed,
#   4 MODE tmux but tmux is not installed.

# detach_quote WORD: WORD as one single-quoted shell word (tmux runs a command line)
detach_quote() {
  printf "'%s'" "$(printf '%s' "$1" | sed "s/'/'\\\\''/g")"
}

# shellcheck disable=SC2034 # DETACH_MODE is read by the including script
detach_start() {
  ds_session=$1; ds_mode=$2; ds_log=$3; shift 3
  DETACH_MODE=
  if [ "$ds_mode" != nohup ] && command -v tmux >/dev/null 2>&1; then
    ds_line="exec"
    for ds_w in "$@"; do ds_line="$ds_line $(detach_quote "$ds_w")"; done
    tmux new-session -d -s "$ds_session" "$ds_line" || return 1
    DETACH_MODE=tmux
    return 0
  fi
  [ "$ds_mode" = tmux ] && return 4
  if command -v setsid >/dev/null 2>&1; then
    nohup setsid "$@" < /dev/null >> "$ds_log" 2>&1 &
  else
    nohup "$@" < /dev/null >> "$ds_log" 2>&1 &
  fi
  DETACH_MODE="nohup"
  return 0
}
