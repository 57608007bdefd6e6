# shellcheck shell=sh
# AD6 (the platform gotcha module): python3 on PATH, the profile's interpreter PYTHON, and the
# conda envs under ENVS_DIR (when given).
PYTHON=@PYTHON@; ENVS_DIR=@ENVS_DIR@
echo "python3 $(command -v python3 || echo none)"
if [ -x "$PYTHON" ]; then echo 'py yes'; else echo 'py no'; fi
if [ -n "$ENVS_DIR" ]; then
  for e in "$ENVS_DIR"/*; do [ -d "$e" ] && echo "env $e"; done
fi
true
