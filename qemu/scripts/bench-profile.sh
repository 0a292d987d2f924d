# One fio job on our ublk disk alone (JOB=rw:bs:qd), for the device's cycle profile
# (`cargo run -- bench profile`): the device boots with profile=on and prints where its
# time went when it stops, after this script.
T=bench-profile
RUNTIME=${RUNTIME:-5}
DEPTH=64 start_host
echo none > /sys/block/ublkb0/queue/scheduler 2>/dev/null
size=$(( $(cat /sys/block/ublkb0/size) * 512 ))
[ $size -gt 268435456 ] && size=268435456
rw=${JOB%%:*}; rest=${JOB#*:}; bs=${rest%%:*}; qd=${rest#*:}
line=$(fio --name=b --filename=/dev/ublkb0 --direct=1 --ioengine=libaio --rw=$rw --bs=$bs \
    --iodepth=$qd --size=$size --time_based --runtime=$RUNTIME \
    --norandommap --randrepeat=0 --minimal 2>/dev/null) || fail "fio cbd $rw $bs qd$qd"
echo "BENCH cbd $rw $bs $qd $line"
stop_host
echo "RESULT $T OK"
