#!/bin/sh
# kpipe's PID 1 for LAVA jobs (replaces the guest image's /init in the job's ramdisk): the same mounts as
# kpipe's own guest, then a root shell on the console for LAVA's test shell. No network, no sshd.
/bin/busybox --install -s
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mkdir -p /proc /sys /dev /tmp /run /var /root
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /dev/pts /dev/shm /dev/hugepages
mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts /dev/pts
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
mount -t hugetlbfs hugetlbfs /dev/hugepages 2>/dev/null
[ -e /var/run ] || ln -s /run /var/run
echo {{ hugepages }} > /proc/sys/vm/nr_hugepages 2>/dev/null
echo "kpipe-init: kernel $(uname -r) $(uname -m), hugepages $(cat /proc/sys/vm/nr_hugepages 2>/dev/null || echo unsupported)"
echo "{{ ready_marker }}"
export HOME=/root PS1='{{ prompt }}' ENV=/etc/profile
# a shell whose controlling tty is the console; when it exits, PID 1 exits and the kernel panics, so the
# job ends instead of hanging
exec setsid cttyhack /bin/sh -l
