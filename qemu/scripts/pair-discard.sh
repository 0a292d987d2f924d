# (e) discard and write-zeroes from the Linux tools down to the device: blkdiscard,
# blkdiscard -z (BLKZEROOUT), fio --rw=trim on the raw disk; fallocate -p (mounted with
# -o discard) and fstrim on ext4. After each, the disk is read back with O_DIRECT: the
# discarded/zeroed ranges read zero (our device zeroes both, docs/host.md), every other byte
# is what was written. With --plain-v3 in $HOSTARGS nothing is advertised: the limits read
# 0, blkdiscard, fio trim and fstrim fail with EOPNOTSUPP, BLKZEROOUT falls back to the
# kernel writing zeroes, and no discard request reaches cbd-host.
# util-linux's tools by path: busybox's applets of the same names come first in $PATH
# (its blkdiscard has no -z).
T=pair-discard
modprobe crc32c_generic 2>/dev/null; modprobe ext4 2>/dev/null
start_host
PLAIN=0; case " $HOSTARGS " in *" --plain-v3 "*) PLAIN=1 ;; esac
Q=/sys/block/ublkb0/queue
echo "discard: discard_max_bytes=$(cat $Q/discard_max_bytes) write_zeroes_max_bytes=$(cat $Q/write_zeroes_max_bytes) discard_granularity=$(cat $Q/discard_granularity) plain=$PLAIN"
if [ $PLAIN = 1 ]; then
    [ "$(cat $Q/discard_max_bytes)" = 0 ] || fail "plain v3 but discard_max_bytes=$(cat $Q/discard_max_bytes)"
    [ "$(cat $Q/write_zeroes_max_bytes)" = 0 ] || fail "plain v3 but write_zeroes_max_bytes=$(cat $Q/write_zeroes_max_bytes)"
else
    [ "$(cat $Q/discard_max_bytes)" = 1048576 ] || fail "discard_max_bytes=$(cat $Q/discard_max_bytes), want 1048576"
    [ "$(cat $Q/write_zeroes_max_bytes)" = 1048576 ] || fail "write_zeroes_max_bytes=$(cat $Q/write_zeroes_max_bytes), want 1048576"
    [ "$(cat $Q/discard_granularity)" = 4096 ] || fail "discard_granularity=$(cat $Q/discard_granularity)"
fi

# The counters of the running cbd-host (the stats file is rewritten every second).
counter() { sleep 1.2; cbd-host stats 0 | tr ' ' '\n' | sed -n "s/^$1=//p"; }

# ---- raw disk: /tmp/img is what the first 8 MiB must hold.
R=8
dd if=/dev/urandom of=/tmp/img bs=1M count=$R 2>/dev/null
dd if=/tmp/img of=$DEV bs=1M oflag=direct 2>/dev/null || fail "writing the pattern"
zero_img() { dd if=/dev/zero of=/tmp/img bs=512 seek=$(($1 / 512)) count=$(($2 / 512)) conv=notrunc 2>/dev/null; }
check() {
    dd if=$DEV of=/tmp/back bs=1M count=$R iflag=direct 2>/dev/null || fail "$1: read-back"
    if ! cmp -s /tmp/img /tmp/back; then
        cmp -l /tmp/img /tmp/back | head -n 5
        fail "$1: read-back differs from the expected image"
    fi
    echo "discard: $1: read-back ok"
}
expect_unsupported() { # NAME LOGFILE: the command failed, with EOPNOTSUPP
    grep -qi "not supported" $2 || { cat $2; fail "$1: failed, but not with EOPNOTSUPP"; }
    echo "discard: $1: refused (EOPNOTSUPP) as expected"
}

if [ $PLAIN = 0 ]; then
    # 3 MiB: more than one request's worth (the kernel splits at discard_max_bytes).
    /sbin/blkdiscard -o $((1 << 20)) -l $((3 << 20)) $DEV 2>/tmp/e.log || { cat /tmp/e.log; fail blkdiscard; }
    zero_img $((1 << 20)) $((3 << 20))
    check "blkdiscard 3 MiB at 1 MiB"
    # BLKZEROOUT, 4 KiB aligned and an odd sector range.
    /sbin/blkdiscard -z -o $((5 << 20)) -l $((12 << 10)) $DEV 2>/tmp/e.log || { cat /tmp/e.log; fail "blkdiscard -z"; }
    /sbin/blkdiscard -z -o $(((7 << 20) + 1536)) -l 2560 $DEV 2>/tmp/e.log || { cat /tmp/e.log; fail "blkdiscard -z (sectors)"; }
    zero_img $((5 << 20)) $((12 << 10))
    zero_img $(((7 << 20) + 1536)) 2560
    check "blkdiscard -z 12 KiB at 5 MiB and 2560 B at 7 MiB + 1536"
    fio --name=trim --filename=$DEV --rw=trim --bs=64k --offset=6M --size=512k --ioengine=psync \
        --output=/tmp/fio.log >/dev/null 2>&1 || { cat /tmp/fio.log; fail "fio --rw=trim"; }
    grep -q "err= 0" /tmp/fio.log || { cat /tmp/fio.log; fail "fio trim reported errors"; }
    zero_img $((6 << 20)) $((512 << 10))
    check "fio --rw=trim 512 KiB at 6 MiB"
    d=$(counter discards)
    [ "$d" -gt 0 ] || fail "no discard request reached cbd-host (discards=$d)"
    echo "discard: cbd-host counted discards=$d"
else
    if /sbin/blkdiscard -o $((1 << 20)) -l $((1 << 20)) $DEV 2>/tmp/e.log; then fail "blkdiscard succeeded on plain v3"; fi
    expect_unsupported blkdiscard /tmp/e.log
    if fio --name=trim --filename=$DEV --rw=trim --bs=64k --offset=6M --size=512k --ioengine=psync \
        --output=/tmp/fio.log >/tmp/e.log 2>&1 && grep -q "err= 0" /tmp/fio.log; then
        fail "fio --rw=trim succeeded on plain v3"
    fi
    cat /tmp/fio.log >>/tmp/e.log
    expect_unsupported "fio --rw=trim" /tmp/e.log
    check "after the refused discards"
    # BLKZEROOUT without WRITE_ZEROES: the kernel writes zero pages itself (plain writes).
    w0=$(counter writes)
    /sbin/blkdiscard -z -o $((5 << 20)) -l $((12 << 10)) $DEV 2>/tmp/e.log || { cat /tmp/e.log; fail "blkdiscard -z (fallback)"; }
    zero_img $((5 << 20)) $((12 << 10))
    check "blkdiscard -z 12 KiB at 5 MiB (kernel fallback: zero writes)"
    w1=$(counter writes)
    [ "$w1" -gt "$w0" ] || fail "BLKZEROOUT fallback sent no writes ($w0 -> $w1)"
fi

# ---- ext4: 4 KiB blocks, so debugfs block numbers are 4 KiB units of the disk.
mkfs.ext4 -q -F -b 4096 $DEV || fail mkfs.ext4
mkdir -p /mnt/cbd
# blocks FILE FIRST COUNT: the disk blocks of FILE's logical blocks FIRST..FIRST+COUNT-1.
blocks() { debugfs -R "blocks $1" $DEV 2>/dev/null | tr ' ' '\n' | grep . | sed -n "$(($2 + 1)),$(($2 + $3))p"; }
dd if=/dev/zero of=/tmp/z bs=4k count=1 2>/dev/null
all_zero() { # BLOCK...: the first disk block (O_DIRECT) that does not read zero, or nothing
    for b in "$@"; do
        dd if=$DEV of=/tmp/b bs=4k skip=$b count=1 iflag=direct 2>/dev/null
        cmp -s /tmp/z /tmp/b || { echo $b; return 1; }
    done
}
reads_zero() { # NAME BLOCK...: each block reads zero on the disk
    n=$1; shift
    [ $# -gt 0 ] || fail "$n: no blocks"
    bad=$(all_zero "$@") || fail "$n: disk block $bad does not read zero"
    echo "discard: $n: $# freed disk block(s) read zero"
}

# fallocate -p with online discard: the freed blocks are discarded at the journal commit.
mount -t ext4 -o discard $DEV /mnt/cbd || fail "mount -o discard"
dd if=/dev/urandom of=/mnt/cbd/keep bs=64k count=16 2>/dev/null
dd if=/dev/urandom of=/mnt/cbd/hole bs=64k count=16 2>/dev/null
sync
(cd /mnt/cbd && md5sum keep >/tmp/sums)
dd if=/mnt/cbd/hole of=/tmp/hole.want bs=64k count=16 2>/dev/null
punched=$(blocks /hole 16 32)
/usr/bin/fallocate -p -o 65536 -l 131072 /mnt/cbd/hole || fail "fallocate -p"
sync
dd if=/dev/zero of=/tmp/hole.want bs=4k seek=16 count=32 conv=notrunc 2>/dev/null
cmp -s /tmp/hole.want /mnt/cbd/hole || fail "fallocate -p: the file does not read back as punched"
if [ $PLAIN = 0 ]; then
    # Online discard runs after the commit; give it a few commits' time.
    i=0
    while [ $i -lt 10 ] && ! all_zero $punched >/dev/null; do sleep 1; sync; i=$((i + 1)); done
    reads_zero "fallocate -p 128 KiB" $punched
fi
umount /mnt/cbd || fail umount

# fstrim: delete a file on a mount without online discard, then trim the free space.
mount -t ext4 $DEV /mnt/cbd || fail mount
dd if=/dev/urandom of=/mnt/cbd/victim bs=64k count=32 2>/dev/null
sync
victim=$(blocks /victim 0 512)
rm /mnt/cbd/victim
sync
if [ $PLAIN = 0 ]; then
    d0=$(counter discards)
    /sbin/fstrim -v /mnt/cbd >/tmp/e.log 2>&1 || { cat /tmp/e.log; fail fstrim; }
    cat /tmp/e.log
    grep -q "trimmed" /tmp/e.log || fail "fstrim trimmed nothing"
    reads_zero "fstrim (2 MiB file deleted)" $victim
    d1=$(counter discards)
    [ "$d1" -gt "$d0" ] || fail "fstrim sent no discard ($d0 -> $d1)"
else
    if /sbin/fstrim -v /mnt/cbd >/tmp/e.log 2>&1; then cat /tmp/e.log; fail "fstrim succeeded on plain v3"; fi
    expect_unsupported fstrim /tmp/e.log
fi
(cd /mnt/cbd && md5sum -c /tmp/sums) >/tmp/check.log 2>&1 || { cat /tmp/check.log; fail "keep changed"; }
cmp -s /tmp/hole.want /mnt/cbd/hole || fail "hole changed"
umount /mnt/cbd || fail umount
fsck.ext4 -fn $DEV >/tmp/fsck.log 2>&1 || { cat /tmp/fsck.log; fail "fsck.ext4 -fn not clean"; }
echo "discard: ext4 clean, files intact"
if [ $PLAIN = 1 ]; then
    [ "$(counter discards)" = 0 ] || fail "plain v3: a discard reached cbd-host"
fi
[ "$(counter errors)" = 0 ] || fail "cbd-host counted errors"
stop_host
echo "RESULT $T OK"
