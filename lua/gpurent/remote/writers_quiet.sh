# writers_quiet.sh: run before a put resumes a .part whose lock's holder died. A
# killed put's writes can still reach the box after its process is gone (its
# socket buffers drain, the link delivers what was in flight), through the SFTP
# server it left, which holds the .part open for writing until its connection
# ends. A resume started before they land would have them land inside the file it
# then names final. So: wait until no process on the box has FILE open for writing
# (readers, such as a dead put's box-side hash, do no harm). After WAIT seconds a
# writer that is an SFTP server (sftp-server, or sshd with internal-sftp) is ended
# with TERM, by its exact PID: it serves a transfer whose process is gone (a
# dropped link can leave its session half-open for hours). Any other writer is not
# touched. Prints "waiting PID COMM" once per writer seen, "ended PID COMM" per one
# ended, then "quiet" (exit 0), or "held PID COMM" per writer left (exit 3). Only
# processes whose /proc/PID/fd this user may read are seen: a root box sees all.
FILE=@FILE@
WAIT=@WAIT@
# find -lname takes a pattern: the path's own * ? [ ] \ are escaped
pattern=$(printf '%s' "$FILE" | sed 's/[][*?\\]/\\&/g')
# PIDs with FILE open for writing: the access mode in fdinfo's octal flags is the
# last digit's low two bits (1 O_WRONLY, 2 O_RDWR)
writers() {
  find /proc/[0-9]*/fd -mindepth 1 -maxdepth 1 -lname "$pattern" 2>/dev/null | while IFS= read -r fd; do
    pid=${fd#/proc/}; pid=${pid%%/*}
    flags=$(sed -n 's/^flags:[[:space:]]*//p' "/proc/$pid/fdinfo/${fd##*/}" 2>/dev/null)
    case "$flags" in *[123567]) echo "$pid" ;; esac
  done | sort -u
}
comm() { cat "/proc/$1/comm" 2>/dev/null || echo "?"; }
seen=" "
end=$(( $(date +%s) + WAIT ))
ended=""
while :; do
  held=$(writers)
  if [ -z "$held" ]; then echo quiet; exit 0; fi
  for p in $held; do
    case "$seen" in *" $p "*) ;; *) echo "waiting $p $(comm "$p")"; seen="$seen$p " ;; esac
  done
  if [ "$(date +%s)" -ge "$end" ]; then
    left=""
    for p in $held; do
      c=$(comm "$p")
      case "$c" in
        sftp-server|sshd)
          case "$ended " in
            *" $p "*) left="$left $p" ;;    # ended once already, and still there
            *) kill -TERM "$p" 2>/dev/null && echo "ended $p $c"; ended="$ended $p" ;;
          esac ;;
        *) left="$left $p" ;;
      esac
    done
    if [ -n "$left" ]; then
      for p in $left; do echo "held $p $(comm "$p")"; done
      exit 3
    fi
    end=$(( $(date +%s) + 5 ))   # the ended ones: 5 s to go
  fi
  sleep 0.1
done
