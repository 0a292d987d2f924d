//! Fuzz the SE/CE and record parsers and the backend's handling of one hostile SE.
//! Run: `cd device/fuzz && cargo +nightly-2026-10-30 fuzz run parsers`
#![no_main]

use device::backend::{Backend, BackendConfig};
use device::channel::{ChannelGeom, DevLine, HostLine};
use device::layout::*;
use device::meta;
use device::native::{HeapMem, VecMedia};
use device::shm::{SharedMem, Shm};
use device::trace::NoTrace;
use device::transport::Transport;
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fn base() -> &'static Vec<u8> {
    static B: OnceLock<Vec<u8>> = OnceLock::new();
    B.get_or_init(|| {
        let mem = HeapMem::new((HOST_AREA_OFF + 3 * OBJ_SLOT + SEGMENT_SIZE) as usize);
        Transport::format(Shm::new(&mem, &NoTrace), tflags::CHANNEL_CRC | tflags::CHANNEL_DATA_CRC, false, 1).unwrap();
        mem.to_vec()
    })
}

fuzz_target!(|data: &[u8]| {
    // Pure parsers.
    if let Some(t) = TransportInfo::decode(data) {
        let _ = t.validate(u64::MAX);
    }
    for f in [0, tflags::CHANNEL_CRC, tflags::CHANNEL_DATA_CRC, tflags::CHANNEL_CRC | tflags::CHANNEL_DATA_CRC] {
        let el = EntryLayout::from_flags(f);
        let _ = el.decode_se(data);
        let _ = el.decode_ce(data);
    }
    let _ = meta::decode_copy::<HostInfo>(data);
    let _ = meta::decode_copy::<BackendInfo>(data);
    let _ = meta::decode_copy::<BlkdevInfo>(data);
    let _ = meta::decode_copy::<SegmentInfo>(data);
    let _ = meta::decode_copy::<MgmtCmd>(data);
    let _ = HostLine::decode(data);
    let _ = DevLine::decode(data);

    // One hostile SE (first 48 bytes) + hostile head pointer (next 4) at the backend.
    if data.len() >= 52 {
        let mem = HeapMem::from_bytes(base());
        let shm = Shm::new(&mem, &NoTrace);
        let mut scratch = vec![0u8; chan::MAX_IO as usize];
        let flags = tflags::CHANNEL_CRC | tflags::CHANNEL_DATA_CRC;
        let mut b = Backend::start(shm, BackendConfig::default(), VecMedia::new(1 << 20), &mut scratch, 1).unwrap();
        let g = ChannelGeom::new(HOST_AREA_OFF + 3 * OBJ_SLOT, flags, false);
        mem.write(g.se(0), &data[..48]);
        let head = u32::from_le_bytes(data[48..52].try_into().unwrap());
        mem.store_u32(g.ctrl(ctrl::SUBMR_HEAD), head % (2 * g.submr_size()));
        let _ = b.poll(2);
    }
});
