# shellcheck shell=sh
# AD5 (the platform gotcha module): where the HF cache link points, HF_HOME, and the live
# tier's df (TIERS, measure_lib.sh); storage.hogs_script's walk follows it.
LINK=@LINK@; TIERS=@TIERS@
# gpurent-include: measure_lib.sh
echo "hflink $(readlink -f "$(home_path "$LINK")" 2>/dev/null)"
echo "hf_home ${HF_HOME:-}"
measure_tiers "$TIERS"
measure_cgroup
