#!/bin/sh
# Guest test: cbd-host in RAM test mode exposes /dev/ublkb0; raw I/O, flush and ext4 work.
fail() { echo "RESULT host-ram FAIL $*"; cat /tmp/host.log; exit 1; }
modprobe ublk_drv || fail modprobe ublk_drv
modprobe crc32c_generic; modprobe ext4 || fail modprobe ext4
[ -x /usr/bin/cbd-host ] || fail "no /usr/bin/cbd-host in the initramfs"

cbd-host --backend ram --ram-size 64M --queues 2 --depth 32 >/tmp/host.log 2>&1 &
pid=$!
i=0
while [ ! -b /dev/ublkb0 ] && [ $i -lt 600 ]; do
    kill -0 $pid 2>/dev/null || fail "cbd-host exited early"
    sleep 0.1; i=$((i+1))
done
[ -b /dev/ublkb0 ] || fail "no /dev/ublkb0"
echo "queues: $(ls /sys/block/ublkb0/mq | wc -l) size: $(cat /sys/block/ublkb0/size) wc: $(cat /sys/block/ublkb0/queue/write_cache) fua: $(cat /sys/block/ublkb0/queue/fua)"
[ "$(ls /sys/block/ublkb0/mq | wc -l)" = 2 ] || fail "expected 2 hw queues"
[ "$(cat /sys/block/ublkb0/size)" = 131072 ] || fail "size"

# Raw data round trip, bypassing the page cache.
dd if=/dev/urandom of=/tmp/pat bs=1M count=4 2>/dev/null
dd if=/tmp/pat of=/dev/ublkb0 bs=1M seek=3 oflag=direct 2>/dev/null || fail "dd write"
dd if=/dev/ublkb0 of=/tmp/back bs=1M skip=3 count=4 iflag=direct 2>/dev/null || fail "dd read"
cmp /tmp/pat /tmp/back || fail "data mismatch"

# A file system: mkfs, mount, write + sync (flush), unmount, check.
mkfs.ext4 -q -F /dev/ublkb0 || fail mkfs.ext4
mkdir -p /mnt/u
mount -t ext4 /dev/ublkb0 /mnt/u || fail mount
cp /tmp/pat /mnt/u/pat && sync || fail "write file"
umount /mnt/u || fail umount
fsck.ext4 -fn /dev/ublkb0 >/tmp/fsck.log 2>&1 || { cat /tmp/fsck.log; fail fsck; }
mount -t ext4 /dev/ublkb0 /mnt/u || fail remount
cmp /tmp/pat /mnt/u/pat || fail "file mismatch after remount"
umount /mnt/u

kill -TERM $pid
wait $pid
rc=$?
cat /tmp/host.log
[ $rc = 0 ] || fail "cbd-host exit $rc"
stats=$(grep 'stopped;' /tmp/host.log)
flushes=$(echo "$stats" | sed -n 's/.*flushes=\([0-9]*\).*/\1/p')
[ -n "$flushes" ] && [ "$flushes" -gt 0 ] || fail "no flush reached the disk: $stats"
[ ! -e /dev/ublkb0 ] || fail "/dev/ublkb0 still exists after stop"
echo "RESULT host-ram OK ${stats#*; }"
