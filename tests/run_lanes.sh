#!/usr/bin/env bash
# tests/run_lanes.sh: what `make test` runs. With spec files or directories given, one
# busted run over them (tests/run_specs.lua). With none, the whole suite as two lanes
# at once, each its own test host: the Slurm specs (tests/spec/slurm_*_spec.lua), which
# mostly wait on a real slurmctld, beside all the others, which mostly use the CPU; the
# suite then takes about the longer lane's time instead of the sum. The second lane's
# output streams; the first lane's follows once both are done. The last line sums
# both lanes: "N passed, N failed, N skipped". A lane that ends without its summary
# line (a crash, a busted error) counts as one failure, named. Above the sum, each
# lane's "FAILED file:line name: message" lines again, so a log's tail names them.
#   tests/run_lanes.sh TEST_HOST [busted args / spec paths...]
set -uo pipefail
host=$1
shift
if [ $# -gt 0 ]; then exec "$host" run tests/run_specs.lua -- "$@"; fi

out=$(mktemp -d "${TMPDIR:-/tmp}/gpurent-lanes.XXXXXX")
trap 'rm -rf "$out"' EXIT
slurm=() rest=()
for f in tests/spec/*_spec.lua; do
  case "$f" in tests/spec/slurm_*_spec.lua) slurm+=("$f") ;; *) rest+=("$f") ;; esac
done

"$host" run tests/run_specs.lua -- "${slurm[@]}" > "$out/slurm" 2>&1 &
slurm_pid=$!
"$host" run tests/run_specs.lua -- "${rest[@]}" 2>&1 | tee "$out/rest"
rest_rc=${PIPESTATUS[0]}
wait "$slurm_pid"
slurm_rc=$?
echo
echo "==== lane: the Slurm specs (${#slurm[@]} files, run beside the others) ===="
cat "$out/slurm"

passed=0 failed=0 skipped=0 broken=()
for lane in slurm rest; do
  line=$(grep -E '^[0-9]+ passed, [0-9]+ failed, [0-9]+ skipped$' "$out/$lane" | tail -n 1)
  if [ -z "$line" ]; then broken+=("$lane"); failed=$((failed + 1)); continue; fi
  read -r p _ f _ s _ <<< "$line"
  passed=$((passed + p)) failed=$((failed + f)) skipped=$((skipped + s))
done
echo
grep -h '^FAILED ' "$out/slurm" "$out/rest"
for lane in "${broken[@]}"; do echo "lane '$lane' ended without its summary line: counted as 1 failed"; done
echo "lanes: the Slurm specs exited $slurm_rc, the others $rest_rc"
echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ] && [ "$passed" -gt 0 ] && [ "$slurm_rc" -eq 0 ] && [ "$rest_rc" -eq 0 ]
