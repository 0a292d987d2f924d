//! The golden CBD v3 image (written by the Linux CBD v3 driver) must parse, every
//! CRC must verify, records must decode to the documented values and re-encode to
//! the same bytes; formatting a 1022 MiB region must reproduce its transport info.

use device::crc::crc32;
use device::layout::*;
use device::meta::{self, decode_copy, encode_copy};
use device::native::HeapMem;
use device::shm::Shm;
use device::trace::NoTrace;
use device::transport::Transport;

fn golden() -> Vec<u8> {
    let xz = include_bytes!("data/cbd-v3-one-vm-transport.bin.xz");
    let mut out = Vec::new();
    lzma_rs::xz_decompress(&mut &xz[..], &mut out).expect("xz");
    assert_eq!(out.len(), 17_948_672);
    out
}

/// Check both copies of a record: CRC of each verifies, re-encoding each valid copy
/// reproduces its bytes, and return the latest.
fn check_record<R: Record + std::fmt::Debug>(img: &[u8], base: usize) -> Option<(u8, R)> {
    let mut seqs = [None; 2];
    let mut recs: [Option<R>; 2] = [None, None];
    for i in 0..2 {
        let copy = &img[base + i * R::COPY_SIZE..base + (i + 1) * R::COPY_SIZE];
        // Every copy in the golden image verifies (zeroed copies have crc 0).
        let (seq, rec) =
            decode_copy::<R>(copy).unwrap_or_else(|| panic!("crc fails at {:#x} copy {i}", base));
        let mut re = vec![0u8; R::COPY_SIZE];
        encode_copy(&rec, seq, &mut re);
        assert_eq!(&re[..], copy, "re-encode differs at {:#x} copy {i}", base);
        seqs[i] = Some(seq);
        recs[i] = Some(rec);
    }
    let l = meta::pick_latest(seqs)?;
    Some((seqs[l].unwrap(), recs[l].take().unwrap()))
}

#[test]
fn golden_image_parses_and_reencodes() {
    let img = golden();
    let info = TransportInfo::decode(&img).unwrap();
    assert_eq!(info.magic, 0x65B05EFA96C596EF);
    assert_eq!(info.version, 1);
    assert_eq!(info.flags, tflags::MULTIHOST);
    assert_eq!((info.host_area_off, info.host_num), (0x2000, 16));
    assert_eq!((info.backend_area_off, info.backend_num), (0x22000, 63));
    assert_eq!((info.blkdev_area_off, info.blkdev_num), (0xA0000, 63));
    assert_eq!(
        (info.segment_area_off, info.segment_num, info.segment_size),
        (0x11E000, 63, 16 << 20)
    );
    let mut re = [0u8; 80];
    info.encode(&mut re);
    assert_eq!(&re[..], &img[..80]);
    assert!(img[80..0x2000].iter().all(|&b| b == 0));
    // The image is 18 MiB of a 1022 MiB transport.
    info.validate(1022 << 20).unwrap();

    // Formatting a 1022 MiB region reproduces transport info and area offsets.
    assert_eq!(
        TransportInfo::for_size(1022 << 20, tflags::MULTIHOST),
        Some(info)
    );

    // Every host/backend/blkdev slot: both copies verify (all-zero copies are valid, seq 0).
    for id in 0..info.host_num {
        check_record::<HostInfo>(&img, info.host_slot(id) as usize);
    }
    for id in 0..info.backend_num {
        check_record::<BackendInfo>(&img, info.backend_slot(id) as usize);
    }
    for id in 0..info.blkdev_num {
        check_record::<BlkdevInfo>(&img, info.blkdev_slot(id) as usize);
    }

    // host 0: copies seq 1 and 2 (heartbeat), RUNNING, "hostA".
    let h0 =
        |i: usize| decode_copy::<HostInfo>(&img[0x2000 + i * 4096..0x3000 + i * 4096]).unwrap();
    assert_eq!((h0(0).0, h0(1).0), (1, 2));
    let (seq, host) = check_record::<HostInfo>(&img, 0x2000).unwrap();
    assert_eq!(seq, 2);
    assert_eq!(host.state, STATE_RUNNING);
    assert_eq!(&host.hostname[..6], b"hostA\0");
    assert!(host.alive_ts > h0(0).1.alive_ts);
    // Host 1.. are empty.
    assert_eq!(
        check_record::<HostInfo>(&img, 0x4000).unwrap().1.state,
        STATE_NONE
    );

    // backend 0: only copy 0 written (seq 1).
    let (seq, be) = check_record::<BackendInfo>(&img, 0x22000).unwrap();
    assert_eq!(seq, 1);
    assert!(img[0x23000..0x24000].iter().all(|&b| b == 0));
    assert_eq!(be.state, STATE_RUNNING);
    assert_eq!(be.host_id, 0);
    assert_eq!(be.dev_size, 1_048_576);
    assert_eq!(&be.path[..10], b"/dev/ram0\0");
    assert_eq!(be.n_handlers, 1);
    assert_eq!(be.handler_channels[0], 0);
    assert_eq!(be.cache_n_segs, 0);
    assert_eq!(be.features, 0);

    // blkdev 0: two copies (heartbeat), RUNNING, backend 0, host 0, mapped 0.
    let (seq, bd) = check_record::<BlkdevInfo>(&img, 0xA0000).unwrap();
    assert_eq!(seq, 2);
    assert_eq!(
        (bd.state, bd.backend_id, bd.host_id, bd.mapped_id),
        (STATE_RUNNING, 0, 0, 0)
    );

    // segment 0: channel, running, backend 0, copy 0 only.
    let seg = info.segment_off(0) as usize;
    assert_eq!(seg, 0x11E000);
    let (seq, si) = check_record::<SegmentInfo>(&img, seg).unwrap();
    assert_eq!(seq, 1);
    assert_eq!(
        (si.seg_type, si.state, si.flags, si.next_seg, si.backend_id),
        (SEG_TYPE_CHANNEL, STATE_RUNNING, 0, 0, 0)
    );

    // Control page: mgmt cmd/ret seq 1 (RESET answered OK), pointers.
    let ctrl_off = seg + chan::CTRL_OFF as usize;
    let (seq, cmd) = check_record::<MgmtCmd>(&img, ctrl_off + ctrl::MGMT_CMD as usize).unwrap();
    assert_eq!((seq, cmd.cmd_seq, cmd.cmd_op), (1, 1, MGMT_OP_RESET));
    let (seq, ret) = check_record::<MgmtRet>(&img, ctrl_off + ctrl::MGMT_RET as usize).unwrap();
    assert_eq!((seq, ret.cmd_seq, ret.cmd_ret), (1, 1, MGMT_RET_OK));
    let rd = |o: u64| u32::from_le_bytes(img[ctrl_off + o as usize..][..4].try_into().unwrap());
    assert_eq!(
        (rd(ctrl::SUBMR_HEAD), rd(ctrl::SUBMR_TAIL)),
        (0x5078, 0x5078)
    );
    assert_eq!(
        (rd(ctrl::COMPR_HEAD), rd(ctrl::COMPR_TAIL)),
        (0x2030, 0x2030)
    );
    let flags = u64::from_le_bytes(img[ctrl_off..][..8].try_into().unwrap());
    assert_eq!(flags, 0, "backend in the same kernel: POLLING not set");

    // Rings: 515 SEs and CEs, req_tid 0..514, each SE DONE, each CE result 0; SEs
    // re-encode to identical bytes.
    let el = info.entry_layout();
    assert_eq!((el.se_size, el.ce_size, el.submr_off()), (40, 16, 0x7000));
    for i in 0..515usize {
        let so = seg + el.submr_off() as usize + i * 40;
        let se = el.decode_se(&img[so..so + 40]).unwrap();
        assert_eq!(se.req_tid, i as u64);
        assert_eq!(se.flags, SE_FLAG_DONE);
        assert!(se.op <= op::FLUSH);
        if se.op != op::FLUSH {
            assert_eq!(se.data_off % 4096, 0);
            assert!((se.data_off as u64) < chan::DATA_SIZE);
            assert_eq!(se.len, se.data_len);
        }
        let mut b = [0u8; 40];
        el.encode_se(&se, &mut b);
        assert_eq!(&b[..], &img[so..so + 40]);
        let co = seg + chan::COMPR_OFF as usize + i * 16;
        let ce = el.decode_ce(&img[co..co + 16]).unwrap();
        assert_eq!((ce.req_tid, ce.result, ce.flags), (i as u64, 0, 0));
        let mut b = [0u8; 16];
        el.encode_ce(&ce, &mut b);
        assert_eq!(&b[..], &img[co..co + 16]);
    }
    // Nothing after the last SE / CE.
    let end = seg + el.submr_off() as usize + 515 * 40;
    assert!(img[end..end + 40].iter().all(|&b| b == 0));

    // crc32 relation the README states.
    assert_eq!(
        crc32(&img[0x2004..0x3000]),
        u32::from_le_bytes(img[0x2000..0x2004].try_into().unwrap())
    );
}

#[test]
fn golden_opens_through_shared_memory() {
    let img = golden();
    // The image is a prefix of a 1022 MiB transport; only segment 0 is present, so
    // extend the region to the full size the header describes (sparse zero tail).
    let mem = HeapMem::new(1022 << 20);
    use device::shm::SharedMem;
    mem.write(0, &img);
    let t = Transport::open(Shm::new(&mem, &NoTrace), false).unwrap();
    let h = t.host(0).unwrap().unwrap();
    assert_eq!((h.seq, h.copy), (2, 1));
    let b = t.backend(0).unwrap().unwrap();
    assert_eq!((b.seq, b.copy, b.rec.dev_size), (1, 0, 1 << 20));
    assert!(t.backend(1).unwrap().unwrap().rec.state == STATE_NONE);
    assert_eq!(
        t.find_free(device::transport::SlotKind::Backend, 0)
            .unwrap(),
        1
    );
    assert_eq!(
        t.find_free(device::transport::SlotKind::Segment, 0)
            .unwrap(),
        1
    );
    assert_eq!(
        t.find_free(device::transport::SlotKind::Host, 0).unwrap(),
        1
    );
}
