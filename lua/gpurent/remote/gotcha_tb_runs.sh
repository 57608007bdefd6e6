# shellcheck shell=sh
# AD7 (the platform gotcha module): ask the pinned TensorBoard for /data/runs again after
# WAIT seconds (one reload later).
WAIT=@WAIT@; PORT=@PORT@
# gpurent-include: tb_lib.sh
sleep "$WAIT"
tb_runs "$PORT"
