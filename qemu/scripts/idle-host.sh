# A host that attaches its disk and then issues no I/O: the hostile neighbour of a
# several-hosts run. The harness writes garbage into this host's channels from outside
# (the same shared file), standing for this host's cbd-host gone rogue. Its own cbd-host
# may be confused by that, so the end does not depend on it.
T=idle-host
start_host
echo "HOST-UP $DEV"
while read -r line; do
    case "$line" in *stop*) break ;; esac
done
kill -TERM $HOSTPID 2>/dev/null
i=0
while kill -0 $HOSTPID 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
kill -9 $HOSTPID 2>/dev/null
tail -n 3 /tmp/host.log
echo "RESULT $T DONE"
