#!/bin/sh
# Guest test: cbd-host against a real CBD backend (the cbdfw kernel in another VM) over the
# ivshmem BAR. The host formats the transport (the backend runs with transport=wait), waits
# for the backend, dev-starts 2 channels, and the disk takes raw I/O and ext4.
fail() { echo "RESULT host-cbd FAIL $*"; cat /tmp/host.log; exit 1; }
modprobe ublk_drv || fail modprobe ublk_drv
modprobe crc32c_generic; modprobe ext4 || fail modprobe ext4

cbd-host --transport ivshmem --format --wait-backend 300 --queues 2 --depth 16 >/tmp/host.log 2>&1 &
pid=$!
i=0
while [ ! -b /dev/ublkb0 ]; do
    kill -0 $pid 2>/dev/null || fail "cbd-host exited"
    sleep 0.2; i=$((i+1))
done
cat /tmp/host.log
echo "queues: $(ls /sys/block/ublkb0/mq | wc -l) size: $(cat /sys/block/ublkb0/size)"

dd if=/dev/urandom of=/tmp/pat bs=1M count=4 2>/dev/null
dd if=/tmp/pat of=/dev/ublkb0 bs=1M seek=1 oflag=direct 2>/dev/null || fail "dd write"
dd if=/dev/ublkb0 of=/tmp/back bs=1M skip=1 count=4 iflag=direct 2>/dev/null || fail "dd read"
cmp /tmp/pat /tmp/back || fail "data mismatch"

mkfs.ext4 -q -F /dev/ublkb0 || fail mkfs.ext4
mkdir -p /mnt/u
mount -t ext4 /dev/ublkb0 /mnt/u || fail mount
cp /tmp/pat /mnt/u/pat && sync || fail "write file"
umount /mnt/u || fail umount
fsck.ext4 -fn /dev/ublkb0 >/tmp/fsck.log 2>&1 || { cat /tmp/fsck.log; fail fsck; }

kill -TERM $pid
wait $pid
rc=$?
cat /tmp/host.log
[ $rc = 0 ] || fail "cbd-host exit $rc"
stats=$(grep 'stopped;' /tmp/host.log)
echo "RESULT host-cbd OK ${stats#*; }"
