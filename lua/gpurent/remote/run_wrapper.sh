#!/bin/bash
# shellcheck shell=sh
# gpurent run wrapper (lua/gpurent/remote/run_wrapper.sh, filled and written by
# lua/gpurent/lifecycle/detach.lua as <run>/.gpurent/run-vN.sh). Its own text is POSIX
# sh; it is started under bash so that the user's command and the profile's proxy hook
# may use bash. Never edited in place: a changed wrapper is a new file, so a live job's
# bash never reads a script that moved under it. The completion chain below runs on
# the box whatever the watcher does: command && durable sync && prune scratch && DONE.
ATT=${1:?usage: run-vN.sh ATTEMPT}
# shellcheck disable=SC2034 # VERSION makes each version's text (and so its file) distinct
VERSION=@VERSION@; RUN_ID=@RUN_ID@
M=@META@; D="$M/a$ATT"; LOG=@LOG@; OUT=@OUT@; CODE=@CODE@
HOOK=@HOOK@          # the profile's network.proxy_hook (shell code), or empty
CRED=@CRED_FILE@     # a credential file to source, or empty
ENVIRONMENT=@ENV@    # `export NAME='value'` lines built by detach.lua, or empty
COMMAND=@COMMAND@    # the user's command line
DURABLE_DIR=@DURABLE_DIR@; DURABLE_TIER=@DURABLE_TIER@
SYNC=@SYNC@          # file names under $OUT to copy to the durable tier, one a line
SCRATCH=@SCRATCH@    # file names under $OUT pruned after the sync, one a line
LOAD_CHECK=@LOAD_CHECK@  # shell code: exit 0 when the checkpoint "$CKPT" loads, or empty
mkdir -p "$D" "$OUT"
echo $$ > "$D/pid.tmp" && mv -f "$D/pid.tmp" "$D/pid"
date +%s > "$D/started"
mark() { printf 'exit=%s stage=%s at=%s\n' "$2" "$3" "$(date +%s)" > "$D/$1.tmp" && mv -f "$D/$1.tmp" "$D/$1"; }
say() { echo "[gpurent] $*" >> "$LOG"; }
[ -n "$HOOK" ] && eval "$HOOK"
if [ -n "$CRED" ] && [ -r "$CRED" ]; then
  # shellcheck source=/dev/null
  . "$CRED"
fi
export PYTHONUNBUFFERED=1 GPURENT_RUN_ID="$RUN_ID" GPURENT_OUT="$OUT" GPURENT_ATTEMPT="$ATT"
[ -n "$ENVIRONMENT" ] && eval "$ENVIRONMENT"
say "attempt $ATT of run $RUN_ID started $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(hostname)"
cd "$CODE" || { say "cannot cd to the code"; mark FAILED 1 cd; exit 1; }

# durable sync: copy, rename, re-read; the success line only after the hashes match
sync_durable() {
  dst=$DURABLE_DIR; tier=$DURABLE_TIER
  while IFS= read -r f; do
    [ -n "$f" ] || continue
    src="$OUT/$f"
    [ -f "$src" ] || { say "durable sync FAILED: $src is missing"; return 1; }
    if mkdir -p "$dst" 2>>"$LOG" && cp "$src" "$dst/$f.part" 2>>"$LOG" && mv -f "$dst/$f.part" "$dst/$f" 2>>"$LOG" &&
       [ "$(sha256sum < "$src")" = "$(sha256sum < "$dst/$f")" ]; then
      say "synced $f -> $dst/$f ($(wc -c < "$dst/$f") bytes, sha256 verified)"
    else
      rm -f "$dst/$f.part" 2>/dev/null
      say "durable sync FAILED: $src -> $dst/$f"
      say "  df -i $tier: $(df -P -i "$tier" 2>&1 | tail -n 1)"
      say "  df -h $tier: $(df -P -h "$tier" 2>&1 | tail -n 1)"
      return 1
    fi
  done <<EOF_SYNC
$SYNC
EOF_SYNC
}
# the load check before the durable sync: a checkpoint that does not load is never synced
check_loads() {
  [ -n "$LOAD_CHECK" ] || return 0
  while IFS= read -r f; do
    case $f in *.pth|*.pt|*.ckpt) ;; *) continue ;; esac
    [ -f "$OUT/$f" ] || continue
    if ( CKPT="$OUT/$f"; export CKPT; eval "$LOAD_CHECK" ) >> "$LOG" 2>&1 < /dev/null; then
      say "load check passed: $f"
    else
      say "load check FAILED: $f does not load (exit $?): not synced to the durable tier"
      return 1
    fi
  done <<EOF_LOAD
$SYNC
EOF_LOAD
}
prune_scratch() {
  while IFS= read -r f; do [ -n "$f" ] && rm -f "$OUT/$f"; done <<EOF_SCRATCH
$SCRATCH
EOF_SCRATCH
  true
}

( eval "$COMMAND" ) >> "$LOG" 2>&1 < /dev/null
rc=$?
if [ "$rc" -ne 0 ]; then say "command exited $rc"; mark FAILED "$rc" train; exit "$rc"; fi
if ! check_loads; then mark FAILED 0 load-check; say "FAILED: the command exited 0 but a checkpoint does not load"; exit 1; fi
if sync_durable && prune_scratch && mark DONE 0 "done"; then say "DONE (exit 0, durable copy verified)"; exit 0; fi
mark FAILED 0 durable-sync
say "FAILED: the command exited 0 but the durable sync failed (see above)"
exit 1
