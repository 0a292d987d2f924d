#!/bin/sh
# Guest test: the ublk driver loads and creates its control device.
modprobe ublk_drv || { echo "RESULT ublk FAIL modprobe"; exit 1; }
grep -q '^ublk_drv ' /proc/modules || { echo "RESULT ublk FAIL not-in-proc-modules"; exit 1; }
[ -c /dev/ublk-control ] || { echo "RESULT ublk FAIL no-/dev/ublk-control"; exit 1; }
# The userspace tools of the image run (their shared libraries resolved).
for t in "cxl version" "ndctl --version" "daxctl version" "fio --version" "mkfs.ext4 -V" "fsck.ext4 -V"; do
    $t >/dev/null 2>&1 || { echo "RESULT ublk FAIL tool: $t"; exit 1; }
done
echo "RESULT ublk OK $(ls -l /dev/ublk-control | awk '{print $5 $6}')"
