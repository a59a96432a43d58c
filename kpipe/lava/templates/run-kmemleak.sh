#!/bin/sh
# kmemleak after the tests, as `kpipe verify` asks for it over SSH: two scans more than 5 s apart, then the
# report (kpipe/kmemleak.py judges it: each unreferenced object a finding, kmemleak turned off an error).
. /kpipe/step.sh
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
kpipe_step kmemleak kmemleak {{ timeout }} /tmp/kpipe-kmemleak.txt /tmp/kpipe-kmemleak.err sh /kpipe/kmemleak-scan.sh
if [ "$rc" = 0 ] && ! grep -q '^unreferenced object' /tmp/kpipe-kmemleak.txt; then
  lava-test-case kmemleak --result pass
else
  lava-test-case kmemleak --result fail
fi
exit 0
