# shellcheck shell=sh
# U-THROTTLE (gotchas/universal.lua): temperature, power and throttle reasons per GPU
# (without the reasons column on drivers that do not know it).
out=$(nvidia-smi --query-gpu=index,temperature.gpu,power.draw,power.limit,clocks_throttle_reasons.active --format=csv,noheader,nounits 2>&1); rc=$?
if [ $rc -ne 0 ]; then
  out=$(nvidia-smi --query-gpu=index,temperature.gpu,power.draw,power.limit --format=csv,noheader,nounits 2>&1); rc=$?
fi
echo "smi_rc $rc"; printf '%s\n' "$out" | sed 's/^/gpu /'; echo "done"
