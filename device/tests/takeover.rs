//! Restart after a crash: a backend whose previous incarnation died less than 30 s
//! ago is refused (its heartbeat still looks alive) unless it asks to take over its
//! own records; with `takeover` it re-attaches to the same backend slot at once.

use device::backend::{Backend, BackendConfig, BackendError};
use device::layout::*;
use device::native::{HeapMem, VecMedia};
use device::shm::Shm;
use device::trace::NoTrace;
use device::transport::{Transport, TransportError};

const T0: u64 = 1_700_000_000_000_000_000;

#[test]
fn restart_within_heartbeat_timeout_needs_takeover() {
    let mem = HeapMem::new(TransportInfo::region_for(2) as usize);
    let shm = Shm::new(&mem, &NoTrace);
    Transport::format(shm, tflags::MULTIHOST, false, T0).unwrap();
    let mut scratch = vec![0u8; chan::MAX_IO as usize];
    let cfg = BackendConfig {
        n_handlers: 1,
        ..BackendConfig::default()
    };
    let first = Backend::start(shm, cfg, VecMedia::new(1 << 20), &mut scratch, T0).unwrap();
    let id = first.backend_id;
    // The device "dies": its records stay, with a heartbeat from T0.
    std::mem::forget(first);
    let later = T0 + 5_000_000_000; // 5 s: still alive by the 30 s rule
    let mut scratch2 = vec![0u8; chan::MAX_IO as usize];
    let refused = Backend::start(shm, cfg, VecMedia::new(1 << 20), &mut scratch2, later);
    assert!(
        matches!(refused, Err(BackendError::Transport(TransportError::Alive))),
        "{:?}",
        refused.err()
    );
    let mut scratch3 = vec![0u8; chan::MAX_IO as usize];
    let cfg2 = BackendConfig {
        takeover: true,
        ..cfg
    };
    let again =
        Backend::start(shm, cfg2, VecMedia::new(1 << 20), &mut scratch3, later).expect("takeover");
    assert_eq!(again.backend_id, id, "re-attached to its own backend slot");
    // Another device name may not take over this one's records.
    let mut scratch4 = vec![0u8; chan::MAX_IO as usize];
    let other = BackendConfig {
        hostname: "other",
        takeover: true,
        ..cfg
    };
    let o = Backend::start(shm, other, VecMedia::new(1 << 20), &mut scratch4, later)
        .expect("a second device");
    assert_ne!(o.backend_id, id);
}
