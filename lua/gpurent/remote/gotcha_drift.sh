# shellcheck shell=sh
# U-CODE-DRIFT (gotchas/universal.lua): "h SHA256 PATH" for every file under CODE_DIR
# (.git left out); exit 3 when CODE_DIR does not exist.
CODE_DIR=@CODE_DIR@
cd "$CODE_DIR" || exit 3
find . -path ./.git -prune -o -type f -print | while IFS= read -r f; do printf 'h %s %s\n' "$(sha256sum < "$f" | cut -d' ' -f1)" "${f#./}"; done
echo "done"
