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
# Where the guest's CPU goes during fio: the `cpu` line of /proc/stat (all vCPUs, in
# USER_HZ ticks) and the server's utime + stime, before and after; the harness prints
# the shares (`CPUSTAT DISK before|after NCPU cpu-fields... SERVER-UTIME SERVER-STIME`).
pid_of() {
    for d in /proc/[0-9]*; do
        [ "$(cat $d/comm 2>/dev/null)" = "$1" ] && { echo ${d#/proc/}; return; }
    done
}
cpustat() {
    set -- $1 $2 $3 $(grep -c '^processor' /proc/cpuinfo) $(head -1 /proc/stat) \
        $(cut -d')' -f2 /proc/$3/stat | cut -d' ' -f13,14)
    d=$1; w=$2; shift 3
    echo "CPUSTAT $d $w $*"
}
# The one fio job of the run on DEV (`--minimal`: one line of figures).
fio_job() {
    fio --name=b --filename=$1 --direct=1 --ioengine=libaio --rw=$rw --bs=$bs \
        --iodepth=$qd --size=$size --time_based --runtime=$RUNTIME \
        --norandommap --randrepeat=0 --minimal 2>/dev/null
}
# The harness resets the device's profile at this marker and asks for it at the next,
# so the breakdown covers fio's run alone (not boot, start-up and stop).
echo "PHASE profile-start"
sleep 1
# Where the guest's CPU goes, by sample: `perf` (its own initramfs layer) samples every
# vCPU at ~1 kHz on the software clock (TCG has no PMU) while fio runs on our disk.
perfpid=
if command -v perf >/dev/null 2>&1; then
    perf record -e cpu-clock -F 997 -a -B -N -o /tmp/perf.data >/tmp/perf.log 2>&1 &
    perfpid=$!
    sleep 1
fi
cpustat cbd before $HOSTPID
line=$(fio_job /dev/ublkb0) || fail "fio cbd $rw $bs qd$qd"
cpustat cbd after $HOSTPID
echo "PHASE profile-end"
# The report, one `PERF` line per row (the harness prints them): samples by task, by
# task and binary, then the hottest symbols of cbd-host and of the whole guest.
if [ -n "$perfpid" ]; then
    kill -INT $perfpid; wait $perfpid
    perf_rows() {
        perf report -i /tmp/perf.data --stdio --percent-limit 1 "$@" 2>/dev/null \
            | grep -v '^#' | grep -v '^ *$' | head -25
    }
    echo "PERF samples-by comm"; perf_rows --sort comm | sed 's/^/PERF /'
    echo "PERF samples-by comm,dso"; perf_rows --sort comm,dso | sed 's/^/PERF /'
    echo "PERF samples-by sym (cbd-host)"; perf_rows --comm cbd-host --sort dso,sym | sed 's/^/PERF /'
    echo "PERF samples-by sym (all)"; perf_rows --sort comm,sym | sed 's/^/PERF /'
    echo "PERF end"
else
    sleep 1
fi
echo "BENCH cbd $rw $bs $qd $line"
# The same job on the ublk null target (rublk, one queue), for the guest's CPU shares
# next to a server that completes every request at once.
if rublk add null -n 1 -q 1 -d 128 >/tmp/rublk.log 2>&1; then
    i=0; while [ ! -b /dev/ublkb1 ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
    echo none > /sys/block/ublkb1/queue/scheduler 2>/dev/null
    npid=$(pid_of rublk)
    cpustat null before $npid
    nline=$(fio_job /dev/ublkb1) || fail "fio null $rw $bs qd$qd"
    cpustat null after $npid
    echo "BENCH null $rw $bs $qd $nline"
    rublk del -n 1 >/dev/null 2>&1
else
    cat /tmp/rublk.log
    fail "rublk add null"
fi
stop_host
echo "RESULT $T OK"
