//! The host engine (`host::engine`) against a hostile device played by the fuzzer.
//!
//! A real backend provisions the transport (host, backend and segment records) and is
//! dropped; the fuzzer may then rewrite the backend and segment records (sealed, any
//! field values) before the host dev-starts, and afterwards plays the device: it
//! answers RESETs (or not, or with EIO, or the wrong seq / epoch), posts CEs (sealed or
//! not, for tids in flight or any tid, any result and flags, READ data with a right or
//! wrong data CRC), publishes `compr_head` (legal or not) and the device lines, writes
//! the durability line, and flips bits in the CE ring and the data area.
//!
//! Properties, checked at every step (a violation panics):
//! * no panic (overflow included), no `HostError::Shm` (an offset outside the region);
//! * a completion is of a request in flight on that queue, once, with the request as
//!   submitted; it is the CE at the queue's `compr_tail`, whose CRC verifies, with its
//!   tid and result (a READ whose data CRC fails is -EBADMSG in v3, never OK); an OK
//!   READ returns data whose CRC is the CE's; a batch poll (`poll_batch_at`) gives each
//!   completion as one poll would, the CEs from the tail on in ring order, and publishes
//!   the tail past the last of them;
//! * the token counters never run backwards (`outstanding` never underflows);
//! * the engine keeps serving: at the end an honest device completes whatever is in
//!   flight, RESETs every queue, and a WRITE + READ round trip succeeds on each.

use crate::mem::SparseMem;
use arbitrary::Arbitrary;
use device::backend::{Backend, BackendConfig};
use device::channel::*;
use device::crc::crc32;
use device::layout::*;
use device::meta;
use device::native::VecMedia;
use device::shm::{SharedMem, Shm};
use device::trace::{NoTrace, RecordKind};
use device::transport::Transport;
use host::engine::{Blkdev, Completion, Host, HostConfig, HostError, Intent, Request};
use std::collections::HashMap;

const T0: u64 = 1_700_000_000_000_000_000;
const MS: u64 = 1_000_000;
const DISK: usize = 1 << 20;
const MAX_ACTIONS: usize = 128;
static NO_TRACE: NoTrace = NoTrace;

#[derive(Arbitrary, Debug)]
pub struct Input {
    /// 0..=3: v3 with these CRC flags; 4..: non-coherent.
    pub mode: u8,
    pub durable: bool,
    pub queues: u8,
    pub depth: u8,
    /// The honest phase polls in batches.
    pub batch: bool,
    /// Record edits before dev-start.
    pub records: Vec<RecordEdit>,
    pub actions: Vec<Action>,
}

#[derive(Arbitrary, Debug)]
pub enum RecordEdit {
    Backend {
        state: u8,
        n_handlers: u32,
        chan0: u32,
        chan1: u32,
        features: u64,
        alive_back_s: u8,
        dev_size: u64,
    },
    Segment {
        id: u8,
        seg_type: u8,
        backend_id: u32,
    },
    /// Raw bit flips in a record copy (0 backend, 1 segment 0, 2 blkdev 0).
    Flip { which: u8, byte: u16, xor: u8 },
}

#[derive(Arbitrary, Debug, Clone)]
pub enum Action {
    Submit {
        q: u8,
        op: u8,
        sector: u16,
        sectors: u8,
        intent: u8,
    },
    Poll {
        q: u8,
    },
    /// Every CE the head shows, in one poll (`poll_batch_at`).
    PollBatch {
        q: u8,
    },
    PollDurable {
        q: u8,
    },
    StartReset {
        q: u8,
    },
    PollReady,
    /// Answer the queue's pending RESET: v3 mgmt_ret (`seq_delta` 0 = the right seq),
    /// non-coherent dev line (`seq_delta` added to the host's epoch).
    AnswerReset {
        q: u8,
        seq_delta: u8,
        ok: bool,
    },
    /// Write a CE at the device's next CE slot: for the `which`-th request in flight
    /// (or, if `any_tid`, for `tid`), sealed or not.
    PostCe {
        q: u8,
        which: u8,
        any_tid: bool,
        tid: u64,
        result: i8,
        flags: u8,
        seal: bool,
        good_data_crc: bool,
        fill: u8,
    },
    /// Publish `compr_head`: `advance` CEs past the last publication, or `raw`.
    PublishHead {
        q: u8,
        advance: bool,
        raw: u32,
    },
    /// A dev line with any epoch / head, sealed or not.
    DevLine {
        q: u8,
        epoch_delta: i8,
        head: u32,
        seal: bool,
    },
    DurLine {
        q: u8,
        incarnation: u32,
        durable_tid: u64,
    },
    CorruptCe {
        q: u8,
        slot: u16,
        byte: u8,
        xor: u8,
    },
    CorruptData {
        q: u8,
        off: u32,
        xor: u8,
    },
    Heartbeat,
    Sleep {
        ms: u16,
    },
    Stop,
}

/// What the harness knows of one request it submitted.
#[derive(Clone, Copy, Debug)]
struct Sub {
    req: Request,
    pos: u32,
}

struct Dev {
    g: ChannelGeom,
    /// Next CE slot the fuzzer-device writes.
    ce_next: u32,
    /// CEs written, by slot: (bytes as written).
    written: HashMap<u32, [u8; MAX_CE_SIZE]>,
}

fn violation(msg: String) -> ! {
    panic!("protocol violation: {msg}")
}

struct H<'m> {
    mem: &'m SparseMem,
    nc: bool,
    el: EntryLayout,
    now: u64,
    devs: Vec<Dev>,
    /// In flight per queue, by tid.
    subs: Vec<HashMap<u64, Sub>>,
    /// Submission order per queue (tids), for the honest phase.
    order: Vec<Vec<u64>>,
    /// Each queue's compr_tail as the host engine keeps it (0 from each RESET on).
    host_tail: Vec<u32>,
    /// The honest phase polls in batches.
    batch: bool,
}

impl<'m> H<'m> {
    fn shm(&self) -> Shm<'m, SparseMem> {
        Shm::new(self.mem, &NO_TRACE)
    }
    fn host_line(&self, q: usize) -> Option<HostLine> {
        read_host_line(self.shm(), &self.devs[q].g, true).unwrap()
    }
    /// The host's published `compr_tail` and `submr_head` of queue `q`.
    fn host_ptrs(&self, q: usize) -> (u32, u32) {
        let g = &self.devs[q].g;
        if self.nc {
            self.host_line(q)
                .map_or((0, 0), |h| (h.compr_tail, h.submr_head))
        } else {
            (
                self.mem.load_u32(g.ctrl(ctrl::COMPR_TAIL)),
                self.mem.load_u32(g.ctrl(ctrl::SUBMR_HEAD)),
            )
        }
    }
    fn publish_head(&self, q: usize, head: u32, epoch: Option<u32>) {
        let g = &self.devs[q].g;
        if self.nc {
            let epoch = epoch.unwrap_or_else(|| self.host_line(q).map_or(0, |h| h.epoch));
            let line = DevLine {
                ack_epoch: epoch,
                compr_head: head,
            };
            publish_line(self.shm(), g.dev_line, &line.encode(), true).unwrap();
        } else {
            self.mem.store_u32(g.ctrl(ctrl::COMPR_HEAD), head);
        }
    }
    /// Write a CE at the device's next slot (READ data too), return its slot.
    fn post(&mut self, q: usize, ce: Ce, seal: bool, read: Option<(Sub, bool, u8)>) -> u32 {
        let g = self.devs[q].g;
        let mut ce = ce;
        if let Some((s, good, fill)) = read {
            // The READ data, at the data_off of the SE the host wrote.
            let mut sb = [0u8; MAX_SE_SIZE];
            self.mem
                .read(g.se(s.pos), &mut sb[..self.el.se_size as usize]);
            let se = self.el.decode_se(&sb).unwrap();
            let data: Vec<u8> = (0..s.req.len as usize).map(|i| fill ^ (i as u8)).collect();
            if (se.data_off as u64) < chan::DATA_SIZE {
                copy_to_data(self.shm(), &g, se.data_off, &data).unwrap();
            }
            ce.data_crc = if good { crc32(&data) } else { !crc32(&data) };
        }
        let mut b = [0u8; MAX_CE_SIZE];
        self.el.encode_ce(&ce, &mut b);
        if seal {
            self.el.seal_ce(&mut b);
        }
        let slot = self.devs[q].ce_next;
        self.mem.write(g.ce(slot), &b[..self.el.ce_size as usize]);
        self.devs[q].written.insert(slot, b);
        self.devs[q].ce_next = g.next_ce(slot);
        slot
    }
    /// Answer queue `q`'s RESET honestly (or with `seq_delta`/`ok` hostile).
    fn answer_reset(&mut self, q: usize, seq_delta: u8, ok: bool) {
        let g = self.devs[q].g;
        let shm = self.shm();
        if self.nc {
            let epoch = self
                .host_line(q)
                .map_or(0, |h| h.epoch)
                .wrapping_add(seq_delta as u32);
            shm.fill(g.ce(0), self.el.compr_size(), 0).unwrap();
            self.devs[q].written.clear();
            self.devs[q].ce_next = 0;
            self.publish_head(q, 0, Some(epoch));
        } else {
            let cmd = meta::read_latest::<MgmtCmd, SparseMem>(shm, g.ctrl(ctrl::MGMT_CMD), false)
                .unwrap()
                .map_or(0, |c| c.rec.cmd_seq);
            for p in [
                ctrl::SUBMR_HEAD,
                ctrl::SUBMR_TAIL,
                ctrl::COMPR_HEAD,
                ctrl::COMPR_TAIL,
            ] {
                self.mem.store_u32(g.ctrl(p), 0);
            }
            shm.fill(g.ce(0), self.el.compr_size() + self.el.submr_size(), 0)
                .unwrap();
            self.devs[q].written.clear();
            self.devs[q].ce_next = 0;
            let r = MgmtRet {
                cmd_seq: cmd.wrapping_add(seq_delta),
                cmd_ret: if ok { MGMT_RET_OK } else { MGMT_RET_EIO },
            };
            meta::write_record(
                shm,
                g.ctrl(ctrl::MGMT_RET),
                &r,
                RecordKind::MgmtRet,
                q as u32,
                false,
            )
            .unwrap();
        }
    }
}

fn check_err(e: HostError, what: &str) {
    if let HostError::Shm(o) = e {
        violation(format!("{what}: out of bounds {o:?}"));
    }
}

/// Check a completion against what was submitted and the CE it came from.
fn check_completion(h: &mut H<'_>, q: usize, c: &Completion, tail_before: u32, read_buf: &[u8]) {
    let Some(s) = h.subs[q].remove(&c.req_tid) else {
        violation(format!(
            "q{q}: completion of tid {:#x}, not in flight",
            c.req_tid
        ));
    };
    if s.req != c.req {
        violation(format!(
            "q{q}: tid {:#x} completed as {:?}, submitted {:?}",
            c.req_tid, c.req, s.req
        ));
    }
    let g = h.devs[q].g;
    let n = h.el.ce_size as usize;
    let mut b = [0u8; MAX_CE_SIZE];
    h.mem.read(g.ce(tail_before), &mut b[..n]);
    if !h.el.entry_crc_ok(&b, h.el.ce_size) {
        violation(format!("q{q}: CE at {tail_before} accepted with a bad CRC"));
    }
    let ce = h.el.decode_ce(&b).unwrap();
    if ce.req_tid != c.req_tid {
        violation(format!(
            "q{q}: completion {:#x} from the CE of {:#x}",
            c.req_tid, ce.req_tid
        ));
    }
    let read_crc_bad = c.req.op == op::READ && ce.result == 0 && h.el.data_crc && {
        crc32(&read_buf[..c.req.len as usize]) != ce.data_crc
    };
    if read_crc_bad {
        if c.result == 0 {
            violation(format!(
                "q{q}: READ {:#x} with a wrong data CRC completed OK",
                c.req_tid
            ));
        }
    } else if c.result != ce.result {
        violation(format!(
            "q{q}: result {} but the CE says {}",
            c.result, ce.result
        ));
    }
}

pub fn run(input: &Input) {
    let nc = input.mode >= 4;
    // MULTIHOST, as `transport::format_flags` sets it: the host registers in a slot of
    // its own beside the device's.
    let flags = tflags::MULTIHOST
        | if nc {
            tflags::CHANNEL_CRC | tflags::CHANNEL_DATA_CRC
        } else {
            (input.mode as u16 & 3) << 1
        };
    let nq = 1 + (input.queues % 2) as u32;
    let mem = SparseMem::new(TransportInfo::region_for(2));
    let shm = Shm::new(&mem, &NO_TRACE);
    Transport::format(shm, flags, false, T0).unwrap();
    // A real backend provisions the records, then leaves the device to the fuzzer.
    {
        let mut scratch = vec![0u8; chan::MAX_IO as usize];
        let cfg = BackendConfig {
            n_handlers: nq,
            noncoherent: nc,
            durable: device::durable::DurableConfig {
                offer: input.durable,
                ..Default::default()
            },
            ..BackendConfig::default()
        };
        let b =
            Backend::start(shm, cfg, VecMedia::new(DISK), &mut scratch, T0).expect("backend start");
        drop(b.into_media());
    }
    let tp = Transport::open(shm, false).unwrap();
    let mut now = T0 + MS;
    for e in input.records.iter().take(8) {
        match *e {
            RecordEdit::Backend {
                state,
                n_handlers,
                chan0,
                chan1,
                features,
                alive_back_s,
                dev_size,
            } => {
                let Some(mut r) = tp.backend(0).unwrap().map(|l| l.rec) else {
                    continue;
                };
                r.state = state % 4;
                r.n_handlers = n_handlers % 200;
                r.handler_channels[0] = chan0 % 4;
                r.handler_channels[1] = chan1 % 4;
                r.features = features;
                r.alive_ts = T0.saturating_sub(alive_back_s as u64 * 1_000_000_000);
                r.dev_size = dev_size;
                tp.write_backend(0, &r).unwrap();
            }
            RecordEdit::Segment {
                id,
                seg_type,
                backend_id,
            } => {
                let id = id as u32 % 2;
                let Some(mut s) = tp.segment(id).unwrap().map(|l| l.rec) else {
                    continue;
                };
                s.seg_type = seg_type % 4;
                s.backend_id = backend_id % 4;
                tp.write_segment(id, &s).unwrap();
            }
            RecordEdit::Flip { which, byte, xor } => {
                let base = match which % 3 {
                    0 => tp.info.backend_slot(0),
                    1 => tp.info.segment_off(0),
                    _ => tp.info.blkdev_slot(0),
                };
                let at = base + (byte as u64 % (2 * PAGE as u64));
                let mut x = [0u8];
                mem.read(at, &mut x);
                mem.write(at, &[x[0] ^ xor]);
            }
        }
    }
    let cfg = HostConfig {
        hostname: "host",
        noncoherent: nc,
        queue_depth: 1 + input.depth as usize % 32,
        nc_retries: 4,
        durable_tokens: true,
    };
    let host = match Host::register(shm, cfg, now) {
        Ok(h) => h,
        Err(e) => return check_err(e, "register"),
    };
    let bid = match host.find_backend(now) {
        Ok(b) => b,
        Err(e) => return check_err(e, "find_backend"),
    };
    let mut dev: Blkdev<'_, SparseMem> = match host.dev_start(bid, 0, now) {
        Ok(d) => d,
        Err(e) => return check_err(e, "dev_start"),
    };
    let nqs = dev.queues.len();
    if nqs == 0 {
        return;
    }
    // The queues' channels, as the engine found them (the records may have been edited).
    let rec = tp.backend(bid).unwrap().unwrap().rec;
    let mut devs = Vec::new();
    for q in 0..nqs {
        let base = tp.channel_base(rec.handler_channels[q]).unwrap();
        devs.push(Dev {
            g: ChannelGeom::new(base, flags, false),
            ce_next: 0,
            written: HashMap::new(),
        });
    }
    let mut h = H {
        mem: &mem,
        nc,
        el: EntryLayout::from_flags(flags),
        now,
        devs,
        subs: vec![HashMap::new(); nqs],
        order: vec![Vec::new(); nqs],
        host_tail: vec![0; nqs],
        batch: input.batch,
    };
    let mut read_buf = vec![0u8; chan::MAX_IO as usize];
    let mut payload = vec![0u8; chan::MAX_IO as usize];
    for a in input.actions.iter().take(MAX_ACTIONS) {
        let ready: Vec<bool> = dev.queues.iter().map(|q| q.is_ready()).collect();
        step(&mut h, &mut dev, a, &mut read_buf, &mut payload);
        for (q, was) in ready.into_iter().enumerate() {
            if !was && dev.queues[q].is_ready() {
                h.host_tail[q] = 0;
            }
        }
        for q in dev.queues.iter() {
            let _ = q.tokens.outstanding();
        }
    }
    now = h.now;
    let _ = now;
    honest_phase(&mut h, &mut dev, &mut read_buf);
}

fn poll_one(
    h: &mut H<'_>,
    dev: &mut Blkdev<'_, SparseMem>,
    q: usize,
    read_buf: &mut [u8],
) -> Option<Completion> {
    // The host's own compr_tail (a hostile device may overwrite the published copy;
    // the engine keeps its private one, rightly).
    let tail_before = h.host_tail[q];
    let r = dev.queues[q].poll_at(read_buf, h.now);
    if matches!(r, Ok(Some(_)) | Err(HostError::BadCompletion { .. })) {
        h.host_tail[q] = h.devs[q].g.next_ce(tail_before);
        let (published, _) = h.host_ptrs(q);
        if published != h.host_tail[q] {
            violation(format!(
                "q{q}: compr_tail published {published}, consumed up to {}",
                h.host_tail[q]
            ));
        }
    }
    match r {
        Ok(Some(c)) => {
            check_completion(h, q, &c, tail_before, read_buf);
            Some(c)
        }
        Ok(None) => None,
        Err(e) => {
            check_err(e, "poll");
            None
        }
    }
}

/// One batch poll: each completion checked as [`poll_one`] checks one, against the CE at
/// the tail it was taken from; the tail published once, after the batch.
fn poll_batch(
    h: &mut H<'_>,
    dev: &mut Blkdev<'_, SparseMem>,
    q: usize,
    read_buf: &mut [u8],
) -> usize {
    let g = h.devs[q].g;
    let mut tail = h.host_tail[q];
    let mut got = Vec::new();
    let r = dev.queues[q].poll_batch_at(read_buf, h.now, &mut |c, data| {
        if c.req.op == op::READ && c.result == 0 && data.len() != c.req.len as usize {
            violation(format!(
                "q{q}: READ {:#x} of {} bytes with {} bytes of data",
                c.req_tid,
                c.req.len,
                data.len()
            ));
        }
        got.push((*c, tail, data.to_vec()));
        tail = g.next_ce(tail);
    });
    match r {
        Ok(n) if n != got.len() => violation(format!(
            "q{q}: a batch of {n} with {} completions",
            got.len()
        )),
        Ok(_) => {}
        Err(e) => {
            if !got.is_empty() {
                violation(format!("q{q}: {e:?} after {} completions", got.len()));
            }
            if let HostError::BadCompletion { .. } = e {
                tail = g.next_ce(tail);
            }
            check_err(e, "poll_batch");
        }
    }
    if tail != h.host_tail[q] {
        h.host_tail[q] = tail;
        let (published, _) = h.host_ptrs(q);
        if published != tail {
            violation(format!(
                "q{q}: compr_tail published {published} after a batch, consumed up to {tail}"
            ));
        }
    }
    for (c, before, data) in &got {
        let mut buf = data.clone();
        buf.resize(c.req.len as usize, 0);
        check_completion(h, q, c, *before, &buf);
    }
    got.len()
}

fn step(
    h: &mut H<'_>,
    dev: &mut Blkdev<'_, SparseMem>,
    a: &Action,
    read_buf: &mut [u8],
    payload: &mut [u8],
) {
    let nq = dev.queues.len();
    match *a {
        Action::Submit {
            q,
            op,
            sector,
            sectors,
            intent,
        } => {
            let q = q as usize % nq;
            let op = op as u32 % 6;
            let len = if op == op::FLUSH {
                0
            } else {
                (sectors as u32 % 64 + 1) * 512
            };
            let max = (DISK as u64 - len as u64) / 512;
            let req = Request {
                op,
                offset: (sector as u64 % (max + 1)) * 512,
                len,
            };
            let intent = match intent % 3 {
                0 => Intent::Standard,
                1 => Intent::Ephemeral,
                _ => Intent::Critical,
            };
            let (_, pos) = h.host_ptrs(q);
            let body = if op == op::WRITE {
                &payload[..len as usize]
            } else {
                &payload[..0]
            };
            match dev.queues[q].submit_intent(req, body, intent) {
                Ok(tid) => {
                    if h.subs[q].insert(tid, Sub { req, pos }).is_some() {
                        violation(format!("q{q}: tid {tid:#x} handed out twice"));
                    }
                    h.order[q].push(tid);
                    if op > op::WRITE_ZEROES {
                        violation(format!("q{q}: op {op} accepted"));
                    }
                }
                Err(e) => check_err(e, "submit"),
            }
        }
        Action::Poll { q } => {
            let q = q as usize % nq;
            poll_one(h, dev, q, read_buf);
        }
        Action::PollBatch { q } => {
            let q = q as usize % nq;
            poll_batch(h, dev, q, read_buf);
        }
        Action::PollDurable { q } => {
            let q = q as usize % nq;
            let before = dev.queues[q].tokens;
            match dev.queues[q].poll_durable(h.now) {
                Ok(_) => {
                    let t = dev.queues[q].tokens;
                    assert!(t.confirmed >= before.confirmed && t.lost >= before.lost);
                    let _ = t.outstanding();
                }
                Err(e) => check_err(e, "poll_durable"),
            }
        }
        Action::StartReset { q } => {
            let q = q as usize % nq;
            match dev.queues[q].start_reset(h.now) {
                Ok(()) => {
                    if !h.subs[q].is_empty() {
                        violation(format!("q{q}: RESET started with requests in flight"));
                    }
                }
                Err(e) => check_err(e, "start_reset"),
            }
        }
        Action::PollReady => {
            if let Err(e) = dev.poll_ready(h.now) {
                check_err(e, "poll_ready");
            }
        }
        Action::AnswerReset { q, seq_delta, ok } => {
            let q = q as usize % nq;
            h.answer_reset(q, seq_delta % 3, ok);
        }
        Action::PostCe {
            q,
            which,
            any_tid,
            tid,
            result,
            flags,
            seal,
            good_data_crc,
            fill,
        } => {
            let q = q as usize % nq;
            let inflight: Vec<u64> = h.order[q]
                .iter()
                .copied()
                .filter(|t| h.subs[q].contains_key(t))
                .collect();
            let (tid, sub) = if any_tid || inflight.is_empty() {
                (tid, None)
            } else {
                let t = inflight[which as usize % inflight.len()];
                (t, h.subs[q].get(&t).copied())
            };
            let result = if result >= 0 { 0 } else { result as i32 };
            let ce = Ce {
                req_tid: tid,
                result,
                flags: flags as u32 & 3,
                ..Ce::default()
            };
            let read = sub
                .filter(|s| s.req.op == op::READ)
                .map(|s| (s, good_data_crc, fill));
            h.post(q, ce, seal, read);
        }
        Action::PublishHead { q, advance, raw } => {
            let q = q as usize % nq;
            let head = if advance {
                h.devs[q].ce_next
            } else {
                raw % (2 * h.el.compr_size() as u32)
            };
            h.publish_head(q, head, None);
        }
        Action::DevLine {
            q,
            epoch_delta,
            head,
            seal,
        } => {
            let q = q as usize % nq;
            let epoch = h
                .host_line(q)
                .map_or(0, |l| l.epoch)
                .wrapping_add(epoch_delta as i32 as u32);
            let mut line = DevLine {
                ack_epoch: epoch,
                compr_head: head % (2 * h.el.compr_size() as u32),
            }
            .encode();
            if !seal {
                line[0] ^= 1;
            }
            publish_line(h.shm(), h.devs[q].g.dev_line, &line, true).unwrap();
        }
        Action::DurLine {
            q,
            incarnation,
            durable_tid,
        } => {
            let q = q as usize % nq;
            let line = DurDevLine {
                incarnation: incarnation % 4,
                durable_tid,
            }
            .encode();
            publish_line(h.shm(), h.devs[q].g.ctrl(ctrl::DUR_DEV_LINE), &line, true).unwrap();
        }
        Action::CorruptCe { q, slot, byte, xor } => {
            let q = q as usize % nq;
            let pos = (slot as u32 % chan::COMPR_ENTRIES as u32) * h.el.ce_size;
            let at = h.devs[q].g.ce(pos) + byte as u64 % h.el.ce_size as u64;
            let mut x = [0u8];
            h.mem.read(at, &mut x);
            h.mem.write(at, &[x[0] ^ xor]);
        }
        Action::CorruptData { q, off, xor } => {
            let q = q as usize % nq;
            let at = h.devs[q].g.base + chan::DATA_OFF + off as u64 % chan::DATA_SIZE;
            let mut x = [0u8];
            h.mem.read(at, &mut x);
            h.mem.write(at, &[x[0] ^ xor]);
        }
        Action::Heartbeat => {
            if let Err(e) = dev.heartbeat(h.now) {
                check_err(e, "heartbeat");
            }
        }
        Action::Sleep { ms } => h.now += ms as u64 * MS,
        Action::Stop => match dev.stop() {
            Ok(()) => {
                if h.subs.iter().any(|s| !s.is_empty()) {
                    violation("stopped with requests in flight".into());
                }
            }
            Err(e) => check_err(e, "stop"),
        },
    }
}

/// The engine keeps serving: an honest device completes what is in flight, RESETs
/// every queue, and a WRITE + READ round trip works on each.
fn honest_phase(h: &mut H<'_>, dev: &mut Blkdev<'_, SparseMem>, read_buf: &mut [u8]) {
    let nq = dev.queues.len();
    for q in 0..nq {
        // Complete everything in flight, from the host's compr_tail on.
        if dev.queues[q].is_ready() && !h.subs[q].is_empty() {
            let tail = h.host_tail[q];
            h.devs[q].ce_next = tail;
            let inflight: Vec<u64> = h.order[q]
                .iter()
                .copied()
                .filter(|t| h.subs[q].contains_key(t))
                .collect();
            for t in inflight {
                let s = h.subs[q][&t];
                let read = (s.req.op == op::READ).then_some((s, true, 0x3C));
                let ce = Ce {
                    req_tid: t,
                    ..Ce::default()
                };
                h.post(q, ce, true, read);
            }
            let head = h.devs[q].ce_next;
            h.publish_head(q, head, None);
            for _ in 0..(h.subs[q].len() + 2) {
                if h.batch {
                    poll_batch(h, dev, q, read_buf);
                } else {
                    poll_one(h, dev, q, read_buf);
                }
            }
            if !h.subs[q].is_empty() {
                violation(format!(
                    "q{q}: {} requests not completed by an honest device",
                    h.subs[q].len()
                ));
            }
        }
        if dev.queues[q].in_flight() != 0 {
            if h.subs[q].is_empty() && !dev.queues[q].is_ready() {
                violation(format!(
                    "q{q}: requests in flight on a queue that is not ready"
                ));
            }
            continue;
        }
        // RESET: answer any pending command first (v3 refuses a RESET while one is).
        if !h.nc {
            h.answer_reset(q, 0, true);
        }
        if let Err(e) = dev.queues[q].start_reset(h.now) {
            violation(format!(
                "q{q}: start_reset after the device answered: {e:?}"
            ));
        }
        h.answer_reset(q, 0, true);
        match dev.queues[q].poll_reset(h.now) {
            Ok(true) => h.host_tail[q] = 0,
            r => violation(format!("q{q}: honest RESET answer not taken: {r:?}")),
        }
        // A WRITE and a READ.
        let data = vec![0xA7u8; 4096];
        for op in [op::WRITE, op::READ] {
            let (_, pos) = h.host_ptrs(q);
            let req = Request {
                op,
                offset: 4096,
                len: 4096,
            };
            let tid = match dev.queues[q].submit(req, if op == op::WRITE { &data } else { &[] }) {
                Ok(t) => t,
                Err(e) => violation(format!("q{q}: submit after RESET: {e:?}")),
            };
            let s = Sub { req, pos };
            h.subs[q].insert(tid, s);
            let read = (op == op::READ).then_some((s, true, 0x11));
            h.post(
                q,
                Ce {
                    req_tid: tid,
                    ..Ce::default()
                },
                true,
                read,
            );
            let head = h.devs[q].ce_next;
            h.publish_head(q, head, None);
            match poll_one(h, dev, q, read_buf) {
                Some(c) if c.result == 0 => {}
                c => violation(format!("q{q}: {op} after RESET: {c:?}")),
            }
        }
    }
}
