#!/bin/sh
# kpipe's verifier under LAVA: the same binary, expectations and per-case timeout as `kpipe verify`.
# Its TAP goes to the console verbatim (prefixed) for kpipe's own parser; each case is reported to LAVA.
. /kpipe/step.sh
cd /kpipe || exit 1
mkdir -p /tmp/kpipe-verify
kpipe_step verifier verifier {{ timeout }} /tmp/kpipe-verify/out.tap /tmp/kpipe-verify/err.txt \
  ./bin/{{ binary }} -e expect.txt -t {{ case_timeout }}{{ cases }}
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
