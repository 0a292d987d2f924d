//! The protocol's pure parsers on raw bytes (transport info, SE/CE in the four formats,
//! two-copy records, the non-coherent lines), then one hostile SE and head pointer at
//! a fresh backend. Properties: no panic, and decoders agree with their encoders.

use crate::mem::SparseMem;
use device::backend::{Backend, BackendConfig, BackendError};
use device::channel::{ChannelGeom, DevLine, DurDevLine, DurHostLine, HostLine};
use device::layout::*;
use device::meta;
use device::native::VecMedia;
use device::shm::{SharedMem, Shm};
use device::trace::NoTrace;
use device::transport::Transport;

pub fn run(data: &[u8]) {
    if let Some(t) = TransportInfo::decode(data) {
        let _ = t.validate(u64::MAX);
        if let Some(len) = data
            .get(..8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap()))
        {
            let _ = t.validate(len);
        }
    }
    for f in [
        0,
        tflags::CHANNEL_CRC,
        tflags::CHANNEL_DATA_CRC,
        tflags::CHANNEL_CRC | tflags::CHANNEL_DATA_CRC,
    ] {
        let el = EntryLayout::from_flags(f);
        if let Some(se) = el.decode_se(data) {
            // Decoding what was encoded gives the same entry back (padding aside).
            let mut b = [0u8; MAX_SE_SIZE];
            el.encode_se(&se, &mut b);
            assert_eq!(el.decode_se(&b), Some(se), "SE round trip");
            let _ = el.entry_crc_ok(data, el.se_size);
        }
        if let Some(ce) = el.decode_ce(data) {
            let mut b = [0u8; MAX_CE_SIZE];
            el.encode_ce(&ce, &mut b);
            assert_eq!(el.decode_ce(&b), Some(ce), "CE round trip");
            let _ = el.entry_crc_ok(data, el.ce_size);
        }
    }
    let _ = meta::decode_copy::<HostInfo>(data);
    let _ = meta::decode_copy::<BackendInfo>(data);
    let _ = meta::decode_copy::<BlkdevInfo>(data);
    let _ = meta::decode_copy::<SegmentInfo>(data);
    let _ = meta::decode_copy::<MgmtCmd>(data);
    let _ = meta::decode_copy::<MgmtRet>(data);
    if let Some(h) = HostLine::decode(data) {
        assert_eq!(HostLine::decode(&h.encode()), Some(h));
    }
    if let Some(d) = DevLine::decode(data) {
        assert_eq!(DevLine::decode(&d.encode()), Some(d));
    }
    if let Some(d) = DurDevLine::decode(data) {
        assert_eq!(DurDevLine::decode(&d.encode()), Some(d));
    }
    let _ = DurHostLine::decode(data);

    // One hostile SE (first 48 bytes) + hostile head pointer (next 4) at the backend
    // (a sparse region: the rig's 16 MiB heap would cost more than the parsing).
    if data.len() >= 52 {
        let flags = tflags::CHANNEL_CRC | tflags::CHANNEL_DATA_CRC;
        let mem = SparseMem::new(TransportInfo::region_for(1));
        let shm = Shm::new(&mem, &NoTrace);
        Transport::format(shm, flags, false, 1).unwrap();
        let mut scratch = vec![0u8; chan::MAX_IO as usize];
        let cfg = BackendConfig::default();
        let mut b = Backend::start(shm, cfg, VecMedia::new(1 << 20), &mut scratch, 1).unwrap();
        let g = ChannelGeom::new(
            Transport::open(shm, false)
                .unwrap()
                .channel_base(0)
                .unwrap(),
            flags,
            false,
        );
        mem.write(g.se(0), &data[..48]);
        let head = u32::from_le_bytes(data[48..52].try_into().unwrap());
        mem.store_u32(g.ctrl(ctrl::SUBMR_HEAD), head % (2 * g.submr_size()));
        match b.poll(2) {
            Ok(_) | Err(BackendError::BadPointer { .. }) => {}
            Err(e) => panic!("poll: {e:?}"),
        }
    }
}
