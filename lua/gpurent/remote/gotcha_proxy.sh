# shellcheck shell=sh
# AD1 (the platform gotcha module): is the profile's proxy file there, does the login
# environment have a proxy, and what does sourcing the file set.
f=@PROXY_FILE@
if [ -e "$f" ]; then echo "turbo yes"; else echo "turbo no"; fi
echo "login ${http_proxy:-${HTTP_PROXY:-}} ${https_proxy:-${HTTPS_PROXY:-}}"
if [ -r "$f" ]; then ( unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY
  # shellcheck source=/dev/null
  . "$f" >/dev/null 2>&1
  echo "after ${http_proxy:-} ${https_proxy:-}" ); fi
