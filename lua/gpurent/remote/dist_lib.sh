# shellcheck shell=sh
# dists PREFIX NAMES: "dist NAME-VERSION" for each installed dist-info of NAMES (one a
# line) in PREFIX's site-packages, read without python; nothing when PREFIX is empty.
# A library for the gotcha probes.
dists() {
  [ -n "$1" ] || return 0
  while IFS= read -r n; do
    [ -n "$n" ] || continue
    for d in "$1"/lib/python3*/site-packages/"$n"-[0-9]*.dist-info; do
      [ -d "$d" ] && echo "dist $(basename "$d" .dist-info)"
    done
  done <<EOF_NAMES
$2
EOF_NAMES
  return 0
}
