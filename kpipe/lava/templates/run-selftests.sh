#!/bin/sh
# kpipe's selftests under LAVA, one by one with each one's timeout, as `kpipe verify` runs them over SSH.
# Each output goes to the console verbatim (prefixed) for kpipe's own parser; each test is one LAVA case.
. /kpipe/step.sh
mkdir -p /tmp/kpipe-tests && cd /tmp/kpipe-tests || exit 1
while read -r name timeout binary args; do
  [ -n "$name" ] || continue
  kpipe_step "selftest $name" "$name" "$timeout" "/tmp/kpipe-tests/$name.out" "/tmp/kpipe-tests/$name.out" \
    setsid "/kpipe/selftests/$binary" $args
  case "$rc" in
    0|2) result=pass ;;
    4) result=skip ;;
    *) result=fail ;;
  esac
  [ "$timedout" = 1 ] && result=fail
  lava-test-case "$name" --result "$result" --measurement "$secs" --units seconds
done < /kpipe/selftests.list
exit 0
