# shellcheck shell=sh
# U-WANDB-OFFLINE (gotchas/universal.lua): WANDB_MODE in the login environment and in
# every python/wandb process, and where a key is (env, CRED file if given, ~/.netrc).
CRED=@CRED@
# gpurent-include: home_path.sh
# gpurent-include: procs_lib.sh
echo "mode ${WANDB_MODE:-}"
[ -n "${WANDB_API_KEY:-}" ] && echo 'key env'
[ -n "$CRED" ] && [ -s "$(home_path "$CRED")" ] && echo 'key credfile'
grep -qs 'api.wandb.ai' "$HOME/.netrc" && echo 'key netrc'
wandb_env() {
  d=$1; pid=$2
  case "$3" in python|python3|python3.*|wandb) ;; *) return 0 ;; esac
  env=$(tr '\0' '\n' < "$d/environ" 2>/dev/null)
  case "$env" in *WANDB_MODE=offline*) echo "offline_pid $pid" ;; esac
  case "$env" in *WANDB_API_KEY=?*) echo "key pid$pid" ;; esac
}
for_each_proc wandb_env
echo "done"
