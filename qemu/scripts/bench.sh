# The block-device benchmark, inside the Linux guest: fio 4 KiB randread/randwrite at QD1
# and QD32 on our ublk disk (CBD over ivshmem), on a virtio-blk disk backed by a
# /dev/shm file, and on the ublk null target (rublk) — same guest, same run.
T=bench
RUNTIME=${RUNTIME:-5}
DEPTH=64 start_host
modprobe virtio_blk 2>/dev/null
i=0; while [ ! -b /dev/vda ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done
[ -b /dev/vda ] || fail "no virtio-blk disk /dev/vda"
rublk add null -n 1 -q 1 -d 128 >/tmp/rublk.log 2>&1 || { cat /tmp/rublk.log; fail "rublk add null"; }
i=0; while [ ! -b /dev/ublkb1 ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
[ -b /dev/ublkb1 ] || fail "no /dev/ublkb1 (rublk null)"
for d in ublkb0 ublkb1 vda; do echo none > /sys/block/$d/queue/scheduler 2>/dev/null; done
size=$(( $(cat /sys/block/ublkb0/size) * 512 ))
[ $size -gt 268435456 ] && size=268435456
for dev in cbd:/dev/ublkb0 virtio:/dev/vda null:/dev/ublkb1; do
    name=${dev%%:*}; path=${dev#*:}
    for job in randread:1 randread:32 randwrite:1 randwrite:32; do
        rw=${job%%:*}; qd=${job#*:}
        line=$(fio --name=b --filename=$path --direct=1 --ioengine=libaio --rw=$rw --bs=4k \
            --iodepth=$qd --size=$size --time_based --runtime=$RUNTIME --ramp_time=1 \
            --norandommap --randrepeat=0 --minimal 2>/dev/null) || fail "fio $name $rw qd$qd"
        echo "BENCH $name $rw $qd $line"
    done
done
rublk del -n 1 >/dev/null 2>&1
stop_host
echo "RESULT $T OK"
