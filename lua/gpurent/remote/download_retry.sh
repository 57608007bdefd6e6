# shellcheck shell=sh
# The download retry loop (lifecycle/download.lua; seed AD1/AD2): a stall is not a
# failure. KIND url: curl SRC into DEST, resuming DEST.part (-C -), each attempt under
# `timeout TIMEOUT`; KIND hf: PY's huggingface_hub snapshot_download of repo SRC into
# the directory DEST through HF_ENDPOINT (the mirror) with HF_HUB_DISABLE_XET set
# (it resumes partial files itself). Up to TRIES attempts, BACKOFF s apart (doubling).
# Prints "attempt N exit RC [have BYTES]" per failed attempt, then "ok N BYTES" or
# "failed N"; exits 0 or 1.
KIND=@KIND@; SRC=@SRC@; DEST=@DEST@; TRIES=@TRIES@; TIMEOUT=@TIMEOUT@; BACKOFF=@BACKOFF@
PY=@PY@; HF_ENDPOINT_VALUE=@HF_ENDPOINT@; HF_XET_OFF=@HF_XET_OFF@
size() {
  if [ -f "$1" ]; then wc -c < "$1" | tr -d ' '
  elif [ -d "$1" ]; then du -s -B1 "$1" 2>/dev/null | cut -f1
  else echo 0; fi
}
attempt_url() {
  mkdir -p "$(dirname "$DEST")" || return 1
  timeout "$TIMEOUT" curl -fsSL -C - -o "$DEST.part" "$SRC" && mv -f "$DEST.part" "$DEST"
}
attempt_hf() {
  mkdir -p "$DEST" || return 1
  [ -n "$HF_ENDPOINT_VALUE" ] && HF_ENDPOINT=$HF_ENDPOINT_VALUE && export HF_ENDPOINT
  [ -n "$HF_XET_OFF" ] && HF_HUB_DISABLE_XET=1 && export HF_HUB_DISABLE_XET
  timeout "$TIMEOUT" "$PY" -c 'import sys
from huggingface_hub import snapshot_download
snapshot_download(repo_id=sys.argv[1], local_dir=sys.argv[2])' "$SRC" "$DEST"
}
i=1; wait_s=$BACKOFF
while [ "$i" -le "$TRIES" ]; do
  if [ "$KIND" = hf ]; then attempt_hf; else attempt_url; fi
  rc=$?
  if [ "$rc" -eq 0 ]; then echo "ok $i $(size "$DEST")"; exit 0; fi
  if [ "$KIND" = hf ]; then have=$(size "$DEST"); else have=$(size "$DEST.part"); fi
  echo "attempt $i exit $rc have $have"
  i=$((i + 1))
  [ "$i" -le "$TRIES" ] && sleep "$wait_s" && wait_s=$((wait_s * 2))
done
echo "failed $TRIES"
exit 1
