# One fio job on our ublk disk alone (JOB=rw:bs:qd), for the device's cycle profile
# (`cargo run -- bench profile`): the device boots with profile=on; the harness resets
# the profile when fio starts and has it printed when fio ends.
T=bench-profile
RUNTIME=${RUNTIME:-5}
DEPTH=64 start_host
echo none > /sys/block/ublkb0/queue/scheduler 2>/dev/null
size=$(( $(cat /sys/block/ublkb0/size) * 512 ))
[ $size -gt 268435456 ] && size=268435456
rw=${JOB%%:*}; rest=${JOB#*:}; bs=${rest%%:*}; qd=${rest#*:}
# The harness resets the device's profile at this marker and asks for it at the next,
# so the breakdown covers fio's run alone (not boot, start-up and stop).
echo "PHASE profile-start"
sleep 1
line=$(fio --name=b --filename=/dev/ublkb0 --direct=1 --ioengine=libaio --rw=$rw --bs=$bs \
    --iodepth=$qd --size=$size --time_based --runtime=$RUNTIME \
    --norandommap --randrepeat=0 --minimal 2>/dev/null) || fail "fio cbd $rw $bs qd$qd"
echo "PHASE profile-end"
sleep 1
echo "BENCH cbd $rw $bs $qd $line"
stop_host
echo "RESULT $T OK"
