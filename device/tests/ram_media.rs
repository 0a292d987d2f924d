//! The two WRITE paths of the engine (docs/durability.md, "Volatile media"): over
//! volatile RAM media a WRITE's payload goes straight from the data area into the
//! media (nothing staged, on the media at completion, `VOLATILE_MEDIA` advertised);
//! over any other media it is staged and reaches the media only at write-back. Both
//! read back what was written, through the protocol.

use device::backend::{Backend, BackendConfig};
use device::crc::crc32;
use device::layout::*;
use device::native::{HeapMem, VecMedia};
use device::rig::Rig;
use device::transport::Transport;

const T0: u64 = 1_700_000_000_000_000_000;
const DISK: usize = 4 << 20;
const EIO: i32 = -5;
const FLAGS: u16 = tflags::CHANNEL_CRC | tflags::CHANNEL_DATA_CRC;

/// (disk offset, payload) of the writes: 4 KiB, 128 KiB, and 4 KiB over the middle
/// of the 128 KiB one (the newest must win on read-back).
fn writes() -> Vec<(u64, Vec<u8>)> {
    let pat = |len: usize, seed: u8| -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31) ^ seed)
            .collect()
    };
    vec![
        (8192, pat(4096, 1)),
        (64 << 10, pat(128 << 10, 2)),
        (96 << 10, pat(4096, 3)),
    ]
}

/// Submit one SE at the rig's next position, ring the doorbell, poll; returns its CE.
fn run(rig: &Rig, b: &mut Backend<'_, HeapMem, VecMedia>, i: &mut u32, se: Se) -> Ce {
    let se = Se {
        req_tid: *i as u64,
        ..se
    };
    rig.write_se(rig.se_pos(*i), &se, true);
    rig.set_submr_head(rig.se_pos(*i + 1));
    b.poll(T0 + 1 + *i as u64).unwrap();
    assert_eq!(rig.compr_head(), rig.ce_pos(*i + 1), "SE {i} not completed");
    let ce = rig.read_ce(rig.ce_pos(*i));
    assert!(rig.ce_crc_ok(rig.ce_pos(*i)));
    rig.set_compr_tail(rig.ce_pos(*i + 1));
    *i += 1;
    ce
}

fn write(off: u64, data: &[u8], data_off: u32, crc: u32) -> Se {
    Se {
        op: op::WRITE,
        offset: off,
        len: data.len() as u32,
        data_off,
        data_len: data.len() as u32,
        data_crc: crc,
        ..Se::default()
    }
}

/// The expected disk content after `writes()`, in order.
fn expected() -> Vec<u8> {
    let mut disk = vec![0u8; DISK];
    for (off, data) in writes() {
        disk[off as usize..off as usize + data.len()].copy_from_slice(&data);
    }
    disk
}

/// Write `writes()`, check the media right after (before any write-back), read every
/// range back through the ring. Returns the backend's features and stager counters.
fn exercise(
    media: VecMedia,
    staging: Option<&mut [u8]>,
    check_media: impl Fn(&[u8]),
) -> (u64, device::durable::StagerStats) {
    let rig = Rig::new(FLAGS);
    let mut scratch = Rig::scratch();
    let mut b = rig
        .start_backend_on(BackendConfig::default(), media, &mut scratch, T0)
        .unwrap();
    if let Some(buf) = staging {
        b.set_staging(buf).unwrap();
    }
    let mut i = 0;
    let mut data_off = 0u32;
    for (off, data) in writes() {
        rig.write_payload(data_off, &data);
        let ce = run(
            &rig,
            &mut b,
            &mut i,
            write(off, &data, data_off, crc32(&data)),
        );
        assert_eq!(ce.result, 0, "write at {off:#x}");
        data_off += data.len() as u32;
    }
    check_media(&b.media().data);
    let want = expected();
    for (off, data) in writes() {
        let len = data.len();
        let se = Se {
            op: op::READ,
            offset: off,
            len: len as u32,
            data_off,
            data_len: len as u32,
            ..Se::default()
        };
        let ce = run(&rig, &mut b, &mut i, se);
        assert_eq!(ce.result, 0, "read at {off:#x}");
        let mut got = vec![0u8; len];
        rig.read_payload(data_off, &mut got);
        let w = &want[off as usize..off as usize + len];
        assert!(got == w, "read at {off:#x} returned other data");
        assert_eq!(ce.data_crc, crc32(w), "read at {off:#x}: CE data CRC");
    }
    b.sync().unwrap();
    assert!(b.media().data == want, "media after sync");
    let feats = Transport::open(rig.shm(), false)
        .unwrap()
        .backend(b.backend_id)
        .unwrap()
        .expect("its record")
        .rec
        .features;
    (feats, b.stager_stats())
}

/// Also with a staging buffer given to RAM media anyway: it is not used for writes.
#[test]
fn writes_to_volatile_ram_media_go_in_place_not_staged() {
    let want = expected();
    for staging in [false, true] {
        let mut buf = vec![0u8; 1 << 20];
        let buf = staging.then_some(&mut buf[..]);
        let (feats, st) = exercise(VecMedia::volatile(DISK), buf, |media| {
            assert!(
                media == want,
                "staging {staging}: the payloads are not on the RAM media at completion"
            );
        });
        assert_eq!(
            (st.in_place, st.staged, st.write_through),
            (3, 0, 0),
            "staging {staging}: RAM media writes must go in place: {st:?}"
        );
        assert_ne!(
            feats & features::VOLATILE_MEDIA,
            0,
            "VOLATILE_MEDIA not advertised"
        );
    }
}

#[test]
fn writes_to_other_media_are_staged_until_write_back() {
    let mut buf = vec![0u8; 1 << 20];
    let (feats, st) = exercise(VecMedia::new(DISK), Some(&mut buf), |media| {
        assert!(
            media.iter().all(|&x| x == 0),
            "staged writes reached the media before write-back"
        );
    });
    assert_eq!(
        (st.in_place, st.staged, st.write_through),
        (0, 3, 0),
        "{st:?}"
    );
    assert_eq!(
        feats & features::VOLATILE_MEDIA,
        0,
        "VOLATILE_MEDIA advertised"
    );
}

/// In place, a payload whose CRC does not verify is refused (-EIO) and not counted
/// as written; the next good write to the same range lands.
#[test]
fn a_bad_payload_in_place_is_refused() {
    let rig = Rig::new(FLAGS);
    let mut scratch = Rig::scratch();
    let mut b = rig
        .start_backend_on(
            BackendConfig::default(),
            VecMedia::volatile(DISK),
            &mut scratch,
            T0,
        )
        .unwrap();
    let data = vec![0xA5u8; 8192];
    rig.write_payload(0, &data);
    let mut i = 0;
    let ce = run(
        &rig,
        &mut b,
        &mut i,
        write(4096, &data, 0, crc32(&data) ^ 1),
    );
    assert_eq!(ce.result, EIO, "a payload with a wrong CRC was accepted");
    assert_eq!(b.stager_stats().in_place, 0);
    let ce = run(&rig, &mut b, &mut i, write(4096, &data, 0, crc32(&data)));
    assert_eq!(ce.result, 0);
    assert_eq!(b.stager_stats().in_place, 1);
    assert!(b.media().data[4096..12288] == data[..]);
}
