# shellcheck shell=sh
# S-FAIRSHARE (gotchas/slurm.lua): the user's fair-share (sshare -U), then the
# association's limits (sacctmgr show assoc). Either may be refused on a cluster that
# hides accounting: "share_rc N", "share_err ..." then.
ACCOUNT=@ACCOUNT@
if command -v sshare >/dev/null 2>&1; then
  if [ -n "$ACCOUNT" ]; then out=$(sshare -h -P -U -A "$ACCOUNT" -o Account,User,RawShares,NormShares,RawUsage,EffectvUsage,FairShare 2>&1); rc=$?
  else out=$(sshare -h -P -U -o Account,User,RawShares,NormShares,RawUsage,EffectvUsage,FairShare 2>&1); rc=$?; fi
  echo "share_rc $rc"
  printf '%s\n' "$out" | head -n 5 | sed -n "/./s/^/$([ "$rc" = 0 ] && echo share || echo share_err) /p"
else
  echo "share_rc 127"
fi
if command -v sacctmgr >/dev/null 2>&1; then
  out=$(sacctmgr -n -P show assoc user="$(id -un)" format=Account,Partition,Fairshare,GrpTRES,MaxTRES,MaxWall,QOS 2>&1); rc=$?
  echo "assoc_rc $rc"
  printf '%s\n' "$out" | head -n 5 | sed -n "/./s/^/$([ "$rc" = 0 ] && echo assoc || echo assoc_err) /p"
fi
echo "done"
