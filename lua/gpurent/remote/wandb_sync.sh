# shellcheck shell=sh
# wandb sync recovery for offline runs (lifecycle/download.lua's wandb_sync; seed AD1:
# a run logged offline, or whose online upload wedged, is pushed afterwards with
# `wandb sync`). Finds every wandb/offline-run-* directory under DIR (at most DEPTH
# levels down), skips those already marked (MARK inside: synced by an earlier call,
# so a re-run syncs only what is left), and runs `WANDB sync RUN` for each other one
# under `timeout TIMEOUT`, up to TRIES attempts BACKOFF s apart (doubling). A synced
# run gets MARK (when, attempts). The caller sources the profile's proxy hook first.
# CRED: a file on the box whose content is the W&B key (exported as WANDB_API_KEY).
# Prints per run: "skip RUN", "attempt RUN N exit RC LAST_LINE", then "ok RUN N" or
# "failed RUN N"; "none DIR" when there is no offline run; exits 0, or 1 when one failed.
DIR=@DIR@; DEPTH=@DEPTH@; TRIES=@TRIES@; TIMEOUT=@TIMEOUT@; BACKOFF=@BACKOFF@; WANDB=@WANDB@
CRED=@CRED@; MARK=@MARK@
[ -d "$DIR" ] || { echo "nodir $DIR"; exit 1; }
if [ -n "$CRED" ]; then
  [ -r "$CRED" ] || { echo "nocred $CRED"; exit 1; }
  WANDB_API_KEY=$(cat "$CRED") && export WANDB_API_KEY
fi
runs=$(find "$DIR" -maxdepth "$DEPTH" -type d -name 'offline-run-*' -path '*/wandb/offline-run-*' 2>/dev/null | sort)
[ -n "$runs" ] || { echo "none $DIR"; exit 0; }
bad=0
while IFS= read -r run; do
  [ -n "$run" ] || continue
  if [ -f "$run/$MARK" ]; then echo "skip $run"; continue; fi
  i=1; wait_s=$BACKOFF; done_ok=
  while [ "$i" -le "$TRIES" ]; do
    out=$(timeout "$TIMEOUT" "$WANDB" sync "$run" 2>&1 < /dev/null); rc=$?
    if [ "$rc" -eq 0 ]; then
      printf 'synced_at=%s attempts=%s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$i" > "$run/$MARK.tmp" &&
        mv -f "$run/$MARK.tmp" "$run/$MARK"
      echo "ok $run $i"; done_ok=1; break
    fi
    [ "$rc" -eq 124 ] && out="timed out after ${TIMEOUT}s"
    echo "attempt $run $i exit $rc $(printf '%s\n' "$out" | grep -v '^[[:space:]]*$' | tail -n 1 | cut -c1-200)"
    i=$((i + 1))
    [ "$i" -le "$TRIES" ] && sleep "$wait_s" && wait_s=$((wait_s * 2))
  done
  [ -n "$done_ok" ] || { echo "failed $run $TRIES"; bad=1; }
done <<EOF_RUNS
$runs
EOF_RUNS
exit "$bad"
