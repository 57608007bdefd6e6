# shellcheck shell=sh
# AD2 (the platform gotcha module): the HF mirror settings, the xet package (XET_PACKAGE) in
# PREFIX's site-packages, and no_proxy after sourcing PROXY_FILE (when given).
PREFIX=@PREFIX@; XET_PACKAGE=@XET_PACKAGE@; PROXY_FILE=@PROXY_FILE@
# gpurent-include: dist_lib.sh
echo "endpoint ${HF_ENDPOINT:-}"
echo "xet_disable ${HF_HUB_DISABLE_XET:-}"
dists "$PREFIX" "$XET_PACKAGE"
if [ -n "$PROXY_FILE" ] && [ -r "$PROXY_FILE" ]; then (
  # shellcheck source=/dev/null
  . "$PROXY_FILE" >/dev/null 2>&1
  echo "no_proxy ${no_proxy:-}" ); fi
