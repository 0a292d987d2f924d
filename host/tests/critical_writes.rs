//! A CRITICAL write (FUA) completes only once durable, and says so: its completion
//! carries the device's DURABLE flag; a STANDARD write of the same size, completed
//! from staging before any deadline, does not. The other suites check what survives
//! a crash, which a CRITICAL write sent as STANDARD also passes while the backend
//! stays up.

use device::backend::{Backend, BackendConfig};
use device::layout::*;
use device::native::{HeapMem, VecMedia};
use device::shm::Shm;
use device::trace::NoTrace;
use device::transport::{Transport, format_flags};
use host::engine::{Host, HostConfig, Intent, Request};

const T0: u64 = 1_700_000_000_000_000_000;

#[test]
fn a_critical_write_completes_durable_and_a_standard_one_does_not() {
    let mem = HeapMem::new(TransportInfo::region_for(2) as usize);
    let shm = Shm::new(&mem, &NoTrace);
    Transport::format(shm, format_flags(true), false, T0).unwrap();
    let mut scratch = vec![0u8; chan::MAX_IO as usize];
    let mut backend = Backend::start(
        shm,
        BackendConfig::default(),
        VecMedia::new(1 << 20),
        &mut scratch,
        T0,
    )
    .unwrap();
    let host = Host::register(shm, HostConfig::default(), T0).unwrap();
    let bid = host.find_backend(T0).unwrap();
    let mut dev = host.dev_start(bid, 1, T0).unwrap();
    let mut now = T0;
    while !dev.poll_ready(now).unwrap() {
        now += 1_000_000;
        backend.poll(now).unwrap();
    }
    let q = &mut dev.queues[0];
    assert!(
        q.durable_tokens(),
        "both sides offer durability tokens by default"
    );
    let mut buf = vec![0u8; chan::MAX_IO as usize];
    for (i, intent) in [Intent::Standard, Intent::Critical, Intent::Standard]
        .into_iter()
        .enumerate()
    {
        let req = Request {
            op: op::WRITE,
            offset: 4096 * i as u64,
            len: 4096,
        };
        let tid = q.submit_intent(req, &[i as u8 + 1; 4096], intent).unwrap();
        // The same instant: no staging deadline has passed.
        backend.poll(now).unwrap();
        let c = q.poll(&mut buf).unwrap().expect("the write completes");
        assert_eq!((c.req_tid, c.result), (tid, 0));
        assert_eq!(
            c.durable,
            intent == Intent::Critical,
            "write {i} ({intent:?}): durable at completion"
        );
    }
}
