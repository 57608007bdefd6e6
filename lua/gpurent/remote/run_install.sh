# shellcheck shell=sh
# Write a wrapper version from stdin as PATH (detach.install): set -C (noclobber) makes
# the create fail rather than overwrite a file that appeared meanwhile; the final ln
# refuses an existing PATH.
F=@PATH@
rm -f "$F.tmp" && set -C && cat > "$F.tmp" && chmod 755 "$F.tmp" && ln "$F.tmp" "$F" && rm -f "$F.tmp"
