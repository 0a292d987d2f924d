//! The backend engine against a host played by the fuzzer, on one channel.
//!
//! The host side writes **sealed** SEs (valid entry and payload CRCs), so requests get
//! past the CRC checks to `execute()` in every transport format — v3 with each of the
//! four CRC combinations, and the non-coherent mode — and mixes them with what a
//! hostile or broken host does: SEs with arbitrary fields (sealed), raw junk SEs,
//! corrupted bytes in the SE ring, the data area or the CE ring, wrong ring pointers,
//! RESETs at any moment, corrupted records, and crashes of the device followed by a
//! re-attach (staged writes lost).
//!
//! Checked after every step (a violation panics, which libFuzzer reports):
//! * no panic, no out-of-bounds access (`BackendError::Shm` is a bug: every offset the
//!   engine computes must stay inside the region), no error the host did not provoke;
//! * every CE the device publishes verifies, at a legal `compr_head`;
//! * while the host has done nothing that makes the outcome unknowable (the `strict`
//!   flag: no wrong pointers, no junk tids, no CE-ring or record corruption, no SE
//!   corruption in v3 formats), a model disk predicts the device exactly: every CE
//!   names a request in flight and completes it once; a well-formed request succeeds
//!   (a FLUSH may fail after a crash, a WRITE whose payload was corrupted must fail when
//!   the format has a data CRC); a WRITE that completes OK landed on the media with the
//!   data the device read (whose CRC must match); a READ returns the model's data with a
//!   matching data CRC; an OK completion is always of an in-range request; data made
//!   durable (FLUSH, DURABLE CE, RESET) survives a crash; with nothing stalling the
//!   ring every request completes;
//! * the engine keeps serving: at the end (whatever came before) a RESET is answered
//!   and a fresh WRITE + READ round trip succeeds.

use crate::mem::SparseMem;
use arbitrary::Arbitrary;
use device::backend::{Backend, BackendConfig, BackendError};
use device::channel::*;
use device::crc::crc32;
use device::durable::DurableConfig;
use device::layout::*;
use device::meta;
use device::native::VecMedia;
use device::shm::{SharedMem, Shm};
use device::trace::{NoTrace, RecordKind};
use device::transport::Transport;
use std::collections::VecDeque;

const T0: u64 = 1_700_000_000_000_000_000;
const SEC: u64 = 1_000_000_000;
/// The media: 1 MiB (2048 sectors).
const DISK: usize = 1 << 20;
const SECTORS: usize = DISK / 512;
const MAX_ACTIONS: usize = 96;
const MAX_DEPTH: usize = 48;
const NC_FLAGS: u16 = tflags::CHANNEL_CRC | tflags::CHANNEL_DATA_CRC;
static NO_TRACE: NoTrace = NoTrace;

#[derive(Arbitrary, Debug)]
pub struct Input {
    /// 0..=3: v3 with the CRC flags `mode` (bit0 CHANNEL_CRC, bit1 CHANNEL_DATA_CRC);
    /// 4..: the non-coherent mode.
    pub mode: u8,
    /// Durability tokens offered by the backend and accepted by the host.
    pub durable: bool,
    /// A RAM staging buffer (writes complete when staged; a crash loses them).
    pub staging: bool,
    /// SEs per channel per poll (1..=16).
    pub batch: u8,
    /// Where the host's data extents start (4 KiB units; near the end = wrap soon).
    pub data_start: u16,
    pub actions: Vec<Action>,
}

#[derive(Arbitrary, Debug, Clone)]
pub enum Action {
    /// A well-formed WRITE (`intent` & 3: standard, ephemeral, critical).
    Write {
        sector: u16,
        sectors: u8,
        intent: u8,
        fill: u8,
    },
    Read {
        sector: u16,
        sectors: u8,
    },
    Flush {
        critical: bool,
    },
    Zero {
        sector: u16,
        sectors: u8,
        discard: bool,
    },
    /// A sealed SE with the right tid and arbitrary fields.
    Hostile {
        op: u8,
        flags: u8,
        offset: u64,
        len: u32,
        data_off: u32,
        data_len: u32,
    },
    /// Raw SE bytes at the head, sealed or not.
    Junk {
        bytes: [u8; 48],
        seal: bool,
    },
    /// Let the device run (time passes: 0.1 ms units).
    Poll {
        tenth_ms: u16,
    },
    /// Consume up to `n` CEs the device has published (DONE, `compr_tail`, reclaim).
    Consume {
        n: u8,
    },
    Reset,
    /// Flip bits in the `back`-th newest in-flight SE / its payload, or in a CE slot.
    CorruptSe {
        back: u8,
        byte: u8,
        xor: u8,
    },
    CorruptData {
        back: u8,
        byte: u32,
        xor: u8,
    },
    CorruptCe {
        slot: u16,
        byte: u8,
        xor: u8,
    },
    /// Publish a wrong ring pointer (0 submr_head, 1 submr_tail, 2 compr_tail).
    Pointer {
        which: u8,
        value: u32,
    },
    /// Flip bits in a record copy (0 host, 1 backend, 2 blkdev, 3 segment).
    CorruptRecord {
        which: u8,
        byte: u16,
        xor: u8,
    },
    /// The device crashes (its RAM, staged writes included, is lost) and re-attaches,
    /// taking over its own records at once or after they timed out.
    Crash {
        takeover: bool,
    },
    Sleep {
        secs: u8,
    },
}

#[derive(Clone, Debug)]
struct Req {
    tid: u64,
    pos: u32,
    /// Data extent reserved for it (bytes, in `DATA_ALIGN` units).
    span: u32,
    /// What the real host engine would send: must succeed (see `check_result`).
    well_formed: bool,
    /// Its payload was hit by bit flips after sealing (a data-CRC format must refuse it
    /// if they did not cancel out).
    payload_corrupt: bool,
    completed: bool,
    consumed: bool,
}

struct Model {
    disk: Vec<u8>,
    /// Sector content known to be on the media for good (FLUSH, DURABLE CE, RESET).
    durable: Vec<bool>,
}

struct Harness<'m> {
    mem: &'m SparseMem,
    g: ChannelGeom,
    el: EntryLayout,
    nc: bool,
    durable: bool,
    staging: bool,
    batch: u32,
    now: u64,
    // ---- the host side
    head: u32,
    tail: u32,
    compr_tail: u32,
    /// Next CE position to read (the host reads CEs right after each poll).
    read_pos: u32,
    next_tid: u64,
    epoch: u32,
    base_tid: u64,
    data_head: u64,
    data_tail: u64,
    data_base: u64,
    q: VecDeque<Req>,
    /// CEs read, not yet consumed: (position, index into `q` by tid).
    unconsumed: VecDeque<(u32, u64)>,
    /// RESET sent, not yet answered: the v3 cmd_seq / the non-coherent epoch.
    reset_pending: Option<u32>,
    // ---- what the host has done since the last RESET
    strict: bool,
    /// Something that legitimately stalls the ring (nc: an SE that never verifies;
    /// any mode: an SE the device skips as DONE).
    stalled: bool,
    hostile_ptr: bool,
    records_corrupt: bool,
    crashed: bool,
    model: Model,
}

fn violation(msg: String) -> ! {
    panic!("protocol violation: {msg}")
}

impl<'m> Harness<'m> {
    fn shm(&self) -> Shm<'m, SparseMem> {
        Shm::new(self.mem, &NO_TRACE)
    }

    fn publish_host_line(&self) {
        let line = HostLine {
            epoch: self.epoch,
            submr_head: self.head,
            submr_tail: self.tail,
            compr_tail: self.compr_tail,
            base_tid: self.base_tid,
            tail_tid: self.q.front().map_or(self.next_tid, |r| r.tid),
            features: if self.durable {
                features::DURABLE_TOKENS as u32
            } else {
                0
            },
        };
        publish_line(self.shm(), self.g.host_line, &line.encode(), true).unwrap();
    }

    fn publish_head(&self) {
        if self.nc {
            self.publish_host_line();
        } else {
            self.mem.store_u32(self.g.ctrl(ctrl::SUBMR_HEAD), self.head);
        }
    }

    fn publish_tails(&self) {
        if self.nc {
            self.publish_host_line();
        } else {
            self.mem
                .store_u32(self.g.ctrl(ctrl::COMPR_TAIL), self.compr_tail);
            self.mem.store_u32(self.g.ctrl(ctrl::SUBMR_TAIL), self.tail);
        }
    }

    fn ready(&self) -> bool {
        self.reset_pending.is_none()
    }

    /// Room for one more SE and `span` payload bytes, as the host engine checks.
    fn room(&self, span: u32) -> bool {
        let size = self.g.submr_size();
        let used = (self.head + size - self.tail) % size;
        self.ready()
            && self.q.len() < MAX_DEPTH
            && size - used >= 2 * self.el.se_size
            && (self.data_head - self.data_tail) + span as u64
                <= chan::DATA_SIZE - chan::DATA_ALIGN as u64
    }

    fn data_off(&self) -> u32 {
        (self.data_head % chan::DATA_SIZE) as u32
    }

    /// Write `se` (tid assigned here) sealed at the head, reserve `span`, publish.
    fn push(&mut self, mut se: Se, span: u32, well_formed: bool) {
        se.req_tid = self.next_tid;
        let mut b = [0u8; MAX_SE_SIZE];
        self.el.encode_se(&se, &mut b);
        self.el.seal_se(&mut b);
        self.push_bytes(&b, se.req_tid, span, well_formed);
    }

    fn push_bytes(&mut self, b: &[u8], tid: u64, span: u32, well_formed: bool) {
        let pos = self.head;
        self.mem
            .write(self.g.se(pos), &b[..self.el.se_size as usize]);
        self.head = self.g.next_se(pos);
        self.next_tid = tid.wrapping_add(1);
        self.data_head += span as u64;
        self.q.push_back(Req {
            tid,
            pos,
            span,
            well_formed,
            payload_corrupt: false,
            completed: false,
            consumed: false,
        });
        self.publish_head();
    }

    fn submit(&mut self, a: &Action) {
        let len_of = |sectors: u8| (sectors as u32 % 64 + 1) * 512;
        let off_of = |sector: u16, len: u32| {
            let max = (DISK as u64 - len as u64) / 512;
            (sector as u64 % (max + 1)) * 512
        };
        match *a {
            Action::Write {
                sector,
                sectors,
                intent,
                fill,
            } => {
                let len = len_of(sectors);
                let span = len.div_ceil(chan::DATA_ALIGN) * chan::DATA_ALIGN;
                if !self.room(span) {
                    return;
                }
                let payload: Vec<u8> = (0..len as usize)
                    .map(|i| fill.wrapping_add((i / 512) as u8).wrapping_mul(31))
                    .collect();
                let data_off = self.data_off();
                copy_to_data(self.shm(), &self.g, data_off, &payload).unwrap();
                let flags = match intent % 3 {
                    1 => SE_FLAG_EPHEMERAL,
                    2 => SE_FLAG_CRITICAL,
                    _ => 0,
                };
                let se = Se {
                    op: op::WRITE,
                    flags,
                    offset: off_of(sector, len),
                    len,
                    data_off,
                    data_len: len,
                    data_crc: if self.el.data_crc { crc32(&payload) } else { 0 },
                    ..Se::default()
                };
                self.push(se, span, true);
            }
            Action::Read { sector, sectors } => {
                let len = len_of(sectors);
                let span = len.div_ceil(chan::DATA_ALIGN) * chan::DATA_ALIGN;
                if !self.room(span) {
                    return;
                }
                let se = Se {
                    op: op::READ,
                    offset: off_of(sector, len),
                    len,
                    data_off: self.data_off(),
                    data_len: len,
                    ..Se::default()
                };
                self.push(se, span, true);
            }
            Action::Flush { critical } => {
                if !self.room(0) {
                    return;
                }
                let flags = if critical { SE_FLAG_CRITICAL } else { 0 };
                let se = Se {
                    op: op::FLUSH,
                    flags,
                    ..Se::default()
                };
                self.push(se, 0, true);
            }
            Action::Zero {
                sector,
                sectors,
                discard,
            } => {
                if !self.room(0) {
                    return;
                }
                let len = len_of(sectors);
                let se = Se {
                    op: if discard {
                        op::DISCARD
                    } else {
                        op::WRITE_ZEROES
                    },
                    offset: off_of(sector, len),
                    len,
                    ..Se::default()
                };
                self.push(se, 0, true);
            }
            Action::Hostile {
                op,
                flags,
                offset,
                len,
                data_off,
                data_len,
            } => {
                let op = op as u32 % 8;
                // A READ writes `len` bytes at `data_off`: keep it inside its own extent
                // so the model knows what every other payload holds.
                let span = if op == op::READ {
                    len.min(chan::MAX_IO).div_ceil(chan::DATA_ALIGN) * chan::DATA_ALIGN
                } else {
                    0
                };
                if !self.room(span) {
                    return;
                }
                let data_off = if op == op::READ {
                    self.data_off()
                } else {
                    data_off
                };
                let flags = flags as u32 & 0xF;
                if flags & SE_FLAG_DONE != 0 {
                    // The device skips it: no CE, the ring stalls behind it.
                    self.stalled = true;
                }
                // The payload of a WRITE is whatever the data area holds there, and
                // the CRC is that data's (sealed correctly).
                let mut se = Se {
                    op,
                    flags,
                    offset,
                    len,
                    data_off,
                    data_len,
                    ..Se::default()
                };
                if self.el.data_crc && op == op::WRITE && len <= chan::MAX_IO {
                    let mut buf = vec![0u8; len as usize];
                    if (data_off as u64) < chan::DATA_SIZE {
                        copy_from_data(self.shm(), &self.g, data_off, &mut buf).unwrap();
                    }
                    se.data_crc = crc32(&buf);
                }
                self.push(se, span, false);
            }
            Action::Junk { bytes, seal } => {
                if !self.room(0) {
                    return;
                }
                let mut b = [0u8; MAX_SE_SIZE];
                b.copy_from_slice(&bytes);
                if seal {
                    self.el.seal_se(&mut b);
                }
                let tid = self.el.decode_se(&b).map_or(0, |s| s.req_tid);
                // Unknown tids and SEs that stall: nothing exact to expect any more.
                self.strict = false;
                self.stalled = true;
                self.push_bytes(&b, tid, 0, false);
            }
            _ => unreachable!(),
        }
    }

    fn reset(&mut self) {
        if self.reset_pending.is_some() {
            return;
        }
        let shm = self.shm();
        if self.nc {
            let h = read_host_line(shm, &self.g, true)
                .unwrap()
                .map_or(0, |h| h.epoch);
            let d = read_dev_line(shm, &self.g, true)
                .unwrap()
                .map_or(0, |d| d.ack_epoch);
            let mut epoch = h.max(d).max(self.epoch).wrapping_add(1);
            if epoch == 0 {
                epoch = 1;
            }
            self.epoch = epoch;
            self.base_tid = (epoch as u64) << 32;
            self.next_tid = self.base_tid;
            self.head = 0;
            self.tail = 0;
            self.compr_tail = 0;
            self.q.clear();
            self.unconsumed.clear();
            self.publish_host_line();
            self.reset_pending = Some(epoch);
        } else {
            let cmd =
                meta::read_latest::<MgmtCmd, SparseMem>(shm, self.g.ctrl(ctrl::MGMT_CMD), false)
                    .unwrap()
                    .map_or(0, |c| c.rec.cmd_seq);
            let seq = cmd.wrapping_add(1);
            let c = MgmtCmd {
                cmd_seq: seq,
                cmd_op: MGMT_OP_RESET,
            };
            meta::write_record(
                shm,
                self.g.ctrl(ctrl::MGMT_CMD),
                &c,
                RecordKind::MgmtCmd,
                0,
                false,
            )
            .unwrap();
            self.reset_pending = Some(seq as u32);
        }
    }

    /// After a poll: the RESET answer, if one is pending. `media`: the device's media
    /// (all completed writes are on it once a RESET is answered).
    fn check_reset_answer(&mut self, media: &[u8]) {
        let Some(want) = self.reset_pending else {
            return;
        };
        let shm = self.shm();
        let answered = if self.nc {
            read_dev_line(shm, &self.g, true)
                .unwrap()
                .is_some_and(|d| d.ack_epoch == want)
        } else {
            match meta::read_latest::<MgmtRet, SparseMem>(shm, self.g.ctrl(ctrl::MGMT_RET), false)
                .unwrap()
            {
                Some(r) if r.rec.cmd_seq as u32 == want => {
                    if r.rec.cmd_ret != MGMT_RET_OK {
                        violation(format!("RESET answered {}", r.rec.cmd_ret));
                    }
                    true
                }
                _ => false,
            }
        };
        if !answered {
            return;
        }
        self.reset_pending = None;
        self.head = 0;
        self.tail = 0;
        self.compr_tail = 0;
        self.read_pos = 0;
        if !self.nc {
            self.next_tid = 0;
        }
        self.data_head = self.data_base;
        self.data_tail = self.data_base;
        self.q.clear();
        self.unconsumed.clear();
        // The device makes every completed write durable before it answers. After
        // what made the model inexact, start it again from the media.
        self.model.durable.fill(true);
        if !self.strict {
            self.model.disk.copy_from_slice(media);
        }
        self.strict = !self.records_corrupt;
        self.stalled = false;
        self.hostile_ptr = false;
        self.crashed = false;
        if self.nc {
            self.publish_host_line();
        }
    }

    /// The device's published `compr_head`, if it is in this epoch.
    fn compr_head(&self) -> Option<u32> {
        let h = if self.nc {
            let d = read_dev_line(self.shm(), &self.g, true).unwrap()?;
            if d.ack_epoch != self.epoch {
                return None;
            }
            d.compr_head
        } else {
            self.mem.load_u32(self.g.ctrl(ctrl::COMPR_HEAD))
        };
        if !self.g.valid_ce_pos(h) {
            violation(format!("device published compr_head {h}"));
        }
        Some(h)
    }

    /// After a poll: read every new CE and check it against the model.
    fn read_ces(&mut self) {
        if self.reset_pending.is_some() {
            return;
        }
        let Some(head) = self.compr_head() else {
            return;
        };
        let n = self.el.ce_size as usize;
        while self.read_pos != head {
            let pos = self.read_pos;
            let mut b = [0u8; MAX_CE_SIZE];
            self.mem.read(self.g.ce(pos), &mut b[..n]);
            if !self.el.entry_crc_ok(&b, self.el.ce_size) {
                violation(format!("CE at {pos} does not verify"));
            }
            let ce = self.el.decode_ce(&b).unwrap();
            self.check_ce(&ce);
            self.unconsumed.push_back((pos, ce.req_tid));
            self.read_pos = self.g.next_ce(pos);
        }
    }

    fn check_ce(&mut self, ce: &Ce) {
        let Some(i) = self.q.iter().position(|r| r.tid == ce.req_tid) else {
            if self.strict {
                violation(format!("CE for unknown tid {:#x}", ce.req_tid));
            }
            return;
        };
        if self.q[i].completed {
            if self.strict {
                violation(format!("tid {:#x} completed twice", ce.req_tid));
            }
            return;
        }
        self.q[i].completed = true;
        let r = self.q[i].clone();
        if !self.strict {
            // Rewound or re-attached at a hostile pointer, the device may have run an
            // older SE of that slot: what it ran is not knowable (the model is re-read
            // at the next RESET).
            return;
        }
        // What the device saw: the SE as it is in the ring now (nothing wrote it since
        // the poll; the DONE flag is only set when the host consumes).
        let mut b = [0u8; MAX_SE_SIZE];
        let n = self.el.se_size as usize;
        self.mem.read(self.g.se(r.pos), &mut b[..n]);
        let se = self.el.decode_se(&b).unwrap();
        let se_ok = self.el.entry_crc_ok(&b, self.el.se_size);
        if !se_ok {
            if ce.result == 0 {
                violation(format!("tid {:#x}: SE fails its CRC, completed OK", r.tid));
            }
            return;
        }
        if ce.result != 0 {
            if self.strict && r.well_formed {
                let flush_after_crash =
                    se.op == op::FLUSH && self.crashed && ce.result == errno::EIO;
                // A payload that no longer matches its sealed CRC (flips may cancel out).
                let refused_payload = se.op == op::WRITE
                    && r.payload_corrupt
                    && self.el.data_crc
                    && se.len <= chan::MAX_IO
                    && {
                        let mut data = vec![0u8; se.len as usize];
                        copy_from_data(self.shm(), &self.g, se.data_off, &mut data).unwrap();
                        crc32(&data) != se.data_crc
                    };
                if !flush_after_crash && !refused_payload {
                    violation(format!("well-formed {se:?} failed with {}", ce.result));
                }
            }
            return;
        }
        self.apply_ok(&r, &se, ce);
    }

    /// An OK completion: it must be a legal request, and its effect goes into the model.
    fn apply_ok(&mut self, r: &Req, se: &Se, ce: &Ce) {
        let in_range = |off: u64, len: u32| {
            off.is_multiple_of(512)
                && len.is_multiple_of(512)
                && off
                    .checked_add(len as u64)
                    .is_some_and(|e| e <= DISK as u64)
        };
        let durable_ce = ce.flags & CE_FLAG_DURABLE != 0;
        if durable_ce && !self.durable {
            violation(format!("DURABLE CE flag without tokens: {se:?}"));
        }
        match se.op {
            op::WRITE | op::READ => {
                let io_ok = se.len > 0
                    && se.len <= chan::MAX_IO
                    && in_range(se.offset, se.len)
                    && (se.data_off as u64) < chan::DATA_SIZE
                    && se.data_len >= se.len
                    && se.data_len <= chan::MAX_IO;
                if !io_ok {
                    violation(format!("illegal {se:?} completed OK"));
                }
                let mut data = vec![0u8; se.len as usize];
                copy_from_data(self.shm(), &self.g, se.data_off, &mut data).unwrap();
                let range = se.offset as usize..se.offset as usize + se.len as usize;
                if se.op == op::WRITE {
                    if self.el.data_crc && crc32(&data) != se.data_crc {
                        violation(format!(
                            "WRITE tid {:#x} with a wrong data CRC completed OK",
                            r.tid
                        ));
                    }
                    self.model.disk[range.clone()].copy_from_slice(&data);
                    self.mark(range, durable_ce);
                } else {
                    if self.el.data_crc && crc32(&data) != ce.data_crc {
                        violation(format!("READ tid {:#x}: CE data CRC does not match", r.tid));
                    }
                    if self.strict && data[..] != self.model.disk[range] {
                        violation(format!("READ tid {:#x} {se:?} returned wrong data", r.tid));
                    }
                }
            }
            op::DISCARD | op::WRITE_ZEROES => {
                if !in_range(se.offset, se.len) {
                    violation(format!("illegal {se:?} completed OK"));
                }
                let range = se.offset as usize..se.offset as usize + se.len as usize;
                self.model.disk[range.clone()].fill(0);
                self.mark(range, durable_ce);
            }
            op::FLUSH => self.model.durable.fill(true),
            _ => violation(format!("unknown op {se:?} completed OK")),
        }
    }

    fn mark(&mut self, bytes: std::ops::Range<usize>, durable: bool) {
        for s in bytes.start / 512..bytes.end.div_ceil(512) {
            self.model.durable[s] = durable;
        }
    }

    fn consume(&mut self, n: u8) {
        for _ in 0..n.max(1) {
            let Some((pos, tid)) = self.unconsumed.pop_front() else {
                break;
            };
            if let Some(r) = self.q.iter_mut().find(|r| r.tid == tid && !r.consumed) {
                r.consumed = true;
                // DONE before compr_tail moves (the host engine's order).
                let fo = self.el.se_flags_off as u64;
                let mut b = [0u8; MAX_SE_SIZE];
                let n = self.el.se_size as usize;
                let at = self.g.se(r.pos);
                self.mem.read(at, &mut b[..n]);
                let flags = u32::from_le_bytes(b[fo as usize..fo as usize + 4].try_into().unwrap());
                b[fo as usize..fo as usize + 4]
                    .copy_from_slice(&(flags | SE_FLAG_DONE).to_le_bytes());
                // Re-seal only an SE that verified (a corrupted one stays corrupted).
                if self.el.entry_crc_ok(
                    &{
                        let mut c = b;
                        c[fo as usize..fo as usize + 4].copy_from_slice(&flags.to_le_bytes());
                        c
                    },
                    self.el.se_size,
                ) {
                    self.el.seal_se(&mut b);
                }
                self.mem.write(at, &b[..n]);
            }
            self.compr_tail = self.g.next_ce(pos);
        }
        while let Some(f) = self.q.front() {
            if !f.consumed {
                break;
            }
            self.tail = self.g.next_se(f.pos);
            self.data_tail += f.span as u64;
            self.q.pop_front();
        }
        self.publish_tails();
    }
}

fn build_cfg(nc: bool, durable: bool, batch: u32, takeover: bool) -> BackendConfig<'static> {
    BackendConfig {
        noncoherent: nc,
        batch,
        nc_retries: 8,
        takeover,
        durable: DurableConfig {
            offer: durable,
            ..DurableConfig::default()
        },
        ..BackendConfig::default()
    }
}

/// Run one input. Panics on a violation.
pub fn run(input: &Input) {
    let nc = input.mode >= 4;
    let flags = if nc {
        NC_FLAGS
    } else {
        (input.mode as u16 & 3) << 1
    };
    let mem = SparseMem::new(TransportInfo::region_for(1));
    let shm = Shm::new(&mem, &NO_TRACE);
    Transport::format(shm, flags, false, T0).unwrap();
    let tp = Transport::open(shm, false).unwrap();
    let g = ChannelGeom::new(tp.channel_base(0).unwrap(), flags, false);
    let batch = (input.batch as u32 % 16) + 1;
    // v3: the blkdev record carries the durability acceptance (read at start / RESET).
    if input.durable && !nc {
        let rec = BlkdevInfo {
            state: STATE_RUNNING,
            alive_ts: T0,
            backend_id: 0,
            host_id: 0,
            mapped_id: 0,
            features: features::DURABLE_TOKENS,
        };
        tp.write_blkdev(0, &rec).unwrap();
    }
    let mut scratch_buf = vec![0u8; chan::MAX_IO as usize];
    let mut staging_buf = vec![0u8; 256 << 10];
    let mut scratch: &mut [u8] = &mut scratch_buf;
    let mut staging: &mut [u8] = &mut staging_buf;
    let cfg = build_cfg(nc, input.durable, batch, false);
    let mut b = Backend::start(shm, cfg, VecMedia::new(DISK), scratch, T0).expect("fresh start");
    assert_eq!(b.channel_segments().next(), Some(0));
    if input.staging {
        b.set_staging(staging).unwrap();
    } else {
        let _ = &mut staging;
    }
    let data_base = (input.data_start as u64 * chan::DATA_ALIGN as u64) % chan::DATA_SIZE;
    let mut h = Harness {
        mem: &mem,
        g,
        el: g.el,
        nc,
        durable: input.durable,
        staging: input.staging,
        batch,
        now: T0,
        head: 0,
        tail: 0,
        compr_tail: 0,
        read_pos: 0,
        next_tid: 0,
        epoch: 0,
        base_tid: 0,
        data_head: data_base,
        data_tail: data_base,
        data_base,
        q: VecDeque::new(),
        unconsumed: VecDeque::new(),
        reset_pending: None,
        strict: true,
        stalled: false,
        hostile_ptr: false,
        records_corrupt: false,
        crashed: false,
        model: Model {
            disk: vec![0; DISK],
            durable: vec![true; SECTORS],
        },
    };
    if nc {
        // dev-start: the epoch RESET.
        h.reset();
        poll(&mut h, &mut b, 1);
        if h.reset_pending.is_some() {
            violation("the first non-coherent RESET was not answered".into());
        }
    }
    for a in input.actions.iter().take(MAX_ACTIONS) {
        match a {
            Action::Write { .. }
            | Action::Read { .. }
            | Action::Flush { .. }
            | Action::Zero { .. }
            | Action::Hostile { .. }
            | Action::Junk { .. } => h.submit(a),
            Action::Poll { tenth_ms } => poll(&mut h, &mut b, *tenth_ms as u64 * 100_000 + 1),
            Action::Consume { n } => h.consume(*n),
            Action::Reset => h.reset(),
            Action::CorruptSe { back, byte, xor } => {
                let Some(r) = h.q.iter().rev().nth(*back as usize % 4) else {
                    continue;
                };
                if *xor == 0 {
                    continue;
                }
                let at = h.g.se(r.pos) + (*byte as u64 % h.el.se_size as u64);
                let mut x = [0u8];
                mem.read(at, &mut x);
                mem.write(at, &[x[0] ^ xor]);
                // v3: a refused SE's tid (garbage) resets the tid expectation.
                // Non-coherent: the entry never verifies, the ring stalls there.
                if nc {
                    h.stalled = true;
                } else {
                    h.strict = false;
                }
            }
            Action::CorruptData { back, byte, xor } => {
                let Some(i) = (0..h.q.len())
                    .rev()
                    .filter(|&i| h.q[i].span > 0)
                    .nth(*back as usize % 4)
                else {
                    continue;
                };
                if *xor == 0 {
                    continue;
                }
                let r = &h.q[i];
                // Where the payload of this request lies (its SE as written).
                let mut sb = [0u8; MAX_SE_SIZE];
                mem.read(h.g.se(r.pos), &mut sb[..h.el.se_size as usize]);
                let se = h.el.decode_se(&sb).unwrap();
                if se.op != op::WRITE || r.completed || !r.well_formed {
                    continue;
                }
                let at = (se.data_off as u64 + (*byte as u64 % se.len as u64)) % chan::DATA_SIZE;
                let at = h.g.base + chan::DATA_OFF + at;
                let mut x = [0u8];
                mem.read(at, &mut x);
                mem.write(at, &[x[0] ^ xor]);
                h.q[i].payload_corrupt = true;
            }
            Action::CorruptCe { slot, byte, xor } => {
                let pos = (*slot as u32 % chan::COMPR_ENTRIES as u32) * h.el.ce_size;
                let at = h.g.ce(pos) + (*byte as u64 % h.el.ce_size as u64);
                let mut x = [0u8];
                mem.read(at, &mut x);
                mem.write(at, &[x[0] ^ xor]);
                // Only what a re-attach reads of it matters; nothing exact after that.
                h.strict = false;
            }
            Action::Pointer { which, value } => {
                let value = match value % 4 {
                    // A legal position (or a near miss) more often than pure noise.
                    0 => (value >> 2) % (2 * h.g.submr_size()),
                    1 => ((value >> 2) % 1024) * h.el.se_size,
                    _ => *value,
                };
                if h.nc {
                    let mut line = HostLine {
                        epoch: h.epoch,
                        submr_head: h.head,
                        submr_tail: h.tail,
                        compr_tail: h.compr_tail,
                        base_tid: h.base_tid,
                        tail_tid: h.q.front().map_or(h.next_tid, |r| r.tid),
                        features: if h.durable {
                            features::DURABLE_TOKENS as u32
                        } else {
                            0
                        },
                    };
                    match which % 3 {
                        0 => line.submr_head = value,
                        1 => line.submr_tail = value,
                        _ => line.compr_tail = value,
                    }
                    publish_line(h.shm(), h.g.host_line, &line.encode(), true).unwrap();
                } else {
                    let p =
                        [ctrl::SUBMR_HEAD, ctrl::SUBMR_TAIL, ctrl::COMPR_TAIL][*which as usize % 3];
                    mem.store_u32(h.g.ctrl(p), value);
                }
                h.hostile_ptr = true;
                h.strict = false;
                h.stalled = true;
            }
            Action::CorruptRecord { which, byte, xor } => {
                let info = tp.info;
                let base = match which % 4 {
                    0 => info.host_slot(0),
                    1 => info.backend_slot(0),
                    2 => info.blkdev_slot(0),
                    _ => info.segment_off(0),
                };
                let at = base + (*byte as u64 % (2 * PAGE as u64));
                let mut x = [0u8];
                mem.read(at, &mut x);
                mem.write(at, &[x[0] ^ xor]);
                h.records_corrupt = true;
                h.strict = false;
            }
            Action::Crash { takeover } => {
                let (media, sc, st) = b.into_parts_staged();
                scratch = sc;
                staging = st;
                // What was durable survives; the rest is whatever reached the media.
                for s in 0..SECTORS {
                    let r = s * 512..(s + 1) * 512;
                    if h.model.durable[s]
                        && h.strict
                        && media.data[r.clone()] != h.model.disk[r.clone()]
                    {
                        violation(format!("sector {s}, durable before the crash, lost"));
                    }
                }
                h.model.disk.copy_from_slice(&media.data);
                h.model.durable.fill(true);
                if !takeover {
                    h.now += 31 * SEC;
                }
                h.now += 1;
                let cfg = build_cfg(nc, input.durable, batch, *takeover);
                match Backend::start(shm, cfg, media, scratch, h.now) {
                    Ok(nb) => b = nb,
                    Err(e) => {
                        if h.strict
                            || !matches!(
                                e,
                                BackendError::BadPointer { .. }
                                    | BackendError::Mismatch
                                    | BackendError::Transport(_)
                            )
                        {
                            violation(format!("re-attach failed: {e:?}"));
                        }
                        // A refused re-attach is the end of this device.
                        return;
                    }
                }
                if input.staging {
                    b.set_staging(staging).unwrap();
                }
                h.crashed = true;
            }
            Action::Sleep { secs } => h.now += *secs as u64 * SEC,
        }
    }
    // ---- with nothing stalling the ring, every request completes.
    if h.strict && !h.stalled && h.ready() {
        for _ in 0..(MAX_DEPTH as u32 * 4 + 8) {
            h.consume(u8::MAX);
            if h.q.is_empty() {
                break;
            }
            poll(&mut h, &mut b, 1_000_000);
        }
        h.consume(u8::MAX);
        if !h.q.is_empty() {
            violation(format!(
                "{} requests never completed: {:?}",
                h.q.len(),
                h.q.front()
            ));
        }
    }
    // ---- the engine keeps serving: RESET, then a WRITE and a READ succeed.
    h.reset_pending = None;
    h.reset();
    for _ in 0..3 {
        poll(&mut h, &mut b, 1_000_000);
        if h.reset_pending.is_none() {
            break;
        }
    }
    if h.reset_pending.is_some() {
        violation("RESET not answered".into());
    }
    let strict = h.strict;
    h.strict = true;
    h.submit(&Action::Write {
        sector: 8,
        sectors: 7,
        intent: 0,
        fill: 0x5A,
    });
    h.submit(&Action::Read {
        sector: 8,
        sectors: 7,
    });
    for _ in 0..4 {
        poll(&mut h, &mut b, 1_000_000);
        h.consume(u8::MAX);
        if h.q.is_empty() {
            break;
        }
    }
    if !h.q.is_empty() {
        violation(format!("after RESET: {} requests not served", h.q.len()));
    }
    // ---- the media holds the model, once everything is written back.
    if strict && !h.records_corrupt {
        b.sync().expect("sync");
        if b.media().data != h.model.disk {
            violation("media differs from the model".into());
        }
    }
}

fn poll(h: &mut Harness<'_>, b: &mut Backend<'_, SparseMem, VecMedia>, dt: u64) {
    h.now += dt;
    match b.poll(h.now) {
        Ok(_) => {}
        Err(BackendError::Stale { .. }) if h.nc => {}
        Err(BackendError::BadPointer { .. }) if h.hostile_ptr => {}
        Err(BackendError::Transport(_) | BackendError::Mismatch) if h.records_corrupt => {}
        Err(e) => violation(format!("poll: {e:?}")),
    }
    h.check_reset_answer(&b.media().data);
    h.read_ces();
    if !h.staging && h.strict && b.pending_writes() == 0 && b.media().data != h.model.disk {
        violation("write-through media differs from the model".into());
    }
    let _ = h.batch;
}
