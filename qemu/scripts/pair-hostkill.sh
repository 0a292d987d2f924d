# (f) cbd-host dies and comes back. 1) fio --verify runs on /dev/ublkb0, cbd-host is
# SIGKILLed mid-I/O and started again at once with --recover 0: the block device survives
# (ublk user recovery), the requests the dead program had taken are reissued to the new
# one, fio finishes with zero verify errors. 2) The recovered program is SIGKILLed too,
# the orphaned device is removed with `cbd-host stop 0`, and a plain new start with the
# same host name comes up at once: it holds the host lock, so the dead program's host and
# blkdev records are reclaimed instead of refused for 30 s.
T=pair-hostkill
start_host
up() { cut -d' ' -f1 /proc/uptime; }
counter() { cbd-host stats 0 2>/dev/null | tr ' ' '\n' | sed -n "s/^$1=//p"; }
fio --name=verify --filename=$DEV --direct=1 --ioengine=libaio --iodepth=16 --numjobs=1 \
    --rw=randwrite --bs=4k --size=${FIO_SIZE:-32M} --verify=crc32c --verify_fatal=1 \
    --do_verify=1 --output=/tmp/fio.log >/dev/null 2>&1 &
FIOPID=$!
# Mid-I/O: once cbd-host has served some writes (its stats file, rewritten every second).
i=0
while [ "$(counter writes)" -lt 300 ] 2>/dev/null || [ -z "$(counter writes)" ]; do
    kill -0 $FIOPID 2>/dev/null || { cat /tmp/fio.log; fail "fio ended before the kill"; }
    sleep 0.2; i=$((i + 1)); [ $i -lt 1500 ] || fail "no writes counted"
done
echo "hostkill: SIGKILL at writes=$(counter writes) (uptime $(up))"
kill -KILL $HOSTPID
wait $HOSTPID
echo "hostkill: cbd-host exit $? (137 = SIGKILL)"
mv /tmp/host.log /tmp/host1.log
[ -b /dev/ublkb0 ] || { dmesg | grep -i ublk | tail; fail "/dev/ublkb0 went away with its server"; }
t0=$(up)
cbd-host $TRANSPORT --queues ${QUEUES:-2} --depth ${DEPTH:-32} --recover 0 $HOSTARGS >/tmp/host.log 2>&1 &
HOSTPID=$!
i=0
while ! grep -q "cbd-host: ready /dev/ublkb0" /tmp/host.log; do
    kill -0 $HOSTPID 2>/dev/null || { cat /tmp/host.log; dmesg | grep -i ublk | tail; fail "recovering cbd-host exited"; }
    sleep 0.1; i=$((i + 1)); [ $i -lt 600 ] || { cat /tmp/host.log; fail "no recovery within 60 s"; }
done
echo "hostkill: recovered /dev/ublkb0 (restart at uptime $t0, serving at $(up))"
grep -E "recovering|reclaimed|orphaned" /tmp/host.log
wait $FIOPID
rc=$?
[ $rc = 0 ] || { cat /tmp/fio.log; fail "fio exit $rc across the kill"; }
grep -q "err= 0" /tmp/fio.log || { cat /tmp/fio.log; fail "fio reported errors"; }
grep -qi "verify.*fail\|bad magic\|crc32c.*wanted" /tmp/fio.log && { cat /tmp/fio.log; fail "verify errors"; }
grep -E "write:|read:" /tmp/fio.log | head -n 2
echo "hostkill: fio verify ok across the kill, reads after recovery=$(sleep 1.2; counter reads)"

# 2) No recovery: kill again, remove the orphan, start fresh under the same host name.
kill -KILL $HOSTPID
wait $HOSTPID
mv /tmp/host.log /tmp/host2.log
cbd-host stop 0 || fail "cbd-host stop 0 (orphaned device)"
i=0
while [ -e /dev/ublkb0 ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
[ ! -e /dev/ublkb0 ] || fail "/dev/ublkb0 still there after cbd-host stop 0"
t0=$(up)
start_host
grep -q "reclaimed host record" /tmp/host.log || { cat /tmp/host.log; fail "no reclaim logged"; }
echo "hostkill: same host name back without waiting (start at uptime $t0, up at $(up))"
dd if=/dev/urandom of=/tmp/pat bs=64k count=4 2>/dev/null
dd if=/tmp/pat of=$DEV bs=64k oflag=direct 2>/dev/null || fail "write after restart"
dd if=$DEV of=/tmp/back bs=64k count=4 iflag=direct 2>/dev/null
cmp -s /tmp/pat /tmp/back || fail "read-back after restart"
stop_host
echo "RESULT $T OK"
