//! A hostile host against the backend engine: entries that never verify on one
//! channel take a bounded share of each poll while the other channels keep being
//! served; the heartbeat rewrites only records that are still the device's own; a
//! restart never re-attaches to a segment that another backend lists.

use device::backend::{Backend, BackendConfig, BackendError};
use device::channel::{ChannelGeom, HostLine, publish_line};
use device::crc::crc32;
use device::layout::*;
use device::media::Media;
use device::native::{HeapMem, VecMedia};
use device::rig::Rig;
use device::shm::{SharedMem, Shm};
use device::trace::NoTrace;
use device::transport::{SlotKind, Transport};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

const T0: u64 = 1_700_000_000_000_000_000;
const MS: u64 = 1_000_000;
const SEC: u64 = 1_000_000_000;
const NC_FLAGS: u16 = tflags::CHANNEL_CRC | tflags::CHANNEL_DATA_CRC;
/// First tid of epoch 1 (`epoch << 32`).
const BASE_TID: u64 = 1 << 32;
/// Reads of one channel's entries (SE slots and data area) a single poll may make,
/// whatever the channel holds: a fixed bound, written here independently of the
/// engine's own constant.
const READS_PER_POLL: u64 = 8;

/// The rig's heap region, counting the reads of one channel's SE ring and data area.
struct Counted<'a> {
    mem: &'a HeapMem,
    /// `[start, end)` of the watched channel's SE ring and data area.
    watch: (u64, u64),
    reads: AtomicU64,
    /// The first this many reads of the watched range return its last byte flipped:
    /// a line still landing, as a reader on non-coherent memory may see it.
    landing: u64,
}

impl SharedMem for Counted<'_> {
    fn size(&self) -> u64 {
        self.mem.size()
    }
    fn read(&self, off: u64, buf: &mut [u8]) {
        self.mem.read(off, buf);
        if off >= self.watch.0 && off < self.watch.1 {
            let n = self.reads.fetch_add(1, Relaxed);
            if n < self.landing
                && let Some(last) = buf.last_mut()
            {
                *last ^= 0x01;
            }
        }
    }
    fn write(&self, off: u64, data: &[u8]) {
        self.mem.write(off, data)
    }
    fn fill(&self, off: u64, len: u64, byte: u8) {
        self.mem.fill(off, len, byte)
    }
    fn load_u32(&self, off: u64) -> u32 {
        self.mem.load_u32(off)
    }
    fn store_u32(&self, off: u64, v: u32) {
        self.mem.store_u32(off, v)
    }
    fn load_u64(&self, off: u64) -> u64 {
        self.mem.load_u64(off)
    }
    fn store_u64(&self, off: u64, v: u64) {
        self.mem.store_u64(off, v)
    }
    fn write_back(&self, off: u64, len: u64) {
        self.mem.write_back(off, len)
    }
    fn invalidate(&self, off: u64, len: u64) {
        self.mem.invalidate(off, len)
    }
    fn store_fence(&self) {
        self.mem.store_fence()
    }
    fn full_fence(&self) {
        self.mem.full_fence()
    }
}

/// The host side of one non-coherent channel, played by hand (epoch 1).
struct NcChan {
    g: ChannelGeom,
    head: u32,
    next_tid: u64,
    compr_tail: u32,
}

impl NcChan {
    fn new(g: ChannelGeom) -> Self {
        Self {
            g,
            head: 0,
            next_tid: BASE_TID,
            compr_tail: 0,
        }
    }
    fn publish(&self, mem: &HeapMem) {
        let line = HostLine {
            epoch: 1,
            submr_head: self.head,
            submr_tail: 0,
            compr_tail: self.compr_tail,
            base_tid: BASE_TID,
            tail_tid: BASE_TID,
            features: 0,
        };
        publish_line(
            Shm::new(mem, &NoTrace),
            self.g.host_line,
            &line.encode(),
            true,
        )
        .unwrap();
    }
    /// Write `se` (tid assigned unless `tid` is given) at the head; `corrupt` flips a
    /// byte after sealing. Returns the tid written.
    fn push(&mut self, mem: &HeapMem, mut se: Se, tid: Option<u64>, corrupt: bool) -> u64 {
        se.req_tid = tid.unwrap_or(self.next_tid);
        self.next_tid += 1;
        let el = self.g.el;
        let mut b = [0u8; MAX_SE_SIZE];
        el.encode_se(&se, &mut b);
        el.seal_se(&mut b);
        if corrupt {
            b[el.se_size as usize - 1] ^= 0x01;
        }
        mem.write(self.g.se(self.head), &b[..el.se_size as usize]);
        self.head = self.g.next_se(self.head);
        se.req_tid
    }
    /// The CEs the device has published since the last call (`(tid, result)`), and
    /// `compr_tail` advanced past them.
    fn completions(&mut self, mem: &HeapMem) -> Vec<(u64, i32)> {
        let mut b = [0u8; nc_dev::SIZE];
        mem.read(self.g.dev_line, &mut b);
        let Some(d) = device::channel::DevLine::decode(&b) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        while self.compr_tail != d.compr_head {
            let el = self.g.el;
            let mut c = [0u8; MAX_CE_SIZE];
            mem.read(self.g.ce(self.compr_tail), &mut c[..el.ce_size as usize]);
            assert!(el.entry_crc_ok(&c, el.ce_size), "CE CRC");
            let ce = el.decode_ce(&c).unwrap();
            out.push((ce.req_tid, ce.result));
            self.compr_tail = self.g.next_ce(self.compr_tail);
        }
        out
    }
}

fn write_se(offset: u64, len: u32, data_off: u32, data_crc: u32) -> Se {
    Se {
        op: op::WRITE,
        offset,
        len,
        data_off,
        data_len: len,
        data_crc,
        ..Se::default()
    }
}

/// What channel A (handler 0) holds while channel B (handler 1) is served.
#[derive(Clone, Copy, Debug)]
enum Bad {
    /// WRITEs of 1 MiB whose data CRC never verifies.
    Payload,
    /// An SE whose entry CRC never verifies.
    SeCrc,
    /// An SE with a valid CRC and a tid the device does not expect.
    SeTid,
}

/// Channel A holds `k` bad entries; channel B gets one good 4 KiB WRITE per poll.
/// Each B request must complete in the poll right after its doorbell, and no poll
/// may read A's entries more than `READS_PER_POLL` times (a poll is the unit of
/// device time here: with a bounded poll, "completes in the next poll" is a latency
/// bound). Returns the CEs channel A got.
/// A non-coherent backend with `n_handlers` channels on `mem`, started at `T0`.
fn nc_backend<'a>(
    mem: &'a Counted<'a>,
    n_handlers: u32,
    scratch: &'a mut [u8],
) -> Backend<'a, Counted<'a>, VecMedia> {
    let cfg = BackendConfig {
        n_handlers,
        noncoherent: true,
        nc_retries: 64,
        ..BackendConfig::default()
    };
    Backend::start(
        Shm::new(mem, &NoTrace),
        cfg,
        VecMedia::new(8 << 20),
        scratch,
        T0,
    )
    .unwrap()
}

fn run_stall(bad: Bad, k: u32, polls: u32) -> Vec<(u64, i32)> {
    let rig = Rig::with_segments(NC_FLAGS, 2);
    let (ga, gb) = (rig.geom(0), rig.geom(1));
    let watch = (ga.se(0), ga.base + SEGMENT_SIZE);
    let counted = Counted {
        mem: &rig.mem,
        watch,
        reads: AtomicU64::new(0),
        landing: 0,
    };
    let mut scratch = Rig::scratch();
    let mut b = nc_backend(&counted, 2, &mut scratch);
    assert_eq!(b.channel_segments().collect::<Vec<_>>(), [0, 1]);
    let (mut a, mut bq) = (NcChan::new(ga), NcChan::new(gb));
    let big = chan::MAX_IO;
    for i in 0..k {
        match bad {
            Bad::Payload => {
                let data_off = i * big;
                rig.write_payload(data_off, &vec![0x11; big as usize]);
                let se = write_se(i as u64 * big as u64, big, data_off, 0xBAD0_0000 | i);
                a.push(&rig.mem, se, None, false);
            }
            Bad::SeCrc => {
                a.push(&rig.mem, write_se(0, 4096, 0, 0), None, true);
            }
            Bad::SeTid => {
                a.push(&rig.mem, write_se(0, 4096, 0, 0), Some(7), false);
            }
        }
    }
    a.publish(&rig.mem);
    bq.publish(&rig.mem);
    let mut a_ces = Vec::new();
    let mut now = T0;
    for p in 0..polls {
        // B's request for this poll.
        let data_off = (p % 64) * 4096;
        let payload = vec![p as u8; 4096];
        copy_payload(&rig, &gb, data_off, &payload);
        let se = write_se(4 << 20, 4096, data_off, crc32(&payload));
        let tid = bq.push(&rig.mem, se, None, false);
        bq.publish(&rig.mem);
        let before = counted.reads.load(Relaxed);
        now += MS;
        match b.poll(now) {
            Ok(_) | Err(BackendError::Stale { chan: 0 }) => {}
            Err(e) => panic!("poll {p}: {e:?}"),
        }
        let reads = counted.reads.load(Relaxed) - before;
        assert!(
            reads <= READS_PER_POLL,
            "{bad:?}: poll {p} read channel A's entries {reads} times (bound {READS_PER_POLL})"
        );
        let got = bq.completions(&rig.mem);
        assert_eq!(got, [(tid, 0)], "{bad:?}: channel B's request of poll {p}");
        bq.publish(&rig.mem);
        a_ces.extend(a.completions(&rig.mem));
        a.publish(&rig.mem);
    }
    a_ces
}

/// One non-coherent channel whose single SE reads wrong (a line still landing) at its
/// first `landing` reads; `polls` device polls after it was published. Returns each
/// poll's answer and the CEs published after it, `(tid, result)`, and the SE's tid.
#[allow(clippy::type_complexity)]
fn landing_entry(
    landing: u64,
    polls: u32,
) -> (Vec<(Result<(), BackendError>, Vec<(u64, i32)>)>, u64) {
    let rig = Rig::with_segments(NC_FLAGS, 1);
    let g = rig.geom(0);
    let counted = Counted {
        mem: &rig.mem,
        watch: (g.se(0), g.se(0) + g.el.se_size as u64),
        reads: AtomicU64::new(0),
        landing,
    };
    let mut scratch = Rig::scratch();
    let mut b = nc_backend(&counted, 1, &mut scratch);
    let mut a = NcChan::new(g);
    // The epoch RESET first, then the request.
    a.publish(&rig.mem);
    b.poll(T0 + MS).unwrap();
    a.completions(&rig.mem);
    let payload = vec![0x5A; 4096];
    copy_payload(&rig, &g, 0, &payload);
    let tid = a.push(&rig.mem, write_se(0, 4096, 0, crc32(&payload)), None, false);
    a.publish(&rig.mem);
    let out = (0..polls)
        .map(|p| {
            let r = b.poll(T0 + (2 + p as u64) * MS).map(|_| ());
            (r, a.completions(&rig.mem))
        })
        .collect();
    (out, tid)
}

/// An SE that does not verify at the first reads of a poll but does within the poll's
/// share of re-reads is served in that same poll: the device re-reads it at once
/// instead of leaving it for the next poll.
#[test]
fn an_entry_that_verifies_within_the_polls_share_is_served_in_that_poll() {
    let (polls, tid) = landing_entry(2, 1);
    assert_eq!(
        polls[0],
        (Ok(()), vec![(tid, 0)]),
        "the SE verified at its third read, within the poll's share, but was not served in that poll"
    );
}

/// An SE that does not verify within one poll's share of re-reads, with budget left,
/// is deferred, not an error: that poll answers Ok (nothing was given up) and the next
/// one serves it.
#[test]
fn an_entry_deferred_to_the_next_poll_is_not_an_error() {
    let (polls, tid) = landing_entry(6, 2);
    assert_eq!(
        polls,
        [(Ok(()), vec![]), (Ok(()), vec![(tid, 0)])],
        "an SE still landing after one poll's share of re-reads"
    );
}

fn copy_payload(rig: &Rig, g: &ChannelGeom, data_off: u32, data: &[u8]) {
    rig.mem
        .write(g.base + chan::DATA_OFF + data_off as u64, data);
}

#[test]
fn bad_payloads_on_one_channel_take_a_bounded_share_of_each_poll() {
    // 3 bad 1 MiB WRITEs, 64 reads each: every one ends with -EIO within 3 × 64
    // reads, i.e. well inside 200 polls of at most 8 reads.
    let k = 3;
    let ces = run_stall(Bad::Payload, k, 200);
    let want: Vec<(u64, i32)> = (0..k as u64).map(|i| (BASE_TID + i, errno::EIO)).collect();
    assert_eq!(
        ces, want,
        "each bad payload ends with an -EIO completion, in order"
    );
}

#[test]
fn bad_ses_on_one_channel_take_a_bounded_share_of_each_poll() {
    for bad in [Bad::SeCrc, Bad::SeTid] {
        let ces = run_stall(bad, 4, 100);
        assert!(
            ces.is_empty(),
            "{bad:?}: an SE that never verifies is not completed"
        );
    }
}

fn path_field(p: &str) -> [u8; backend_rec::PATH_LEN] {
    let mut a = [0u8; backend_rec::PATH_LEN];
    a[..p.len()].copy_from_slice(p.as_bytes());
    a
}

fn name_field(p: &str) -> [u8; host_rec::HOSTNAME_LEN] {
    let mut a = [0u8; host_rec::HOSTNAME_LEN];
    a[..p.len()].copy_from_slice(p.as_bytes());
    a
}

#[test]
fn heartbeat_never_rewrites_a_host_record_that_is_no_longer_ours() {
    let rig = Rig::with_segments(tflags::MULTIHOST, 3);
    let mut scratch = Rig::scratch();
    let mut b = rig
        .start_backend(BackendConfig::default(), 1 << 20, &mut scratch, T0)
        .unwrap();
    let tp = Transport::open(rig.shm(), false).unwrap();
    let old = b.host_id;
    // A hostile host destroys our host record and registers itself into the slot.
    tp.clear(SlotKind::Host, old).unwrap();
    let intruder = tp.register_host("intruder", T0 + SEC).unwrap();
    assert_eq!(intruder, old, "the intruder took the freed slot");
    let t = T0 + 5 * SEC;
    b.heartbeat(t).unwrap();
    let h = tp.host(old).unwrap().unwrap().rec;
    assert_eq!(h.hostname, name_field("intruder"));
    assert_eq!(h.alive_ts, T0 + SEC, "the intruder's record was rewritten");
    // We registered again, elsewhere, and our backend record names the new host id.
    assert_ne!(b.host_id, old);
    let ours = tp.host(b.host_id).unwrap().unwrap().rec;
    assert_eq!((ours.hostname, ours.alive_ts), (name_field("cbdfw"), t));
    let rec = tp.backend(b.backend_id).unwrap().unwrap().rec;
    assert_eq!((rec.host_id, rec.alive_ts), (b.host_id, t));
}

#[test]
fn heartbeat_never_rewrites_a_backend_record_that_is_no_longer_ours() {
    let rig = Rig::with_segments(tflags::MULTIHOST, 3);
    let mut scratch = Rig::scratch();
    let mut b = rig
        .start_backend(BackendConfig::default(), 1 << 20, &mut scratch, T0)
        .unwrap();
    let tp = Transport::open(rig.shm(), false).unwrap();
    let (old, seg) = (b.backend_id, b.channel_segments().next().unwrap());
    // Our backend record gone: the heartbeat writes it again in its own slot.
    tp.clear(SlotKind::Backend, old).unwrap();
    b.heartbeat(T0 + 5 * SEC).unwrap();
    let rec = tp.backend(old).unwrap().unwrap().rec;
    assert_eq!(
        (rec.path, rec.alive_ts),
        (path_field("/dev/cbdfw0"), T0 + 5 * SEC)
    );
    // A foreign backend record in our slot: left alone; ours moves to a free slot and
    // our segment's record follows it.
    let foreign = BackendInfo {
        state: STATE_RUNNING,
        host_id: 9,
        alive_ts: T0 + 6 * SEC,
        dev_size: 8,
        path: path_field("/dev/other"),
        ..BackendInfo::default()
    };
    tp.write_backend(old, &foreign).unwrap();
    b.heartbeat(T0 + 10 * SEC).unwrap();
    assert_eq!(
        tp.backend(old).unwrap().unwrap().rec,
        foreign,
        "foreign record rewritten"
    );
    assert_ne!(b.backend_id, old);
    let rec = tp.backend(b.backend_id).unwrap().unwrap().rec;
    assert_eq!(
        (rec.path, rec.host_id),
        (path_field("/dev/cbdfw0"), b.host_id)
    );
    assert_eq!(rec.handler_channels[0], seg);
    let s = tp.segment(seg).unwrap().unwrap().rec;
    assert_eq!((s.seg_type, s.backend_id), (SEG_TYPE_CHANNEL, b.backend_id));
}

/// The documented v3 property (docs/protocol.md, "Stale SEs in v3 mode"): a host
/// that rewinds `submr_head` takes the device once around the ring, and the old SEs
/// it meets (not marked DONE) run again; the tid rule refuses only the first of them.
#[test]
fn v3_executes_stale_ses_after_a_rewind() {
    let rig = Rig::new(0);
    let mut scratch = Rig::scratch();
    let mut b = rig
        .start_backend(BackendConfig::default(), 1 << 20, &mut scratch, T0)
        .unwrap();
    let blocks: Vec<Vec<u8>> = (0..3u8).map(|i| vec![0x40 + i; 4096]).collect();
    for (i, blk) in blocks.iter().enumerate() {
        rig.write_payload(4096 * i as u32, blk);
        let se = write_se(4096 * i as u64, 4096, 4096 * i as u32, 0);
        rig.write_se(
            rig.se_pos(i as u32),
            &Se {
                req_tid: i as u64,
                ..se
            },
            true,
        );
    }
    rig.set_submr_head(rig.se_pos(3));
    b.poll(T0 + 1).unwrap();
    assert_eq!(rig.compr_head(), rig.ce_pos(3));
    // The host overwrites the blocks on the disk by other means, then rewinds.
    let zero = vec![0u8; 3 * 4096];
    b.media().write(0, &zero).unwrap();
    rig.set_compr_tail(rig.compr_head());
    rig.set_submr_head(rig.se_pos(2));
    // Go once around the ring (all-zero SEs are refused), consuming every CE.
    for now in T0 + 2..T0 + 10_000 {
        let st = b.poll(now).unwrap();
        rig.set_compr_tail(rig.compr_head());
        if st.ses == 0 {
            break;
        }
    }
    let mut out = vec![0u8; 4096];
    b.media().read(0, &mut out).unwrap();
    assert!(out == [0u8; 4096], "the first stale SE is refused (tid)");
    b.media().read(4096, &mut out).unwrap();
    assert!(out == blocks[1], "the second stale SE ran again");
    b.media().read(8192, &mut out).unwrap();
    assert!(out == [0u8; 4096], "the SE at submr_head is not reached");
}
