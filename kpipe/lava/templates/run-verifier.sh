#!/bin/sh
# kpipe's verifier under LAVA: the same binary, expectations and per-case timeout as `kpipe verify`.
# Its TAP goes to the console verbatim (prefixed) for kpipe's own parser; each case is reported to LAVA.
cd /kpipe || exit 1
mkdir -p /tmp/kpipe-verify
read t0 _ < /proc/uptime
timeout -s KILL {{ timeout }} ./bin/{{ binary }} -e expect.txt -t {{ case_timeout }} >/tmp/kpipe-verify/out.tap 2>/tmp/kpipe-verify/err.txt
rc=$?
read t1 _ < /proc/uptime
secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')
timedout=0
[ "$rc" = 137 ] && awk -v s="$secs" 'BEGIN { exit !(s >= {{ timeout }} - 1) }' && timedout=1
echo "KPIPE-BEGIN verifier"
sed 's/^/KPIPE|verifier|out|/' /tmp/kpipe-verify/out.tap
sed 's/^/KPIPE|verifier|err|/' /tmp/kpipe-verify/err.txt
echo "KPIPE-END verifier exit=$rc seconds=$secs timedout=$timedout"
# one lava-test-case per TAP test point: pass, fail or skip, with the case's seconds as measurement
awk '
  /^# [a-z0-9-]+: observed / { n = $2; sub(":", "", n); s = ""; if ($NF == "s)") { s = $(NF-1); sub("\\(", "", s) } secs[n] = s; next }
  /^(ok|not ok) [0-9]+ / {
    ok = ($1 == "ok"); name = ok ? $3 : $4
    r = ok ? "pass" : "fail"
    if ($0 ~ /# *[Ss][Kk][Ii][Pp]/) r = ok ? "skip" : "fail"
    print name, r, (name in secs && secs[name] != "" ? secs[name] : "0")
  }' /tmp/kpipe-verify/out.tap | while read -r name result secs; do
  lava-test-case "$name" --result "$result" --measurement "$secs" --units seconds
done
[ "$timedout" = 1 ] && lava-test-case verifier-timeout --result fail
exit 0
