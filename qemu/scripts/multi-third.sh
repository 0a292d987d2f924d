# The second host of a several-hosts run: its own disk (backend 1 via $HOSTARGS), and,
# once the harness types `go` (the first host is doing I/O on backend 0), a third host
# in this VM tries to dev-start against backend 0: refused with a clear message and a
# non-zero exit, no block device made. Then one verified fio round on its own disk.
T=multi-third
start_host
echo "HOST-UP $DEV"
while read -r line; do
    case "$line" in *go*) break ;; esac
done
cbd-host --transport ivshmem --backend-id 0 --hostname host-c --queues 1 --wait-backend 10 \
    --stats none >/tmp/third.log 2>&1 &
TP=$!
i=0
while kill -0 $TP 2>/dev/null && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done
if kill -0 $TP 2>/dev/null; then
    kill -9 $TP
    cat /tmp/third.log
    fail "the third host still runs after 60 s"
fi
wait $TP
rc=$?
cat /tmp/third.log
[ $rc != 0 ] || fail "the third host's dev-start on backend 0 was accepted"
grep -q "already serves a running blkdev" /tmp/third.log || fail "the third host's refusal says nothing clear"
[ -b /dev/ublkb1 ] && fail "the third host made a block device"
echo "THIRD-HOST-REFUSED rc=$rc"
fio --name=verify --filename=$DEV --direct=1 --ioengine=libaio --iodepth=8 \
    --rw=randwrite --bs=4k --size=${FIO_SIZE:-4M} --verify=crc32c --verify_fatal=1 \
    --do_verify=1 --output=/tmp/fio.log >/dev/null 2>&1 || { cat /tmp/fio.log; fail fio; }
grep -q "err= 0" /tmp/fio.log || { cat /tmp/fio.log; fail "fio reported errors"; }
grep -E "write:|read:" /tmp/fio.log | head -n 2
stop_host
echo "RESULT $T OK"
