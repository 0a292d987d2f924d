#!/bin/sh
# Guest test: cbd-host maps the CXL devdax transport; with no CBD backend there it fails fast
# with a clear message (not a hang).
sh /tests/cxl.sh || exit 1
modprobe ublk_drv
cbd-host --transport /dev/dax0.0 --offset 1M >/tmp/unaligned.log 2>&1
rc=$?
cat /tmp/unaligned.log
[ $rc != 0 ] && grep -q 'not a multiple of 0x200000' /tmp/unaligned.log ||
    { echo "RESULT host-cxl FAIL unaligned offset accepted (rc=$rc)"; exit 1; }
cbd-host --transport /dev/dax0.0 >/tmp/host.log 2>&1
rc=$?
cat /tmp/host.log
[ $rc != 0 ] || { echo "RESULT host-cxl FAIL cbd-host succeeded on an empty transport"; exit 1; }
grep -q 'mapping /dev/dax0.0' /tmp/host.log || { echo "RESULT host-cxl FAIL no mapping"; exit 1; }
grep -q 'no valid CBD transport' /tmp/host.log || { echo "RESULT host-cxl FAIL unclear error"; exit 1; }
[ ! -e /dev/ublkb0 ] || { echo "RESULT host-cxl FAIL ublk device created"; exit 1; }
echo "RESULT host-cxl OK rc=$rc"
