# Verified fio rounds on this host's CBD disk until the harness types `stop` on the
# console: each round writes ${FIO_SIZE:-4M} at random (a new seed every round, so a stale
# block of the previous round fails the check) and reads it back with crc32c verification.
T=fio-loop
start_host
echo "HOST-UP $DEV"
rm -f /tmp/stop /tmp/fail /tmp/rounds
(
    n=0
    while [ ! -f /tmp/stop ]; do
        n=$((n+1))
        if ! fio --name=verify --filename=$DEV --direct=1 --ioengine=libaio --iodepth=${DEPTH_FIO:-8} \
                --rw=randwrite --bs=4k --size=${FIO_SIZE:-4M} --randseed=$n --verify=crc32c \
                --verify_fatal=1 --do_verify=1 --output=/tmp/fio.log >/dev/null 2>&1 \
            || ! grep -q "err= 0" /tmp/fio.log; then
            cp /tmp/fio.log /tmp/fail
            break
        fi
        echo "ROUND $n OK"
    done
    [ -f /tmp/fail ] && n=$((n-1))
    echo $n >/tmp/rounds
) &
LOOP=$!
while read -r line; do
    case "$line" in *stop*) break ;; esac
done
touch /tmp/stop
wait $LOOP
[ -f /tmp/fail ] && { cat /tmp/fail; fail "fio round failed"; }
n=$(cat /tmp/rounds)
[ "$n" -gt 0 ] || fail "no fio round completed"
stop_host
echo "RESULT $T OK rounds=$n"
