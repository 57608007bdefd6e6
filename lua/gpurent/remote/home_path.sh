# shellcheck shell=sh
# home_path PATH: a profile path with ~ or ~/x expanded to the box's $HOME (profile
# paths are filled in quoted, so the shell never expands a ~ itself). A library.
home_path() {
  # shellcheck disable=SC2088 # a literal ~ in the profile's text is matched, on purpose
  case "$1" in
    "~") printf '%s\n' "$HOME";;
    "~/"*) printf '%s/%s\n' "$HOME" "${1#"~/"}";;
    *) printf '%s\n' "$1";;
  esac
}
