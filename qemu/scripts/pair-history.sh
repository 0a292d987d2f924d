# (h) cbd-host records its request history (--history, in $HOSTARGS) while fio runs
# workloads that overlap on purpose; the test pulls the history out through a virtio-blk
# disk (/dev/vda, zero-filled: the text ends at the first NUL) and checks it.
T=pair-history
modprobe virtio_blk 2>/dev/null
i=0; while [ ! -b /dev/vda ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done
[ -b /dev/vda ] || fail "no virtio-blk disk /dev/vda for the history"
DEPTH=64
start_host
# The verify job (as pair-fio, smaller): data integrity checked by fio itself.
fio --name=verify --filename=$DEV --direct=1 --ioengine=libaio --iodepth=16 --numjobs=1 \
    --rw=randwrite --bs=4k --size=${VERIFY_SIZE:-4M} --offset=8M --verify=crc32c --verify_fatal=1 \
    --do_verify=1 --output=/tmp/fio-verify.log >/dev/null 2>&1 || { cat /tmp/fio-verify.log; fail "fio verify"; }
grep -q "err= 0" /tmp/fio-verify.log || { cat /tmp/fio-verify.log; fail "fio verify reported errors"; }
# Overlap: two jobs on the same 2 MiB, one per vCPU (= per ublk queue = per CBD channel),
# QD 64 and 16, random reads and writes of 512 B .. 1 MiB racing each other. No verify
# (the order of overlapping writes in flight is undefined); fio scrambles every 512 B
# of each buffer with the I/O's offset and time, so each write's content is its own.
fio --filename=$DEV --direct=1 --ioengine=libaio --size=2M --offset=0 \
    --rw=randrw --rwmixread=40 --bssplit=512/15:4k/30:16k/25:64k/15:256k/10:1m/5 \
    --time_based --runtime=${RUNTIME:-20} --scramble_buffers=1 --norandommap \
    --name=a --cpus_allowed=0 --iodepth=64 --name=b --cpus_allowed=1 --iodepth=16 \
    --output=/tmp/fio-overlap.log >/dev/null 2>&1 || { cat /tmp/fio-overlap.log; fail "fio overlap"; }
grep -q "err= 0" /tmp/fio-overlap.log || { cat /tmp/fio-overlap.log; fail "fio overlap reported errors"; }
grep -E "read:|write:" /tmp/fio-overlap.log | head -n 4
stop_host
n=$(wc -c </tmp/history)
echo "history: $n bytes, $(grep -c '^inv' /tmp/history) requests"
dd if=/tmp/history of=/dev/vda bs=1M conv=fsync 2>/dev/null || fail "writing the history to /dev/vda"
echo "RESULT $T OK"
