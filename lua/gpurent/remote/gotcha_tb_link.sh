# shellcheck shell=sh
# AD7 fix (the platform gotcha module): link each of DIRS (one a line) into LOGDIR under its
# own base name, unless that name is taken.
LOGDIR=@LOGDIR@; DIRS=@DIRS@
while IFS= read -r d; do
  [ -n "$d" ] || continue
  t="$LOGDIR/${d##*/}"
  [ -e "$t" ] || ln -sfn "$d" "$t" || exit 1
done <<EOF_DIRS
$DIRS
EOF_DIRS
