#!/bin/sh
# kpipe's selftests under LAVA, one by one with each one's timeout, as `kpipe verify` runs them over SSH.
# Each output goes to the console verbatim (prefixed) for kpipe's own parser; each test is one LAVA case.
mkdir -p /tmp/kpipe-tests && cd /tmp/kpipe-tests || exit 1
while read -r name timeout binary args; do
  [ -n "$name" ] || continue
  read t0 _ < /proc/uptime
  timeout -s KILL "$timeout" setsid "/kpipe/selftests/$binary" $args </dev/null >"/tmp/kpipe-tests/$name.out" 2>&1
  rc=$?
  read t1 _ < /proc/uptime
  secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')
  timedout=0
  [ "$rc" = 137 ] && awk -v s="$secs" -v t="$timeout" 'BEGIN { exit !(s >= t - 1) }' && timedout=1
  echo "KPIPE-BEGIN selftest $name"
  sed "s/^/KPIPE|$name|out|/" "/tmp/kpipe-tests/$name.out"
  echo "KPIPE-END selftest $name exit=$rc seconds=$secs timedout=$timedout"
  case "$rc" in
    0|2) result=pass ;;
    4) result=skip ;;
    *) result=fail ;;
  esac
  [ "$timedout" = 1 ] && result=fail
  lava-test-case "$name" --result "$result" --measurement "$secs" --units seconds
done < /kpipe/selftests.list
exit 0
