# (f) the inspector on a live pair: fio random writes on both queues for LOAD_SECS while
# the test process decodes the shared file; every 2 s the guest prints cbd-host's own
# counters (`INSPECT-STATS N key=value ...`) for the test to compare with what it read.
T=pair-inspect
start_host
echo "INSPECT-GUEST queues=$(ls /sys/block/ublkb0/mq | wc -l) sectors=$(cat /sys/block/ublkb0/size)"
fio --name=load --filename=$DEV --direct=1 --ioengine=libaio --iodepth=16 --numjobs=2 \
    --rw=randwrite --bs=4k --size=16M --time_based --runtime=${LOAD_SECS:-40} \
    --group_reporting --output=/tmp/fio.log >/dev/null 2>&1 &
FIOPID=$!
i=0
while kill -0 $FIOPID 2>/dev/null; do
    sleep 2
    i=$((i+1))
    echo "INSPECT-STATS $i $(cbd-host stats 0)"
done
wait $FIOPID || { cat /tmp/fio.log; fail fio; }
grep -q "err= 0" /tmp/fio.log || { cat /tmp/fio.log; fail "fio reported errors"; }
stop_host
echo "RESULT $T OK"
