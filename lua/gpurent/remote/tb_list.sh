# shellcheck shell=sh
# The pinned TensorBoard's runs (commands/tensorboard.lua): its /data/runs on PORT.
PORT=@PORT@
# gpurent-include: tb_lib.sh
tb_runs "$PORT"
