#!/bin/sh
# kmemleak after the tests, as `kpipe verify` asks for it over SSH: two scans more than 5 s apart, then the
# report (kpipe/kmemleak.py judges it: each unreferenced object a finding, kmemleak turned off an error).
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
read t0 _ < /proc/uptime
timeout -s KILL {{ timeout }} sh /kpipe/kmemleak-scan.sh >/tmp/kpipe-kmemleak.txt 2>/tmp/kpipe-kmemleak.err
rc=$?
read t1 _ < /proc/uptime
secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')
timedout=0
[ "$rc" = 137 ] && awk -v s="$secs" 'BEGIN { exit !(s >= {{ timeout }} - 1) }' && timedout=1
echo "KPIPE-BEGIN kmemleak"
sed 's/^/KPIPE|kmemleak|out|/' /tmp/kpipe-kmemleak.txt
sed 's/^/KPIPE|kmemleak|err|/' /tmp/kpipe-kmemleak.err
echo "KPIPE-END kmemleak exit=$rc seconds=$secs timedout=$timedout"
if [ "$rc" = 0 ] && ! grep -q '^unreferenced object' /tmp/kpipe-kmemleak.txt; then
  lava-test-case kmemleak --result pass
else
  lava-test-case kmemleak --result fail
fi
exit 0
