//! A forced re-format of a used region (`format=1` over an existing transport whose
//! backend is dead) frees everything the previous run allocated: both copies of every
//! segment record (the first two pages of each segment, docs/protocol.md §3) read
//! zero again, so each segment is a free slot, and a new backend provisions its
//! channels in the same segments. On a fresh region the zeroing is invisible (the
//! memory is zero already), which is why this test starts from a used one.

use device::backend::{Backend, BackendConfig};
use device::layout::*;
use device::native::{HeapMem, VecMedia};
use device::shm::{SharedMem, Shm};
use device::trace::NoTrace;
use device::transport::{Transport, format_flags};

const T0: u64 = 1_700_000_000_000_000_000;
const SEGMENTS: u64 = 2;
/// Long past the liveness window (30 s): the old backend is dead, not busy.
const LATER: u64 = T0 + 100_000_000_000;

fn backend_segments(shm: Shm<'_, HeapMem>, now: u64) -> Vec<u32> {
    let mut scratch = vec![0u8; chan::MAX_IO as usize];
    let cfg = BackendConfig {
        n_handlers: SEGMENTS as u32,
        ..BackendConfig::default()
    };
    let b = Backend::start(shm, cfg, VecMedia::new(1 << 20), &mut scratch, now).unwrap();
    b.channel_segments().collect()
}

#[test]
fn a_forced_reformat_frees_every_segment() {
    let mem = HeapMem::new(TransportInfo::region_for(SEGMENTS) as usize);
    let shm = Shm::new(&mem, &NoTrace);
    let flags = format_flags(true);
    Transport::format(shm, flags, false, T0).unwrap();
    assert_eq!(backend_segments(shm, T0), [0, 1]);
    let tp = Transport::open(shm, false).unwrap();
    for s in 0..SEGMENTS as u32 {
        let rec = tp.segment(s).unwrap().expect("a record").rec;
        assert_eq!(rec.seg_type, SEG_TYPE_CHANNEL, "segment {s} before");
    }

    // Without `force` the existing transport is kept; with it, everything is new.
    assert!(Transport::format(shm, flags, false, LATER).is_err());
    let tp = Transport::format(shm, flags, true, LATER).unwrap();
    for s in 0..SEGMENTS as u32 {
        let off = tp.info.segment_off(s);
        let mut pages = vec![0xffu8; 2 * PAGE];
        mem.read(off, &mut pages);
        assert!(
            pages.iter().all(|&b| b == 0),
            "segment {s}: its record copies survived the re-format"
        );
        let rec = tp
            .segment(s)
            .unwrap()
            .expect("an all-zero copy is a free slot");
        assert_eq!(rec.rec, SegmentInfo::default(), "segment {s} after");
    }
    assert_eq!(backend_segments(shm, LATER + 1), [0, 1]);
}
