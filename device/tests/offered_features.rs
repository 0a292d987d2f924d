//! The feature bits a starting backend advertises in its record (docs/protocol.md,
//! the extension area): NONCOHERENT only when configured *and* the transport has both
//! CRC flags, DISCARD_WZ and DURABLE_TOKENS each exactly when configured. Every
//! combination is checked, each bit on its own and together, so no bit can hide
//! another. The device suite otherwise only sees the features through the host
//! engine's choices.

use device::backend::{Backend, BackendConfig};
use device::durable::DurableConfig;
use device::layout::*;
use device::native::{HeapMem, VecMedia};
use device::shm::Shm;
use device::trace::NoTrace;
use device::transport::Transport;

const T0: u64 = 1_700_000_000_000_000_000;

fn advertised(flags: u16, noncoherent: bool, discard_wz: bool, durable: bool) -> u64 {
    let mem = HeapMem::new(TransportInfo::region_for(1) as usize);
    let shm = Shm::new(&mem, &NoTrace);
    Transport::format(shm, flags, false, T0).unwrap();
    let mut scratch = vec![0u8; chan::MAX_IO as usize];
    let cfg = BackendConfig {
        noncoherent,
        discard_wz,
        durable: DurableConfig {
            offer: durable,
            ..DurableConfig::default()
        },
        ..BackendConfig::default()
    };
    let b = Backend::start(shm, cfg, VecMedia::new(1 << 20), &mut scratch, T0).unwrap();
    let tp = Transport::open(shm, false).unwrap();
    tp.backend(b.backend_id)
        .unwrap()
        .expect("its record")
        .rec
        .features
}

#[test]
fn a_backend_advertises_exactly_the_configured_features() {
    let both = tflags::CHANNEL_CRC | tflags::CHANNEL_DATA_CRC;
    for flags in [0, tflags::CHANNEL_CRC, tflags::CHANNEL_DATA_CRC, both] {
        for nc in [false, true] {
            for dwz in [false, true] {
                for dur in [false, true] {
                    let mut want = 0;
                    if nc && flags == both {
                        want |= features::NONCOHERENT;
                    }
                    if dwz {
                        want |= features::DISCARD_WZ;
                    }
                    if dur {
                        want |= features::DURABLE_TOKENS;
                    }
                    let got = advertised(flags | tflags::MULTIHOST, nc, dwz, dur);
                    assert_eq!(
                        got, want,
                        "flags {flags:#x} noncoherent {nc} discard_wz {dwz} durable {dur}"
                    );
                }
            }
        }
    }
}
