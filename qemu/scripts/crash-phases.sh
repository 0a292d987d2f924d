# Crash phases: the harness SIGKILLs the device VM and restarts it (takeover, same media
# and shared file) inside each of three phases, and this script SIGKILLs cbd-host inside a
# fourth, for $POINTS rounds:
#   mkfs   mkfs.ext4 writing its inode tables and journal in full; fsck -fn after;
#   seq    fio sequential 1 MiB writes (QD 4) with crc32c verify;
#   fsync  ext4 write + fsync of small files (md5 sums kept); remount, md5 check, fsck -fn;
#   host   cbd-host SIGKILLed under fio --verify and restarted with --recover 0.
# Each kill is requested by a line `KILL PHASE rN now`, printed once the phase has written
# enough (/sys/block/ublkb0/stat) that it is mid-way. No request may fail (exit codes, fio
# err=0, cbd-host errors=0, the --recover-timeout bound never fired), and after each phase
# the written range is read back with O_DIRECT so the history holds post-crash reads.
# cbd-host records its history (--history), one file per cbd-host lifetime; each is copied
# to the virtio-blk disk /dev/vda when its lifetime ends (header "slot L LEN" in the first
# 4 KiB, the text from 1 MiB) and announced with `HISTORY L ready`; the harness checks it.
T=crash-phases
POINTS=${POINTS:-1}
modprobe virtio_blk 2>/dev/null
i=0; while [ ! -b /dev/vda ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done
[ -b /dev/vda ] || fail "no virtio-blk disk /dev/vda for the histories"
stat_of() { cbd-host stats 0 2>/dev/null | tr ' ' '\n' | sed -n "s/^$1=//p"; }
# Distinct backend incarnations any cbd-host lifetime logged as a restart.
restarts() { cat /tmp/host*.log | grep -o "restarted (incarnation [0-9]*" | sort -u | wc -l; }
written() { awk '{print $7}' /sys/block/ublkb0/stat; }
up() { cut -d' ' -f1 /proc/uptime; }
drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }
# kill_point PHASE ROUND PID SECTORS: once the block device has completed SECTORS more
# sectors of writes while PID still runs, ask the harness for the kill.
kill_point() {
    base=$(written); n=0
    while [ $(($(written) - base)) -lt $4 ]; do
        kill -0 $3 2>/dev/null || fail "$1 round $2 ended before its kill point"
        sleep 0.05; n=$((n+1)); [ $n -lt 6000 ] || fail "$1 round $2: no progress"
    done
    echo "KILL $1 r$2 now (uptime $(up))"
}
# The phase must have run across a restart: one more incarnation than at its start.
crossed() { [ "$(restarts)" -gt "$1" ] || fail "$2 ended before the device restart was seen"; }
readback() { dd if=$DEV of=/dev/null bs=1M iflag=direct 2>/dev/null || fail "read-back ($1)"; }
bound_fired() { grep -q "failing I/O with EIO" /tmp/host*.log; }
# history_out L: copy lifetime L's history to /dev/vda (a killed program's ends abruptly).
history_out() {
    f=/tmp/history-$1
    len=$(wc -c <$f)
    dd if=$f of=/dev/vda bs=1M seek=1 conv=fsync 2>/dev/null || fail "history $1 to /dev/vda"
    printf 'slot %d %d\n' $1 $len | dd of=/dev/vda bs=4096 conv=sync,fsync 2>/dev/null \
        || fail "history $1 header"
    echo "HISTORY $1 ready ($len bytes, $(grep -c '^inv' $f) requests)"
    rm -f $f
}
L=0
HOSTARGS="--history /tmp/history-$L"
start_host
fsyncs=0
r=1
while [ $r -le $POINTS ]; do
    # 1. mkfs.ext4 writing its inode tables and journal in full (8 MiB + 32 MiB of zeroes:
    # no discard first, and UNIX_IO_NOZEROOUT makes e2fsprogs write them, not ask the
    # device to zero them).
    b=$(restarts); t0=$(up)
    UNIX_IO_NOZEROOUT=1 mkfs.ext4 -q -F -b 4096 -I 256 -i 4096 -J size=32 \
        -E lazy_itable_init=0,lazy_journal_init=0,nodiscard $DEV >/tmp/mkfs.log 2>&1 &
    P=$!
    kill_point mkfs $r $P 8192
    wait $P; rc=$?
    [ $rc = 0 ] || { cat /tmp/mkfs.log; fail "mkfs.ext4 exit $rc across the device restart"; }
    crossed $b "mkfs round $r"
    drop_caches
    fsck.ext4 -fn $DEV >/tmp/fsck.log 2>&1 || { cat /tmp/fsck.log; fail "fsck after mkfs round $r"; }
    readback mkfs
    echo "FIG mkfs r$r ok seconds=$(echo "$(up) $t0" | awk '{print $1-$2}') replayed_writes=$(stat_of replayed_writes) errors=$(stat_of errors)"

    # 2. Sequential 1 MiB writes, QD 4, verified by fio after the restart.
    b=$(restarts); t0=$(up)
    fio --name=seq --filename=$DEV --direct=1 --ioengine=libaio --iodepth=4 --rw=write \
        --bs=1M --size=${SEQ_SIZE:-48M} --verify=crc32c --verify_fatal=1 --do_verify=1 \
        --output=/tmp/fio-seq.log >/dev/null 2>&1 &
    P=$!
    kill_point seq $r $P 16384
    wait $P; rc=$?
    [ $rc = 0 ] || { cat /tmp/fio-seq.log; fail "fio seq exit $rc across the device restart"; }
    grep -q "err= 0" /tmp/fio-seq.log || { cat /tmp/fio-seq.log; fail "fio seq reported errors"; }
    crossed $b "seq round $r"
    readback seq
    echo "FIG seq r$r ok seconds=$(echo "$(up) $t0" | awk '{print $1-$2}') $(grep -E "write:" /tmp/fio-seq.log | head -n 1 | tr -s ' ') replayed_writes=$(stat_of replayed_writes) errors=$(stat_of errors)"

    # 3. ext4 write + fsync loop; on until the restart was seen and 20 more files.
    mkfs.ext4 -q -F $DEV || fail "mkfs.ext4 (fsync phase)"
    mkdir -p /mnt/c && mount -t ext4 $DEV /mnt/c || fail "mount round $r"
    rm -f /tmp/sums
    b=$(restarts); t0=$(up); i=0; after=-1
    while :; do
        dd if=/dev/urandom of=/mnt/c/f$i bs=4k count=2 conv=fsync 2>/tmp/dd.err \
            || { cat /tmp/dd.err; fail "write+fsync $i round $r returned an error"; }
        md5sum /mnt/c/f$i >>/tmp/sums
        i=$((i+1))
        [ $i = 10 ] && echo "KILL fsync r$r now (uptime $(up))"
        [ $after -lt 0 ] && [ "$(restarts)" -gt $b ] && after=$i
        [ $after -ge 0 ] && [ $i -ge $((after + 20)) ] && break
        [ $i -ge 5000 ] && fail "no restart seen after $i fsyncs"
    done
    fsyncs=$((fsyncs + i))
    umount /mnt/c || fail "umount"
    drop_caches
    mount -t ext4 $DEV /mnt/c || fail "remount round $r"
    md5sum -c -s /tmp/sums || fail "files differ after remount round $r"
    umount /mnt/c
    drop_caches
    fsck.ext4 -fn $DEV >/tmp/fsck.log 2>&1 || { cat /tmp/fsck.log; fail "fsck after fsync round $r"; }
    readback fsync
    echo "FIG fsync r$r ok seconds=$(echo "$(up) $t0" | awk '{print $1-$2}') fsyncs=$i restart_seen_after=$after replayed_writes=$(stat_of replayed_writes) errors=$(stat_of errors)"

    # 4. cbd-host SIGKILLed under fio --verify, restarted with --recover 0. cbd-host writes
    # its history out every second: wait that long, so that what the kill loses of this
    # lifetime's history is from this phase only.
    sleep 2
    t0=$(up)
    fio --name=hostkill --filename=$DEV --direct=1 --ioengine=libaio --iodepth=16 \
        --rw=randwrite --bs=4k --offset=64M --size=${HOSTKILL_SIZE:-8M} --verify=crc32c \
        --verify_fatal=1 --do_verify=1 --output=/tmp/fio-host.log >/dev/null 2>&1 &
    P=$!
    kill_point host $r $P 4096
    e=$(stat_of errors); rw=$(stat_of replayed_writes)
    kill -KILL $HOSTPID
    wait $HOSTPID
    [ "$e" = 0 ] || fail "cbd-host lifetime $L counted $e errors"
    bound_fired && fail "the recovery bound fired (lifetime $L)"
    echo "FIG lifetime $L killed errors=$e replayed_writes=$rw"
    mv /tmp/host.log /tmp/host-$L.log
    [ -b /dev/ublkb0 ] || fail "/dev/ublkb0 went away with its server"
    L=$((L+1))
    k0=$(up)
    cbd-host $TRANSPORT --queues ${QUEUES:-2} --depth ${DEPTH:-32} --recover 0 \
        --history /tmp/history-$L >/tmp/host.log 2>&1 &
    HOSTPID=$!
    n=0
    while ! grep -q "cbd-host: ready /dev/ublkb0" /tmp/host.log; do
        kill -0 $HOSTPID 2>/dev/null || { cat /tmp/host.log; fail "recovering cbd-host exited"; }
        sleep 0.1; n=$((n+1)); [ $n -lt 600 ] || fail "no recovery within 60 s"
    done
    k1=$(up)
    history_out $((L-1))
    wait $P; rc=$?
    [ $rc = 0 ] || { cat /tmp/fio-host.log; fail "fio exit $rc across the cbd-host kill"; }
    grep -q "err= 0" /tmp/fio-host.log || { cat /tmp/fio-host.log; fail "fio reported errors (host kill)"; }
    dd if=$DEV of=/dev/null bs=1M skip=64 count=8 iflag=direct 2>/dev/null || fail "read-back (host)"
    echo "FIG host r$r ok seconds=$(echo "$(up) $t0" | awk '{print $1-$2}') recovered_in=$(echo "$k1 $k0" | awk '{print $1-$2}')"
    r=$((r+1))
done
e=$(stat_of errors)
echo "stats: $(cbd-host stats 0)"
[ "$e" = 0 ] || fail "cbd-host lifetime $L counted $e errors"
bound_fired && fail "the recovery bound fired"
stop_host
history_out $L
echo "RESULT $T OK rounds=$POINTS device_restarts=$(restarts) host_kills=$L fsyncs=$fsyncs"
