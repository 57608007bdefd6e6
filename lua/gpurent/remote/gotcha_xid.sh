# shellcheck shell=sh
# U-XID (gotchas/universal.lua): nvidia-smi -L and the kernel's last Xid lines.
if ! command -v nvidia-smi >/dev/null 2>&1; then echo "smi_rc 127"; echo "done"; exit 0; fi
out=$(nvidia-smi -L 2>&1); rc=$?
echo "smi_rc $rc"; printf '%s\n' "$out" | head -n 3 | sed 's/^/smi /'
dmesg 2>/dev/null | grep -E 'NVRM: Xid' | tail -n 3 | sed 's/^/xid /'
echo "done"
