# writers_quiet.sh: run before a put resumes a .part whose lock's holder died. A
# killed put's writes can still reach the box after its process is gone (its
# socket buffers drain, the link delivers what was in flight), through the SFTP
# server it left, which holds the .part open until its connection ends. A resume
# started before they land would have them land inside the file it then names
# final. So: wait (bounded) until no process on the box has FILE open.
# Prints "waiting PID COMM" once per holder seen, then "quiet" (exit 0), or after
# WAIT seconds "held PID COMM" per holder left (exit 3). Only processes whose
# /proc/PID/fd this user may read are seen: a root box sees all.
FILE=@FILE@
WAIT=@WAIT@
# find -lname takes a pattern: the path's own * ? [ ] \ are escaped
pattern=$(printf '%s' "$FILE" | sed 's/[][*?\\]/\\&/g')
holders() {
  find /proc/[0-9]*/fd -mindepth 1 -maxdepth 1 -lname "$pattern" 2>/dev/null | cut -d/ -f3 | sort -u
}
comm() { cat "/proc/$1/comm" 2>/dev/null || echo "?"; }
seen=" "
end=$(( $(date +%s) + WAIT ))
while :; do
  held=$(holders)
  if [ -z "$held" ]; then echo quiet; exit 0; fi
  for p in $held; do
    case "$seen" in *" $p "*) ;; *) echo "waiting $p $(comm "$p")"; seen="$seen$p " ;; esac
  done
  if [ "$(date +%s)" -ge "$end" ]; then
    for p in $held; do echo "held $p $(comm "$p")"; done
    exit 3
  fi
  sleep 0.1
done
