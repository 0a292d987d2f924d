# (c) fio random writes with crc32c verification at QD16 on 2 channels.
T=pair-fio
start_host
fio --name=verify --filename=$DEV --direct=1 --ioengine=libaio --iodepth=16 --numjobs=1 \
    --rw=randwrite --bs=4k --size=${FIO_SIZE:-16M} --verify=crc32c --verify_fatal=1 \
    --do_verify=1 --offset_increment=0 --output=/tmp/fio.log >/dev/null 2>&1 || { cat /tmp/fio.log; fail fio; }
grep -q "err= 0" /tmp/fio.log || { cat /tmp/fio.log; fail "fio reported errors"; }
grep -E "write:|read:" /tmp/fio.log | head -n 2
stop_host
echo "RESULT $T OK"
