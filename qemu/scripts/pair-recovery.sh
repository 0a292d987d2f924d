# The device VM is SIGKILLed and restarted (takeover) twice by the harness: once while fio
# --verify writes, once while an ext4 fsync loop runs. Every request must succeed: fio
# exits 0 with no verify failure, every fsync returns 0, the files read back after a
# remount, fsck is clean, and cbd-host saw both restarts with errors=0.
T=pair-recovery
stat_of() { cbd-host stats 0 2>/dev/null | tr ' ' '\n' | sed -n "s/^$1=//p"; }
# Restarts cbd-host saw: distinct backend incarnations it logged (a quick restart may
# never look "down" to the heartbeat rule, so the outage counter is not the measure).
restarts() { grep -o "restarted (incarnation [0-9]*" /tmp/host.log | sort -u | wc -l; }
start_host
fio --name=verify --filename=$DEV --direct=1 --ioengine=libaio --iodepth=16 --numjobs=1 \
    --rw=randwrite --bs=4k --size=${FIO_SIZE:-64M} --verify=crc32c --verify_fatal=1 \
    --do_verify=1 --output=/tmp/fio.log >/dev/null 2>&1 &
FIOPID=$!
sleep 1
echo "PHASE fio-running"
wait $FIOPID || { rc=$?; cat /tmp/fio.log; fail "fio exit $rc across the device restart"; }
grep -q "err= 0" /tmp/fio.log || { cat /tmp/fio.log; fail "fio reported errors"; }
grep -E "write:|read:" /tmp/fio.log | head -n 2
o=$(restarts)
echo "after fio: restarts=$o outages=$(stat_of outages) errors=$(stat_of errors) replayed_writes=$(stat_of replayed_writes)"
[ "$o" -ge 1 ] || fail "fio ended before the device restart was seen"
mkfs.ext4 -q -F $DEV || fail "mkfs.ext4"
# What a failed mount needs to be understood: the kernel's reason, the superblock as the
# device returns it (direct I/O, past the page cache: the ext4 magic 53 ef at byte 56),
# cbd-host's counters.
mount_diag() {
    dmesg | tail -n 15
    echo "superblock (direct):"; dd if=$DEV bs=1024 skip=1 count=1 iflag=direct 2>/dev/null | od -A d -t x1 | head -n 6
    echo "stats: $(cbd-host stats 0)"
}
mkdir -p /mnt/r && mount -t ext4 $DEV /mnt/r || { mount_diag; fail "mount"; }
echo "PHASE fsync-running"
i=0
while :; do
    dd if=/dev/urandom of=/mnt/r/f$i bs=16k count=4 conv=fsync 2>/tmp/dd.err \
        || { cat /tmp/dd.err; fail "write+fsync $i returned an error"; }
    md5sum /mnt/r/f$i >>/tmp/sums
    i=$((i+1))
    if [ $((i % 10)) = 0 ]; then
        [ "$(restarts)" -ge 2 ] && [ $i -ge 40 ] && break
        [ $i -ge 4000 ] && fail "no second outage seen after $i fsyncs"
    fi
done
echo "fsync loop: $i write+fsync, all 0"
umount /mnt/r || fail "umount"
mount -t ext4 $DEV /mnt/r || fail "remount"
md5sum -c -s /tmp/sums || fail "files differ after remount"
umount /mnt/r
fsck.ext4 -fn $DEV >/tmp/fsck.log 2>&1 || { cat /tmp/fsck.log; fail "fsck"; }
e=$(stat_of errors)
echo "stats: $(cbd-host stats 0)"
[ "$e" = 0 ] || fail "cbd-host counted $e errors"
grep -q "failing I/O with EIO" /tmp/host.log && fail "the recovery bound fired"
stop_host
echo "RESULT $T OK fsyncs=$i"
