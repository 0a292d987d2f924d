# The block-device benchmark, inside the Linux guest, same guest and same run for every
# disk: fio 4 KiB randread/randwrite at QD1 and QD32 and 1 MiB sequential read/write at
# QD4 on our ublk disk (CBD over ivshmem, QUEUES queues), on a virtio-blk disk backed by
# a /dev/shm file, on the ublk null target (rublk, as many queues as ours) and on brd (a
# RAM disk in this guest).
T=bench
RUNTIME=${RUNTIME:-5}
DEPTH=64 start_host
modprobe virtio_blk 2>/dev/null
i=0; while [ ! -b /dev/vda ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done
[ -b /dev/vda ] || fail "no virtio-blk disk /dev/vda"
rublk add null -n 1 -q ${QUEUES:-1} -d 128 >/tmp/rublk.log 2>&1 || { cat /tmp/rublk.log; fail "rublk add null"; }
i=0; while [ ! -b /dev/ublkb1 ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
[ -b /dev/ublkb1 ] || fail "no /dev/ublkb1 (rublk null)"
# brd: rd_size in KiB, 256 MiB (the guest has 1 GiB).
modprobe brd rd_nr=1 rd_size=262144 max_part=0 || fail "modprobe brd"
[ -b /dev/ram0 ] || fail "no /dev/ram0 (brd)"
for d in ublkb0 ublkb1 vda ram0; do echo none > /sys/block/$d/queue/scheduler 2>/dev/null; done
size=$(( $(cat /sys/block/ublkb0/size) * 512 ))
[ $size -gt 268435456 ] && size=268435456
for dev in cbd:/dev/ublkb0 virtio:/dev/vda null:/dev/ublkb1 brd:/dev/ram0; do
    name=${dev%%:*}; path=${dev#*:}
    # rw:block size:queue depth
    for job in randread:4k:1 randread:4k:32 randwrite:4k:1 randwrite:4k:32 read:1m:4 write:1m:4; do
        rw=${job%%:*}; rest=${job#*:}; bs=${rest%%:*}; qd=${rest#*:}
        # With QUEUES > 1 the depth is spread over as many fio jobs (blk-mq maps each
        # submitting CPU to one queue, so one job would use one queue): QD32 on 2 queues
        # is 2 jobs at 16, each on its own half of the disk; QD1 stays one job.
        nj=1; [ ${QUEUES:-1} -gt 1 ] && [ $qd -ge ${QUEUES:-1} ] && nj=${QUEUES:-1}
        line=$(fio --name=b --filename=$path --direct=1 --ioengine=libaio --rw=$rw --bs=$bs \
            --numjobs=$nj --group_reporting --iodepth=$((qd / nj)) --size=$((size / nj)) --offset_increment=$((size / nj)) --time_based --runtime=$RUNTIME --ramp_time=1 \
            --norandommap --randrepeat=0 --minimal 2>/dev/null) || fail "fio $name $rw $bs qd$qd"
        echo "BENCH $name $rw $bs $qd $line"
    done
done
rublk del -n 1 >/dev/null 2>&1
rmmod brd 2>/dev/null
stop_host
echo "RESULT $T OK"
