# shellcheck shell=sh
# The wrapper versions a run already has (detach.install): "run-vN.sh SHA256" lines.
M=@META@
mkdir -p "$M" && cd "$M" || exit 1
for f in run-v*.sh; do [ -f "$f" ] && echo "$f $(sha256sum < "$f" | cut -d' ' -f1)"; done
true
