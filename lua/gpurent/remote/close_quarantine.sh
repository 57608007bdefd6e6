# shellcheck shell=sh
# Move a failed capsule to QUAR/ID--N with the REASON from stdin (phases/close.lua).
# Prints "quarantined PATH".
P=@PARTIAL@; Q=@QUAR@; ID=@ID@
mkdir -p "$Q"
n=1; while [ -e "$Q/$ID--$n" ] && [ $n -lt 1000 ]; do n=$((n + 1)); done
mv -T "$P" "$Q/$ID--$n" && cat > "$Q/$ID--$n/REASON" && echo "quarantined $Q/$ID--$n"
