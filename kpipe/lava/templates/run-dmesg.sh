#!/bin/sh
# The kernel log at the end of the tests, for kpipe's findings scanner; one LAVA case says whether it is clean.
dmesg > /tmp/kpipe-dmesg.txt 2>&1
echo "KPIPE-BEGIN dmesg"
sed 's/^/KPIPE|dmesg|out|/' /tmp/kpipe-dmesg.txt
echo "KPIPE-END dmesg exit=0 seconds=0 timedout=0"
if grep -qE '{{ pattern }}' /tmp/kpipe-dmesg.txt; then
  lava-test-case kernel-log --result fail
else
  lava-test-case kernel-log --result pass
fi
exit 0
