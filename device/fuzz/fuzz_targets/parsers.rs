//! Fuzz the SE/CE and record parsers and the backend's handling of one hostile SE.
//! Run: `cd device/fuzz && cargo +nightly-2026-10-30 fuzz run parsers`
#![no_main]

use device::backend::BackendConfig;
use device::channel::{DevLine, HostLine};
use device::layout::*;
use device::meta;
use device::rig::Rig;
use libfuzzer_sys::fuzz_target;

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
        let rig = Rig::new(tflags::CHANNEL_CRC | tflags::CHANNEL_DATA_CRC);
        let mut scratch = Rig::scratch();
        let mut b = rig.start_backend(BackendConfig::default(), 1 << 20, &mut scratch, 1).unwrap();
        rig.write_se_bytes(0, &data[..48]);
        let head = u32::from_le_bytes(data[48..52].try_into().unwrap());
        rig.set_submr_head(head % (2 * rig.g.submr_size()));
        let _ = b.poll(2);
    }
});
