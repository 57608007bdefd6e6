# shellcheck shell=sh
# S-QUOTA (gotchas/slurm.lua): the quota of each storage tier (TIERS: "NAME PATH" a
# line; a leading ~ is the login user's home), in bytes and inodes. Lustre's
# `lfs quota` where the tier is on Lustre, else `quota -w -p` (block/inode quota), else
# the tier's file system (df -P -k, df -P -i). Prints, per tier:
#   tier NAME PATH SOURCE bytes_used bytes_limit inodes_used inodes_limit   (- when unknown)
#   tier NAME PATH missing
#   absent NAME PATH ANCESTOR   (the tier does not exist yet: its nearest directory is measured)
TIERS=@TIERS@
while IFS=' ' read -r name path; do
  [ -n "$name" ] || continue
  # shellcheck disable=SC2088 # a literal ~ from the profile, expanded here
  case $path in "~") path=$HOME ;; "~/"*) path=$HOME/${path#"~/"} ;; esac
  # a tier not created yet (a run makes it) is measured where it will be created
  at=$path; while [ ! -d "$at" ] && [ "$at" != / ]; do at=$(dirname "$at"); done
  if [ "$at" != "$path" ]; then echo "absent $name $path $at"; path=$at; fi
  if [ ! -d "$path" ]; then echo "tier $name $path missing"; continue; fi
  fstype=$(stat -f -c %T "$path" 2>/dev/null)
  if [ "$fstype" = lustre ] && command -v lfs >/dev/null 2>&1; then
    # lfs quota -q -u USER PATH: filesystem kbytes quota limit grace files quota limit grace
    line=$(lfs quota -q -u "$(id -un)" "$path" 2>/dev/null | awk 'NF >= 8 {print; exit}')
    if [ -n "$line" ]; then
      echo "$line" | awk -v n="$name" -v p="$path" '{gsub(/\*/, ""); kb=$2; kl=($4 > 0 ? $4 : $3); f=$6; fl=($8 > 0 ? $8 : $7);
        printf "tier %s %s lfs %d %s %d %s\n", n, p, kb * 1024, (kl > 0 ? kl * 1024 : "-"), f, (fl > 0 ? fl : "-")}'
      continue
    fi
  fi
  if command -v quota >/dev/null 2>&1; then
    dev=$(df -P "$path" 2>/dev/null | awk 'NR == 2 {print $1}')
    line=$(quota -w -p 2>/dev/null | awk -v d="$dev" '$1 == d {print; exit}')
    if [ -n "$line" ]; then
      # filesystem blocks(KiB) quota limit grace files quota limit grace
      echo "$line" | awk -v n="$name" -v p="$path" '{gsub(/\*/, ""); kl=($4 > 0 ? $4 : $3); fl=($8 > 0 ? $8 : $7);
        printf "tier %s %s quota %d %s %d %s\n", n, p, $2 * 1024, (kl > 0 ? kl * 1024 : "-"), $6, (fl > 0 ? fl : "-")}'
      continue
    fi
  fi
  b=$(df -P -k "$path" 2>/dev/null | awk 'NR == 2 {print $3 * 1024, $2 * 1024}')
  i=$(df -P -i "$path" 2>/dev/null | awk 'NR == 2 {print $3, ($2 > 0 ? $2 : "-")}')
  echo "tier $name $path df ${b:-- -} ${i:-- -}"
done <<EOF_TIERS
$TIERS
EOF_TIERS
echo "done"
