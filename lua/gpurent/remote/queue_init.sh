# shellcheck shell=sh
# Create a sweep's queue directory QDIR with one file per cell to run,
# QDIR/pending/cell.N holding the cell's run id (lua/gpurent/lifecycle/queue.lua).
# mkdir is the lock: the first box to create QDIR writes the cells (into pending.tmp,
# renamed whole), every other box sharing the filesystem waits for them and joins.
# Prints "created QDIR" or "joined QDIR".
QDIR=@QDIR@; CELLS=@CELLS@   # "N<TAB>ID", one cell a line
TAB=$(printf '\t')
mkdir -p "${QDIR%/*}" || exit 1
if mkdir "$QDIR" 2>/dev/null; then
  mkdir -p "$QDIR/pending.tmp" "$QDIR/claimed" || exit 1
  while IFS=$TAB read -r n id; do
    [ -n "$n" ] || continue
    printf '%s\n' "$id" > "$QDIR/pending.tmp/cell.$n" || exit 1
  done <<EOF_CELLS
$CELLS
EOF_CELLS
  mv "$QDIR/pending.tmp" "$QDIR/pending" || exit 1
  echo "created $QDIR"
else
  i=0; while [ ! -d "$QDIR/pending" ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
  [ -d "$QDIR/pending" ] || { echo "bad $QDIR exists but holds no pending/ after 30 s"; exit 1; }
  echo "joined $QDIR"
fi
