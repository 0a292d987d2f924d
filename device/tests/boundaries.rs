//! Every limit the device engine checks, tested at the limit and one step past it,
//! with the expected answer worked out here from the layout's numbers (docs/
//! protocol.md §3), not asked of the function under test: ring end, ring end minus
//! one entry, data-area end, disk end and one sector past, `u32::MAX`, zero.

use device::backend::{BackendConfig, BackendError};
use device::crc::crc32;
use device::layout::*;
use device::media::Media;
use device::rig::Rig;

const T0: u64 = 1_700_000_000_000_000_000;
const SEC: u64 = 1_000_000_000;
const MIB: u64 = 1 << 20;
/// The disk of the engine tests: 4 MiB, so a 1 MiB request fits anywhere below it.
const DISK: u64 = 4 * MIB;
/// The data area: 12 MiB from +4 MiB of the segment.
const DATA_SIZE: u64 = 12 * MIB;
const MAX_IO: u32 = 1 << 20;
const EINVAL: i32 = -22;

/// The four SE/CE formats with their sizes and ring geometry, written out:
/// (flags, se_size, ce_size, completion ring bytes, submission ring offset, submission
/// ring bytes). CE ring: 1024 entries at +0x3000; SE ring: from the end of the CE ring
/// to +4 MiB, a whole number of SEs (4 MiB - 0x7000 = 4165632 = 104140 × 40 + 32;
/// 4 MiB - 0x9000 = 4157440 = 86613 × 48 + 16).
const FORMATS: [(u16, u32, u32, u32, u64, u32); 4] = [
    (0, 40, 16, 16384, 0x7000, 104_140 * 40),
    (tflags::CHANNEL_CRC, 48, 24, 24576, 0x9000, 86_613 * 48),
    (tflags::CHANNEL_DATA_CRC, 48, 24, 24576, 0x9000, 86_613 * 48),
    (
        tflags::CHANNEL_CRC | tflags::CHANNEL_DATA_CRC,
        48,
        24,
        24576,
        0x9000,
        86_613 * 48,
    ),
];

#[test]
fn ring_geometry_at_its_ends() {
    for (flags, se, ce, compr, submr_off, submr) in FORMATS {
        let rig = Rig::new(flags);
        let g = rig.g;
        assert_eq!((g.el.se_size, g.el.ce_size), (se, ce), "flags {flags:#x}");
        assert_eq!((g.compr_size(), g.submr_size()), (compr, submr));
        assert_eq!(g.se(0) - g.base, submr_off);
        assert_eq!(g.ce(0) - g.base, 0x3000);
        // SE positions: 0, the last entry, and everything at or past the end.
        for (pos, ok) in [
            (0, true),
            (se, true),
            (submr - se, true),
            (submr - se + 1, false),
            (submr - 1, false),
            (submr, false),
            (submr + se, false),
            (1, false),
            (se - 1, false),
            (u32::MAX, false),
            (u32::MAX - u32::MAX % se, false),
        ] {
            assert_eq!(
                g.valid_se_pos(pos),
                ok,
                "flags {flags:#x}: SE position {pos}"
            );
        }
        for (pos, ok) in [
            (0, true),
            (compr - ce, true),
            (compr, false),
            (compr + ce, false),
            (ce - 1, false),
            (u32::MAX, false),
        ] {
            assert_eq!(
                g.valid_ce_pos(pos),
                ok,
                "flags {flags:#x}: CE position {pos}"
            );
        }
        // The last entry wraps to 0; the one before it does not.
        assert_eq!(g.next_se(submr - se), 0);
        assert_eq!(g.next_se(submr - 2 * se), submr - se);
        assert_eq!(g.next_ce(compr - ce), 0);
        assert_eq!(g.next_ce(compr - 2 * ce), compr - ce);
        // Payload ranges: at the data-area end, and wrapping past it.
        let data = g.base + 4 * MIB;
        assert_eq!(
            g.data_ranges((DATA_SIZE - 4096) as u32, 4096),
            [(data + DATA_SIZE - 4096, 4096), (data, 0)]
        );
        assert_eq!(
            g.data_ranges((DATA_SIZE - 512) as u32, 4096),
            [(data + DATA_SIZE - 512, 512), (data, 3584)]
        );
        assert_eq!(g.data_ranges(0, MAX_IO), [(data, MIB), (data, 0)]);
    }
}

/// One request through the engine on a fresh rig and the CE result it gets.
struct Case {
    what: &'static str,
    op: u32,
    offset: u64,
    len: u32,
    data_off: u32,
    data_len: u32,
    want: i32,
}

const fn case(
    what: &'static str,
    op: u32,
    offset: u64,
    len: u32,
    data_off: u32,
    want: i32,
) -> Case {
    Case {
        what,
        op,
        offset,
        len,
        data_off,
        data_len: len,
        want,
    }
}

const W: u32 = op::WRITE;
const R: u32 = op::READ;
const Z: u32 = op::WRITE_ZEROES;
const D: u32 = op::DISCARD;
const LAST_DATA: u32 = (DATA_SIZE - 4096) as u32;

fn cases() -> Vec<Case> {
    vec![
        // disk end
        case("write ending at the disk end", W, DISK - 4096, 4096, 0, 0),
        case(
            "write ending one sector past the disk end",
            W,
            DISK - 3584,
            4096,
            0,
            EINVAL,
        ),
        case("write of the last sector", W, DISK - 512, 512, 0, 0),
        case("write starting at the disk end", W, DISK, 512, 0, EINVAL),
        case(
            "write starting one sector past the disk end",
            W,
            DISK + 512,
            512,
            0,
            EINVAL,
        ),
        case(
            "write whose end overflows u64",
            W,
            u64::MAX - 511,
            512,
            0,
            EINVAL,
        ),
        case("write not sector-aligned", W, 256, 512, 0, EINVAL),
        case("read ending at the disk end", R, DISK - 4096, 4096, 0, 0),
        case(
            "read ending one sector past the disk end",
            R,
            DISK - 3584,
            4096,
            0,
            EINVAL,
        ),
        case("write-zeroes of the last sector", Z, DISK - 512, 512, 0, 0),
        case(
            "write-zeroes one sector past",
            Z,
            DISK - 512,
            1024,
            0,
            EINVAL,
        ),
        case("discard ending at the disk end", D, DISK - 4096, 4096, 0, 0),
        case(
            "discard ending one sector past",
            D,
            DISK - 4096,
            4608,
            0,
            EINVAL,
        ),
        // length: zero, the largest, one sector more, u32::MAX
        case("write of length zero", W, 0, 0, 0, EINVAL),
        case("read of length zero", R, 0, 0, 0, EINVAL),
        case("write of MAX_IO", W, 0, MAX_IO, 0, 0),
        case("write of MAX_IO + 512", W, 0, MAX_IO + 512, 0, EINVAL),
        case("write of u32::MAX bytes", W, 0, u32::MAX, 0, EINVAL),
        // data area: its last 4 KiB, wrapping past its end, at its end, u32::MAX
        case(
            "payload in the data area's last 4 KiB",
            W,
            8192,
            4096,
            LAST_DATA,
            0,
        ),
        case(
            "payload wrapping past the data-area end",
            W,
            8192,
            4096,
            LAST_DATA + 2048,
            0,
        ),
        case(
            "payload starting at the data-area end",
            W,
            8192,
            4096,
            DATA_SIZE as u32,
            EINVAL,
        ),
        case(
            "payload starting one unit past the end",
            W,
            8192,
            4096,
            DATA_SIZE as u32 + 4096,
            EINVAL,
        ),
        case(
            "payload at data_off u32::MAX",
            W,
            8192,
            4096,
            u32::MAX,
            EINVAL,
        ),
        case(
            "read into the data area's last 4 KiB",
            R,
            8192,
            4096,
            LAST_DATA,
            0,
        ),
        case(
            "read starting at the data-area end",
            R,
            8192,
            4096,
            DATA_SIZE as u32,
            EINVAL,
        ),
        Case {
            data_len: 4096 - 512,
            ..case("payload shorter than the request", W, 8192, 4096, 0, EINVAL)
        },
        Case {
            data_len: MAX_IO + 1,
            ..case("payload longer than MAX_IO", W, 8192, 4096, 0, EINVAL)
        },
        Case {
            data_len: u32::MAX,
            ..case("payload of u32::MAX bytes", W, 8192, 4096, 0, EINVAL)
        },
    ]
}

#[test]
fn requests_at_every_media_and_data_area_limit() {
    let flags = tflags::CHANNEL_CRC | tflags::CHANNEL_DATA_CRC;
    for c in cases() {
        let rig = Rig::new(flags);
        let mut scratch = Rig::scratch();
        let cfg = BackendConfig::default();
        let mut b = rig
            .start_backend(cfg, DISK as usize, &mut scratch, T0)
            .unwrap();
        let n = (c.len as usize).min(MAX_IO as usize);
        let payload: Vec<u8> = (0..n).map(|i| (i % 251) as u8 + 1).collect();
        let block: Vec<u8> = (0..4096).map(|i| (i % 241) as u8 + 7).collect();
        if c.op == R {
            // Something to read back: the disk's last 4 KiB and the block at 8192.
            b.media().write(DISK - 4096, &block).unwrap();
            b.media().write(8192, &block).unwrap();
        }
        if c.op == W && c.data_off < DATA_SIZE as u32 {
            rig.write_payload(c.data_off, &payload);
        }
        let se = Se {
            op: c.op,
            req_tid: 0,
            offset: c.offset,
            len: c.len,
            data_off: c.data_off,
            data_len: c.data_len,
            data_crc: crc32(&payload),
            ..Se::default()
        };
        rig.write_se(0, &se, true);
        rig.set_submr_head(rig.se_pos(1));
        b.poll(T0 + 1).unwrap();
        assert_eq!(rig.compr_head(), rig.ce_pos(1), "{}: one CE", c.what);
        let ce = rig.read_ce(0);
        assert_eq!((ce.req_tid, ce.result), (0, c.want), "{}", c.what);
        if c.want == 0 && c.op == W {
            let mut out = vec![0u8; n];
            b.media().read(c.offset, &mut out).unwrap();
            assert!(out == payload, "{}: media content", c.what);
        }
        if c.want == 0 && c.op == R {
            let mut out = vec![0u8; n];
            rig.read_payload(c.data_off, &mut out);
            assert!(out == block[..n], "{}: data area content", c.what);
            assert_eq!(ce.data_crc, crc32(&block[..n]), "{}: data CRC", c.what);
        }
    }
}

#[test]
fn ring_pointers_at_and_past_the_ring_end() {
    for (flags, se, ce, compr, _, submr) in FORMATS {
        for (head, tail, bad) in [
            (submr, 0, true),
            (submr + se, 0, true),
            (u32::MAX, 0, true),
            (1, 0, true),
            (submr - se, 0, false),
            (0, compr, true),
            (0, u32::MAX, true),
            (0, compr - ce, false),
        ] {
            let rig = Rig::new(flags);
            let mut scratch = Rig::scratch();
            let mut b = rig
                .start_backend(BackendConfig::default(), DISK as usize, &mut scratch, T0)
                .unwrap();
            rig.set_submr_head(head);
            rig.set_compr_tail(tail);
            let r = b.poll(T0 + 1);
            assert_eq!(
                matches!(r, Err(BackendError::BadPointer { chan: 0 })),
                bad,
                "flags {flags:#x}: submr_head {head}, compr_tail {tail}: {r:?}"
            );
        }
    }
}

/// A re-attached channel resumes at `submr_tail` = the ring's last entry: that SE
/// runs, the cursor wraps to 0, and the SE there runs too.
#[test]
fn the_ring_s_last_entry_runs_and_the_cursor_wraps() {
    for (flags, se, _, _, _, submr) in FORMATS {
        let rig = Rig::new(flags);
        let mut scratch = Rig::scratch();
        let b = rig
            .start_backend(BackendConfig::default(), DISK as usize, &mut scratch, T0)
            .unwrap();
        let media = b.into_media();
        let last = submr - se;
        let blocks = [vec![0x5Au8; 4096], vec![0xA5u8; 4096]];
        for (i, (pos, data_off)) in [(last, 0u32), (0, 4096)].into_iter().enumerate() {
            rig.write_payload(data_off, &blocks[i]);
            let s = Se {
                op: op::WRITE,
                req_tid: 100 + i as u64,
                offset: 4096 * i as u64,
                len: 4096,
                data_off,
                data_len: 4096,
                data_crc: crc32(&blocks[i]),
                ..Se::default()
            };
            rig.write_se(pos, &s, true);
        }
        rig.set_submr_tail(last);
        rig.set_submr_head(se);
        let mut scratch2 = Rig::scratch();
        let mut b = device::backend::Backend::start(
            rig.shm(),
            BackendConfig::default(),
            media,
            &mut scratch2,
            T0 + 31 * SEC,
        )
        .expect("re-attach once the old heartbeat is dead");
        b.poll(T0 + 31 * SEC + 1).unwrap();
        assert_eq!(rig.compr_head(), rig.ce_pos(2), "flags {flags:#x}: two CEs");
        for i in 0..2u32 {
            let c = rig.read_ce(rig.ce_pos(i));
            assert_eq!(
                (c.req_tid, c.result),
                (100 + i as u64, 0),
                "flags {flags:#x}"
            );
            let mut out = vec![0u8; 4096];
            b.media().read(4096 * i as u64, &mut out).unwrap();
            assert!(out == blocks[i as usize], "flags {flags:#x}: block {i}");
        }
    }
}
