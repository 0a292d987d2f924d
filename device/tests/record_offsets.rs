//! The backend record (v3 `struct cbd_backend_info`) puts every field at the offset
//! docs/protocol.md §2 gives (worked out here from that table, not asked of the codec)
//! and decodes back to the same record. Every field holds a value of its own, and the
//! 128 handler channels are all different: a codec that shifted or overlapped the
//! channel list would still round-trip a record whose channels are all 0 (which is
//! what the golden image and the engine tests mostly hold: the first channel segment
//! is segment 0).

use device::crc::crc32;
use device::layout::*;
use device::meta::{decode_copy, encode_copy};

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
}
fn u64_at(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().unwrap())
}

fn sample() -> BackendInfo {
    let mut path = [0u8; 128];
    path[..9].copy_from_slice(b"/dev/vdb0");
    let mut hc = [0u32; 128];
    for (i, h) in hc.iter_mut().enumerate() {
        // Distinct in every byte position, never 0.
        *h = 0x0101_0101u32.wrapping_mul(i as u32 + 1) ^ 0x8000_0000;
    }
    BackendInfo {
        state: STATE_RUNNING,
        host_id: 0x1234_5678,
        alive_ts: 0x0102_0304_0506_0708,
        dev_size: 0x1122_3344_5566_7788,
        path,
        n_handlers: 128,
        handler_channels: hc,
        cache_seg_id: 0xa1a2_a3a4,
        cache_n_segs: 0xb1b2_b3b4,
        cache_gc_percent: 0xc1c2,
        features: features::NONCOHERENT | features::DURABLE_TOKENS,
    }
}

#[test]
fn backend_record_fields_sit_at_the_documented_offsets() {
    let rec = sample();
    let mut copy = vec![0u8; PAGE];
    encode_copy(&rec, 7, &mut copy);
    // docs/protocol.md: header (crc 0, seq 4), state 8, host_id 12, alive_ts 16,
    // dev_size 24, path 32 (128 B), n_handlers 160, handler_channels 164 (128 × u32),
    // cache_seg_id 676, cache_n_segs 680, cache_gc_percent 684; the extension area at
    // 1024: magic "CBDX", version 1 at +4, features at +8.
    assert_eq!(u32_at(&copy, 0), crc32(&copy[4..]));
    assert_eq!(copy[4], 7);
    assert_eq!(copy[8], STATE_RUNNING);
    assert_eq!(u32_at(&copy, 12), 0x1234_5678);
    assert_eq!(u64_at(&copy, 16), 0x0102_0304_0506_0708);
    assert_eq!(u64_at(&copy, 24), 0x1122_3344_5566_7788);
    assert_eq!(&copy[32..41], b"/dev/vdb0");
    assert!(copy[41..160].iter().all(|&b| b == 0), "path is NUL-padded");
    assert_eq!(u32_at(&copy, 160), 128);
    for (i, &h) in rec.handler_channels.iter().enumerate() {
        assert_eq!(u32_at(&copy, 164 + 4 * i), h, "handler_channels[{i}]");
    }
    assert_eq!(u32_at(&copy, 676), 0xa1a2_a3a4);
    assert_eq!(u32_at(&copy, 680), 0xb1b2_b3b4);
    assert_eq!(&copy[684..686], &0xc1c2u16.to_le_bytes());
    assert_eq!(&copy[1024..1028], b"CBDX");
    assert_eq!(&copy[1028..1030], &1u16.to_le_bytes());
    assert_eq!(
        u64_at(&copy, 1032),
        features::NONCOHERENT | features::DURABLE_TOKENS
    );
    // Nothing else is written: the rest of the copy is the zero padding.
    let written = [(0, 9), (12, 686), (1024, 1040)];
    for (i, &b) in copy.iter().enumerate() {
        if !written.iter().any(|&(s, e)| (s..e).contains(&i)) {
            assert_eq!(b, 0, "byte {i} outside every field");
        }
    }
}

#[test]
fn backend_record_decodes_to_what_was_encoded() {
    let rec = sample();
    let mut copy = vec![0u8; PAGE];
    encode_copy(&rec, 200, &mut copy);
    let (seq, back) = decode_copy::<BackendInfo>(&copy).expect("the CRC verifies");
    assert_eq!(seq, 200);
    assert_eq!(back, rec);
}
