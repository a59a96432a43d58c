# Sourced by the run-*.sh steps: kpipe_step LABEL NAME LIMIT OUT ERR CMD... runs CMD under `timeout -s KILL
# LIMIT` (stdin from /dev/null; ERR = OUT: one stream), then prints its block for kpipe's log parser:
#   KPIPE-BEGIN LABEL / KPIPE|NAME|out|<line>... / KPIPE|NAME|err|<line>... / KPIPE-END LABEL exit= seconds= timedout=
# and leaves rc, secs and timedout (1: killed at the limit) set for the caller.
kpipe_step() {
  label=$1 name=$2 limit=$3 out=$4 err=$5
  shift 5
  read t0 _ < /proc/uptime
  if [ "$err" = "$out" ]; then
    timeout -s KILL "$limit" "$@" </dev/null >"$out" 2>&1
  else
    timeout -s KILL "$limit" "$@" </dev/null >"$out" 2>"$err"
  fi
  rc=$?
  read t1 _ < /proc/uptime
  secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')
  timedout=0
  [ "$rc" = 137 ] && awk -v s="$secs" -v t="$limit" 'BEGIN { exit !(s >= t - 1) }' && timedout=1
  echo "KPIPE-BEGIN $label"
  sed "s/^/KPIPE|$name|out|/" "$out"
  [ "$err" = "$out" ] || sed "s/^/KPIPE|$name|err|/" "$err"
  echo "KPIPE-END $label exit=$rc seconds=$secs timedout=$timedout"
}
