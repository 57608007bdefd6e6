# shellcheck shell=sh
# U-NOGPU (gotchas/universal.lua): nvidia-smi -L, then what torch sees through the
# profile's interpreter PYTHON (TORCH_PY: remote/torch_probe.py, passed as data).
PYTHON=@PYTHON@; TORCH_PY=@TORCH_PY@
if command -v nvidia-smi >/dev/null 2>&1; then out=$(nvidia-smi -L 2>&1); echo "smi_rc $?"; printf '%s\n' "$out" | sed 's/^/smi /'; else echo 'smi_rc 127'; fi
if command -v "$PYTHON" >/dev/null 2>&1; then "$PYTHON" -c "$TORCH_PY" 2>&1 | tail -n 1; else echo 'torch_err nopython'; fi
echo "done"
