# (b) mkfs.ext4, mount, write files, sync, unmount, fsck clean, remount, verify.
T=pair-ext4
modprobe crc32c_generic 2>/dev/null; modprobe ext4 2>/dev/null
start_host
mkfs.ext4 -q -F $DEV || fail mkfs.ext4
mkdir -p /mnt/cbd
mount -t ext4 $DEV /mnt/cbd || fail mount
for i in 1 2 3 4 5; do
    dd if=/dev/urandom of=/mnt/cbd/f$i bs=64k count=$((i * 4)) 2>/dev/null || fail "write f$i"
done
(cd /mnt/cbd && md5sum f1 f2 f3 f4 f5 >/tmp/sums)
sync || fail sync
umount /mnt/cbd || fail umount
fsck.ext4 -fn $DEV >/tmp/fsck.log 2>&1 || { cat /tmp/fsck.log; fail "fsck.ext4 -fn not clean"; }
mount -t ext4 $DEV /mnt/cbd || fail remount
(cd /mnt/cbd && md5sum -c /tmp/sums) >/tmp/check.log 2>&1 || { cat /tmp/check.log; fail "contents differ after remount"; }
umount /mnt/cbd
stop_host
echo "RESULT $T OK"
