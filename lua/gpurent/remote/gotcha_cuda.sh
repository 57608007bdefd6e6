# shellcheck shell=sh
# U-CUDA-MISMATCH (gotchas/universal.lua): the driver's CUDA version, torch's build
# (read from PREFIX's site-packages, no python needed; PREFIX empty: not read), nvcc's.
PREFIX=@PREFIX@
echo "driver $(nvidia-smi 2>/dev/null | sed -n 's/.*CUDA Version: *\([0-9.]*\).*/\1/p' | head -n 1)"
if [ -n "$PREFIX" ]; then
  for f in "$PREFIX"/lib/python3*/site-packages/torch/version.py; do
    [ -f "$f" ] && sed -n "s/^cuda[^=]*= *['\"]\([0-9.]*\)['\"].*/torchcuda \1/p; s/^__version__[^=]*= *['\"]\([^'\"]*\)['\"].*/torchver \1/p" "$f"
  done
fi
echo "nvcc $(nvcc --version 2>/dev/null | sed -n 's/.*release \([0-9.]*\).*/\1/p')"
echo "done"
