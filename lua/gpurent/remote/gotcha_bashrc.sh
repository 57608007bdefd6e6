# shellcheck shell=sh
# Append (once) a marked block to ~/.bashrc (gotchas.bashrc_block): nothing when a
# line holding MARK is already there.
MARK=@MARK@; BODY=@BODY@
f="$HOME/.bashrc"
grep -qF -- "$MARK" "$f" 2>/dev/null && exit 0
printf '%s' "$BODY" >> "$f"
