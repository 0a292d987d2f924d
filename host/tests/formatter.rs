//! Whoever formats the transport (the device, or `cbd-host --format`) chooses its
//! flags with `transport::format_flags`: a device asked for the non-coherent mode
//! can offer it only on a transport with entry and payload CRCs, and a
//! non-coherent host finds it only then. (Until this test, both formatters wrote
//! MULTIHOST alone, so `noncoherent=on` on a freshly formatted region was ignored.)

use device::backend::{Backend, BackendConfig};
use device::layout::*;
use device::native::{HeapMem, VecMedia};
use device::shm::Shm;
use device::trace::NoTrace;
use device::transport::{Transport, format_flags};
use host::engine::{Host, HostConfig, HostError};

const T0: u64 = 1_700_000_000_000_000_000;

fn offered(format_noncoherent: bool) -> (bool, Result<u32, HostError>) {
    let mem = HeapMem::new(TransportInfo::region_for(2) as usize);
    let shm = Shm::new(&mem, &NoTrace);
    Transport::format(shm, format_flags(format_noncoherent), false, T0).unwrap();
    let mut scratch = vec![0u8; chan::MAX_IO as usize];
    let cfg = BackendConfig {
        n_handlers: 1,
        noncoherent: true,
        ..BackendConfig::default()
    };
    let b = Backend::start(shm, cfg, VecMedia::new(1 << 20), &mut scratch, T0).unwrap();
    let tp = Transport::open(shm, true).unwrap();
    let rec = tp
        .backend(b.backend_id)
        .unwrap()
        .expect("backend record")
        .rec;
    let host = Host::register(
        shm,
        HostConfig {
            hostname: "nc-host",
            noncoherent: true,
            ..HostConfig::default()
        },
        T0,
    )
    .unwrap();
    (
        rec.features & features::NONCOHERENT != 0,
        host.find_backend(T0),
    )
}

#[test]
fn noncoherent_formatting_lets_the_backend_offer_the_mode() {
    let flags = format_flags(true);
    assert_eq!(
        flags & (tflags::CHANNEL_CRC | tflags::CHANNEL_DATA_CRC),
        tflags::CHANNEL_CRC | tflags::CHANNEL_DATA_CRC
    );
    let (nc, found) = offered(true);
    assert!(nc, "the backend did not offer the non-coherent mode");
    assert!(found.is_ok(), "{found:?}");
}

#[test]
fn without_crcs_the_mode_is_not_offered_and_a_noncoherent_host_finds_no_backend() {
    let (nc, found) = offered(false);
    assert!(!nc);
    assert!(matches!(found, Err(HostError::NoBackend)), "{found:?}");
}

#[test]
fn region_for_is_the_smallest_region_with_that_many_segments() {
    for n in [1u64, 2, 63] {
        assert_eq!(TransportInfo::nr_segs(TransportInfo::region_for(n)), n);
        assert_eq!(
            TransportInfo::nr_segs(TransportInfo::region_for(n) - 1),
            n - 1
        );
    }
}
