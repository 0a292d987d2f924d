//! The recorded history: operations, durability confirmations, crash points.

use std::fmt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Bytes per sector: every request's offset and length is a multiple of it.
pub const SECTOR: u64 = 512;
/// Bytes per block: the unit of atomicity the model promises (see `docs/consistency.md`).
pub const BLOCK: u64 = 4096;
/// Sectors per block.
pub const SECTORS_PER_BLOCK: usize = (BLOCK / SECTOR) as usize;
/// Largest request the data path makes (and this crate accepts).
pub const MAX_REQUEST: u32 = 1 << 20;

/// A content digest of one 512-byte sector.
pub type Digest = u64;

/// Digest of one sector (or of any byte string): a 64-bit word-wise mix with a final
/// avalanche. Not cryptographic; two different contents collide with probability ~2^-64.
/// Recorders must use this function (the text format's `z` stands for
/// `sector_digest(&[0; 512])`, the value WRITE_ZEROES writes).
pub fn sector_digest(data: &[u8]) -> Digest {
    let mut h: u64 = 0x243f_6a88_85a3_08d3 ^ data.len() as u64;
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_le_bytes(c.try_into().unwrap_or([0; 8]));
        h = (h.rotate_left(5) ^ w).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
    let mut tail = [0u8; 8];
    let rest = chunks.remainder();
    tail[..rest.len()].copy_from_slice(rest);
    h = (h.rotate_left(5) ^ u64::from_le_bytes(tail)).wrapping_mul(0x517c_c1b7_2722_0a95);
    // splitmix64 finaliser
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// The digest of a sector of zeroes (what WRITE_ZEROES, and DISCARD in
/// [`DiscardMode::Zeroes`], leave behind).
pub fn zero_digest() -> Digest {
    sector_digest(&[0u8; SECTOR as usize])
}

/// Digests of `data`, one per 512-byte sector (a short last piece gets its own digest).
pub fn digests(data: &[u8]) -> Vec<Digest> {
    data.chunks(SECTOR as usize).map(sector_digest).collect()
}

/// Identifies one operation within a history.
pub type OpId = u64;

/// The block operations of the CBD protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OpKind {
    Write,
    Read,
    Flush,
    Discard,
    WriteZeroes,
}

impl OpKind {
    /// Does it change media content?
    pub fn is_write_like(self) -> bool {
        matches!(self, OpKind::Write | OpKind::Discard | OpKind::WriteZeroes)
    }
    /// Does it carry a byte range?
    pub fn has_range(self) -> bool {
        !matches!(self, OpKind::Flush)
    }
    pub fn name(self) -> &'static str {
        match self {
            OpKind::Write => "write",
            OpKind::Read => "read",
            OpKind::Flush => "flush",
            OpKind::Discard => "discard",
            OpKind::WriteZeroes => "wzeroes",
        }
    }
}

/// How a completed operation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// A positive errno (`-result` of the CE).
    Err(i32),
}

/// One request, from the moment it was submitted to its completion.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Op {
    pub id: OpId,
    /// Channel (= queue) the request went through.
    pub chan: u16,
    /// The request's tid on its channel.
    pub tid: u64,
    pub kind: OpKind,
    /// Byte offset and length (multiples of 512, length ≤ 1 MiB; both 0 for FLUSH).
    pub offset: u64,
    pub len: u32,
    /// WRITE: the digest of every sector written (`len / 512` of them); empty otherwise.
    pub written: Vec<Digest>,
    /// READ that completed Ok: the digest of every sector read; empty otherwise.
    pub read: Vec<Digest>,
    /// Logical time stamped *before* the request could take effect (before submission).
    pub invoke: u64,
    /// Logical time stamped *after* the completion was seen, and how it ended;
    /// `None` = never completed (still in flight at the end, or lost in a crash).
    pub complete: Option<(u64, Outcome)>,
    /// The completion carried the DURABLE flag (CRITICAL write, FLUSH with tokens).
    pub durable: bool,
}

impl Op {
    /// Completed with Ok.
    pub fn ok(&self) -> bool {
        matches!(self.complete, Some((_, Outcome::Ok)))
    }
    /// Completion time, if any.
    pub fn completed_at(&self) -> Option<u64> {
        self.complete.map(|(t, _)| t)
    }
    /// First sector and number of sectors.
    pub fn sectors(&self) -> (u64, u64) {
        (self.offset / SECTOR, self.len as u64 / SECTOR)
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "#{} {} ch{} tid {}",
            self.id,
            self.kind.name(),
            self.chan,
            self.tid
        )?;
        if self.kind.has_range() {
            write!(f, " [{:#x}, +{})", self.offset, self.len)?;
        }
        write!(f, " invoked t={}", self.invoke)?;
        match self.complete {
            None => write!(f, ", never completed"),
            Some((t, Outcome::Ok)) => {
                write!(f, ", completed t={t} ok")?;
                if self.durable {
                    write!(f, " DURABLE")?;
                }
                Ok(())
            }
            Some((t, Outcome::Err(e))) => write!(f, ", completed t={t} errno {e}"),
        }
    }
}

/// The device's durable watermark on a channel as seen by the host at `t`: every
/// write-like request of `chan` with tid < `tid` is durable (exclusive, as on the wire).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Watermark {
    pub t: u64,
    pub chan: u16,
    pub tid: u64,
}

/// One durability token confirmed at `t` (request `tid` of `chan` is durable).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Confirm {
    pub t: u64,
    pub chan: u16,
    pub tid: u64,
}

/// A contiguous piece of the media read back after a crash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MediaRange {
    /// Byte offset (multiple of 512); one digest per sector from there.
    pub offset: u64,
    pub digests: Vec<Digest>,
}

/// The device crashed at `t` (power loss, kill). `media` is what the media held
/// afterwards, read back before the device came up again (it may cover only part of
/// the disk). Requests in flight at `t` may take effect before it, after it (the
/// restarted device executes them) or never.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Crash {
    pub t: u64,
    pub media: Vec<MediaRange>,
}

/// Where the history was recorded, which decides the ordering promise checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    /// At the CBD ring (host engine): per channel, requests take effect and complete
    /// in submission order.
    Cbd,
    /// Above the block layer (ublk, a program in the guest): no order among requests
    /// in flight together.
    Linux,
}

/// What the media holds before the first operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Initial {
    /// Every sector is zero.
    Zero,
    /// Unknown: the first read of a sector fixes it.
    Unknown,
}

/// What a DISCARD leaves behind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiscardMode {
    /// Zeroes (cbdfw's media: DISCARD is WRITE_ZEROES).
    Zeroes,
    /// Anything, until the next write (what Linux promises for a plain discard).
    Undefined,
}

/// Properties of the whole history.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub level: Level,
    pub initial: Initial,
    pub discard: DiscardMode,
}

impl Default for Header {
    fn default() -> Self {
        Header {
            level: Level::Cbd,
            initial: Initial::Zero,
            discard: DiscardMode::Zeroes,
        }
    }
}

/// A recorded history.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct History {
    pub header: Header,
    pub ops: Vec<Op>,
    pub watermarks: Vec<Watermark>,
    pub confirms: Vec<Confirm>,
    pub crashes: Vec<Crash>,
}

/// A history that is not well formed (or text that does not parse).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryError {
    /// 1-based line of the text, when parsing.
    pub line: Option<usize>,
    pub msg: String,
}

impl HistoryError {
    pub(crate) fn new(msg: impl Into<String>) -> Self {
        HistoryError {
            line: None,
            msg: msg.into(),
        }
    }
}

impl fmt::Display for HistoryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(l) => write!(f, "line {l}: {}", self.msg),
            None => write!(f, "{}", self.msg),
        }
    }
}

impl std::error::Error for HistoryError {}

impl History {
    pub fn new(header: Header) -> Self {
        History {
            header,
            ..Default::default()
        }
    }

    /// Checks that the history is well formed: unique ids, aligned ranges of at most
    /// 1 MiB, one digest per sector where data is carried, completions not before
    /// invocations, crash points in time order with aligned, non-overlapping media.
    pub fn validate(&self) -> Result<(), HistoryError> {
        let mut ids = std::collections::HashSet::new();
        for op in &self.ops {
            let bad = |m: &str| Err(HistoryError::new(format!("op #{}: {m}", op.id)));
            if !ids.insert(op.id) {
                return bad("duplicate id");
            }
            if op.kind.has_range() {
                if !op.offset.is_multiple_of(SECTOR) || !(op.len as u64).is_multiple_of(SECTOR) {
                    return bad("offset and length must be multiples of 512");
                }
                if op.len == 0 || op.len > MAX_REQUEST {
                    return bad("length must be 512 B .. 1 MiB");
                }
                if op.offset.checked_add(op.len as u64).is_none() {
                    return bad("range overflows");
                }
            }
            let n = (op.len as u64 / SECTOR) as usize;
            match op.kind {
                OpKind::Write if op.written.len() != n => {
                    return bad(&format!(
                        "write of {} sectors carries {} digests",
                        n,
                        op.written.len()
                    ));
                }
                OpKind::Read if op.ok() && op.read.len() != n => {
                    return bad(&format!(
                        "read of {} sectors returned {} digests",
                        n,
                        op.read.len()
                    ));
                }
                OpKind::Read if !op.ok() && !op.read.is_empty() => {
                    return bad("a read that did not complete ok carries data");
                }
                _ => {}
            }
            if op.kind != OpKind::Write && !op.written.is_empty() {
                return bad("only a write carries written data");
            }
            if op.kind != OpKind::Read && !op.read.is_empty() {
                return bad("only a read carries read data");
            }
            if let Some((t, _)) = op.complete
                && t < op.invoke
            {
                return bad("completed before it was invoked");
            }
            if op.durable && !op.ok() {
                return bad("DURABLE on a completion that is not ok");
            }
        }
        let mut last = None;
        for c in &self.crashes {
            if last.is_some_and(|l| c.t <= l) {
                return Err(HistoryError::new(format!(
                    "crash t={} not after the previous",
                    c.t
                )));
            }
            last = Some(c.t);
            let mut ranges: Vec<(u64, u64)> = Vec::new();
            for m in &c.media {
                if !m.offset.is_multiple_of(SECTOR) {
                    return Err(HistoryError::new(format!(
                        "crash t={}: media offset {:#x} not a multiple of 512",
                        c.t, m.offset
                    )));
                }
                let end = m.offset + m.digests.len() as u64 * SECTOR;
                if ranges.iter().any(|&(a, b)| m.offset < b && a < end) {
                    return Err(HistoryError::new(format!(
                        "crash t={}: media ranges overlap at {:#x}",
                        c.t, m.offset
                    )));
                }
                ranges.push((m.offset, end));
            }
        }
        Ok(())
    }

    pub fn op(&self, id: OpId) -> Option<&Op> {
        self.ops.iter().find(|o| o.id == id)
    }
}

/// Records a history while a workload runs, from any number of threads, with a logical
/// clock. The rule that makes the record meaningful: call [`Recorder::invoke`] *before*
/// the request is submitted (before it can take effect) and [`Recorder::complete`]
/// *after* its completion was seen; record a watermark or confirmation after the host
/// saw it, a crash after the device is dead and before anything reads its media.
pub struct Recorder {
    clock: AtomicU64,
    next_id: AtomicU64,
    inner: Mutex<History>,
}

impl Recorder {
    pub fn new(header: Header) -> Self {
        Recorder {
            clock: AtomicU64::new(1),
            next_id: AtomicU64::new(0),
            inner: Mutex::new(History::new(header)),
        }
    }

    /// The next logical timestamp.
    pub fn tick(&self) -> u64 {
        self.clock.fetch_add(1, Ordering::SeqCst)
    }

    fn with<R>(&self, f: impl FnOnce(&mut History) -> R) -> R {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut g)
    }

    /// A request is about to be submitted. `data` = the payload of a WRITE.
    pub fn invoke(
        &self,
        chan: u16,
        tid: u64,
        kind: OpKind,
        offset: u64,
        len: u32,
        data: Option<&[u8]>,
    ) -> OpId {
        let written = match (kind, data) {
            (OpKind::Write, Some(d)) => digests(d),
            _ => Vec::new(),
        };
        self.invoke_digests(chan, tid, kind, offset, len, written)
    }

    /// [`Recorder::invoke`] with the write's sector digests already computed.
    pub fn invoke_digests(
        &self,
        chan: u16,
        tid: u64,
        kind: OpKind,
        offset: u64,
        len: u32,
        written: Vec<Digest>,
    ) -> OpId {
        let invoke = self.tick();
        self.invoke_at(invoke, chan, tid, kind, offset, len, written)
    }

    /// A request stamped `invoke` ([`Recorder::tick`], taken before its submission: a
    /// device running concurrently may execute it before the submission call returns
    /// its tid) was submitted as `tid`.
    #[allow(clippy::too_many_arguments)]
    pub fn invoke_at(
        &self,
        invoke: u64,
        chan: u16,
        tid: u64,
        kind: OpKind,
        offset: u64,
        len: u32,
        written: Vec<Digest>,
    ) -> OpId {
        let id = self.next_id.fetch_add(1, Ordering::SeqCst);
        self.with(|h| {
            h.ops.push(Op {
                id,
                chan,
                tid,
                kind,
                offset,
                len,
                written,
                read: Vec::new(),
                invoke,
                complete: None,
                durable: false,
            })
        });
        id
    }

    /// The completion of `id` was seen. `data` = what a READ returned.
    pub fn complete(&self, id: OpId, outcome: Outcome, data: Option<&[u8]>, durable: bool) {
        let read = match (outcome, data) {
            (Outcome::Ok, Some(d)) => digests(d),
            _ => Vec::new(),
        };
        self.complete_digests(id, outcome, read, durable)
    }

    /// [`Recorder::complete`] with the read's digests already computed.
    pub fn complete_digests(&self, id: OpId, outcome: Outcome, read: Vec<Digest>, durable: bool) {
        let t = self.tick();
        self.with(|h| {
            if let Some(op) = h.ops.iter_mut().rev().find(|o| o.id == id) {
                op.complete = Some((t, outcome));
                op.read = read;
                op.durable = durable;
            } else {
                log::warn!("history: completion of unknown op #{id} ignored");
            }
        })
    }

    /// The host saw the durable watermark of `chan` at `tid` (exclusive).
    pub fn watermark(&self, chan: u16, tid: u64) {
        let t = self.tick();
        self.with(|h| h.watermarks.push(Watermark { t, chan, tid }))
    }

    /// The host saw token `tid` of `chan` confirmed durable.
    pub fn confirm(&self, chan: u16, tid: u64) {
        let t = self.tick();
        self.with(|h| h.confirms.push(Confirm { t, chan, tid }))
    }

    /// The device is dead. Returns the crash's time.
    pub fn crash(&self) -> u64 {
        let t = self.tick();
        self.with(|h| {
            h.crashes.push(Crash {
                t,
                media: Vec::new(),
            })
        });
        t
    }

    /// Media content read back after the last crash (call after [`Recorder::crash`]).
    pub fn media(&self, offset: u64, data: &[u8]) {
        self.media_digests(offset, digests(data))
    }

    /// [`Recorder::media`] with digests already computed.
    pub fn media_digests(&self, offset: u64, digests: Vec<Digest>) {
        self.with(|h| match h.crashes.last_mut() {
            Some(c) => c.media.push(MediaRange { offset, digests }),
            None => log::warn!("history: media read-back without a crash ignored"),
        })
    }

    /// A copy of what was recorded so far.
    pub fn snapshot(&self) -> History {
        self.with(|h| h.clone())
    }

    pub fn into_history(self) -> History {
        self.inner.into_inner().unwrap_or_else(|e| e.into_inner())
    }
}
