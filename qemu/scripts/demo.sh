# The `cargo run` demo, inside the Linux guest: attach to the cbdfw device, put a
# file system on it, write, sync, check, read back after a remount.
T=demo
modprobe crc32c_generic 2>/dev/null; modprobe ext4 2>/dev/null
start_host
echo "demo: mkfs.ext4 on $DEV"
mkfs.ext4 -q -F $DEV || fail mkfs.ext4
mkdir -p /mnt/cbd && mount -t ext4 $DEV /mnt/cbd || fail mount
echo "demo: writing files"
dd if=/dev/urandom of=/mnt/cbd/blob bs=256k count=16 2>/dev/null || fail "write blob"
echo "hello from the Linux host, stored by the cbdfw device" >/mnt/cbd/hello.txt
(cd /mnt/cbd && md5sum blob hello.txt >/tmp/sums)
sync || fail sync
umount /mnt/cbd || fail umount
fsck.ext4 -fn $DEV >/tmp/fsck.log 2>&1 || { cat /tmp/fsck.log; fail "fsck not clean"; }
echo "demo: fsck clean; remounting and verifying"
mount -t ext4 $DEV /mnt/cbd || fail remount
(cd /mnt/cbd && md5sum -c /tmp/sums) || fail "contents differ after remount"
cat /mnt/cbd/hello.txt
umount /mnt/cbd
stop_host
echo "RESULT $T OK"
