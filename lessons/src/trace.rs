//! The lessons' protocol trace: every [`TraceEvent`] of both engines (the project's
//! trace facility, `device::trace`), tagged with who emitted it, plus the fences
//! (which `Shm` does not trace) and the harness's own notes; printed in plain words,
//! with region offsets named (`chan 0 CE ring +0x30`) and idle polling folded.

use device::layout::{SEGMENT_SIZE, chan, ctrl};
use device::shm::SharedMem;
use device::trace::{CopyDir, Pointer, RecordKind, Reject, TraceEvent, Tracer};
use std::collections::VecDeque;
use std::sync::Mutex;

/// Who did it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Who {
    Host,
    Device,
    /// The lesson's harness (submissions, crashes, what the host learnt).
    Harness,
}

impl Who {
    fn name(self) -> &'static str {
        match self {
            Who::Host => "host",
            Who::Device => "device",
            Who::Harness => "--",
        }
    }
}

/// One line of the trace.
#[derive(Clone, Debug, PartialEq)]
pub enum Entry {
    Proto(TraceEvent),
    /// `store_fence` (false) or `full_fence` (true).
    Fence(bool),
    Note(String),
}

/// An entry with its sequence number and author.
#[derive(Clone, Debug, PartialEq)]
pub struct Line {
    pub seq: u64,
    pub who: Who,
    pub entry: Entry,
}

impl Line {
    /// The request this line concerns, if any: (channel, req_tid).
    pub fn request(&self) -> Option<(u32, u64)> {
        match self.entry {
            Entry::Proto(
                TraceEvent::SeSeen { chan, req_tid, .. }
                | TraceEvent::SeSkipped { chan, req_tid, .. }
                | TraceEvent::SePosted { chan, req_tid, .. }
                | TraceEvent::CePosted { chan, req_tid, .. }
                | TraceEvent::CeConsumed { chan, req_tid, .. },
            ) => Some((chan, req_tid)),
            _ => None,
        }
    }
}

struct Inner {
    seq: u64,
    /// The last `cap` lines, everything.
    ring: VecDeque<Line>,
    cap: usize,
    /// Request-level lines of the whole run (entries, media ops, rejections, notes),
    /// for the story of a checker's counter-example.
    story: Vec<Line>,
    /// A failure was noted: what follows is not shown.
    frozen: bool,
}

/// The shared log both engines' tracers write to.
pub struct TraceLog {
    inner: Mutex<Inner>,
}

impl TraceLog {
    pub fn new(cap: usize) -> Self {
        Self {
            inner: Mutex::new(Inner {
                seq: 0,
                ring: VecDeque::with_capacity(cap.min(1 << 16)),
                cap,
                story: Vec::new(),
                frozen: false,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn push(&self, who: Who, entry: Entry) {
        let mut g = self.lock();
        if g.frozen {
            return;
        }
        g.seq += 1;
        let line = Line {
            seq: g.seq,
            who,
            entry,
        };
        let story = matches!(
            line.entry,
            Entry::Note(_)
                | Entry::Proto(
                    TraceEvent::SeSeen { .. }
                        | TraceEvent::SePosted { .. }
                        | TraceEvent::CePosted { .. }
                        | TraceEvent::CeConsumed { .. }
                        | TraceEvent::Rejected { .. }
                        | TraceEvent::DataCopied { .. }
                        | TraceEvent::MediaOp { .. }
                        | TraceEvent::Reattached { .. }
                )
        );
        if story {
            g.story.push(line.clone());
        }
        if g.ring.len() == g.cap {
            g.ring.pop_front();
        }
        g.ring.push_back(line);
    }

    pub fn note(&self, text: impl Into<String>) {
        self.push(Who::Harness, Entry::Note(text.into()));
    }

    /// Note the failure (`!! what`) and stop recording: the trace ends there.
    pub fn failure(&self, what: &str) {
        self.note(format!("!! {what}"));
        self.lock().frozen = true;
    }

    /// The sequence number of the last line.
    pub fn seq(&self) -> u64 {
        self.lock().seq
    }

    /// The last `n` lines.
    pub fn tail(&self, n: usize) -> Vec<Line> {
        let g = self.lock();
        g.ring
            .iter()
            .skip(g.ring.len().saturating_sub(n))
            .cloned()
            .collect()
    }

    /// The request-level lines of the whole run.
    pub fn story(&self) -> Vec<Line> {
        self.lock().story.clone()
    }

    /// A tracer for one engine.
    pub fn tap(&self, who: Who) -> Tap<'_> {
        Tap { log: self, who }
    }
}

/// One engine's [`Tracer`] into the [`TraceLog`].
pub struct Tap<'a> {
    log: &'a TraceLog,
    who: Who,
}

impl Tracer for Tap<'_> {
    fn event(&self, ev: &TraceEvent) {
        self.log.push(self.who, Entry::Proto(*ev));
    }
}

/// A [`SharedMem`] that forwards to another and logs its fences (`Shm` traces
/// write-backs and invalidations, not fences).
pub struct Fenced<'a, M: SharedMem> {
    pub mem: M,
    pub log: &'a TraceLog,
    pub who: Who,
}

impl<M: SharedMem> SharedMem for Fenced<'_, M> {
    fn size(&self) -> u64 {
        self.mem.size()
    }
    fn read(&self, off: u64, buf: &mut [u8]) {
        self.mem.read(off, buf)
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
        self.mem.store_fence();
        self.log.push(self.who, Entry::Fence(false));
    }
    fn full_fence(&self) {
        self.mem.full_fence();
        self.log.push(self.who, Entry::Fence(true));
    }
}

/// Names region offsets: which channel, which part of its segment.
#[derive(Clone, Debug, Default)]
pub struct RegionMap {
    /// (channel index, segment base, SE ring offset in the segment, SE size, CE size)
    chans: Vec<(u32, u64, u64, u32, u32)>,
}

impl RegionMap {
    pub fn add_channel(&mut self, idx: u32, g: &device::channel::ChannelGeom) {
        self.chans
            .push((idx, g.base, g.el.submr_off(), g.el.se_size, g.el.ce_size));
    }

    /// Is `off` in one of the channels' segments?
    pub fn in_channel(&self, off: u64) -> bool {
        self.chans
            .iter()
            .any(|c| off >= c.1 && off < c.1 + SEGMENT_SIZE)
    }

    /// `off..off+len` in words: `chan 0 CE ring +0x30 (CE 2)`.
    pub fn name(&self, off: u64, len: u64) -> String {
        let Some(&(idx, base, submr, se, ce)) = self
            .chans
            .iter()
            .find(|c| off >= c.1 && off < c.1 + SEGMENT_SIZE)
        else {
            return format!("records/transport {off:#x} +{len}");
        };
        let rel = off - base;
        let c = chan::CTRL_OFF;
        let what = if rel < c {
            format!("segment info +{rel:#x}")
        } else if rel < c + 0x100 {
            "v3 control".into()
        } else if rel < c + ctrl::NC_DEV_LINE {
            "HOST line".into()
        } else if rel < c + ctrl::DUR_DEV_LINE {
            "DEVICE line".into()
        } else if rel < c + ctrl::DUR_HOST_LINE {
            "durability device line".into()
        } else if rel < chan::COMPR_OFF {
            "durability host line".into()
        } else if rel < submr {
            let r = rel - chan::COMPR_OFF;
            format!("CE ring +{r:#x} (CE {})", r / ce as u64)
        } else if rel < chan::DATA_OFF {
            let r = rel - submr;
            let (a, b) = (r / se as u64, (r + len.max(1) - 1) / se as u64);
            if a == b {
                format!("SE ring +{r:#x} (SE {a})")
            } else {
                format!("SE ring +{r:#x} (SEs {a}-{b})")
            }
        } else {
            format!("data area +{:#x}", rel - chan::DATA_OFF)
        };
        if len > 64 {
            format!("chan {idx} {what}, {len} B")
        } else {
            format!("chan {idx} {what}")
        }
    }
}

/// Record upkeep rather than the ring protocol: record writes, heartbeats and the
/// cache operations on the record areas (shown only with `--verbose`).
pub fn is_housekeeping(l: &Line, map: &RegionMap) -> bool {
    use TraceEvent as E;
    match l.entry {
        Entry::Proto(E::RecordWritten { .. } | E::RecordCleared { .. } | E::Heartbeat { .. }) => {
            true
        }
        Entry::Proto(E::WrittenBack { off, .. } | E::Invalidated { off, .. }) => {
            !map.in_channel(off)
        }
        _ => false,
    }
}

/// `lines` without record upkeep (unless `keep`), and without the fences that
/// followed upkeep.
pub fn without_housekeeping(lines: Vec<Line>, map: &RegionMap, keep: bool) -> Vec<Line> {
    if keep {
        return lines;
    }
    let mut after_upkeep = [false; 3];
    let mut out = Vec::with_capacity(lines.len());
    for l in lines {
        let who = l.who as usize;
        if is_housekeeping(&l, map) {
            after_upkeep[who] = true;
        } else if matches!(l.entry, Entry::Fence(_)) && after_upkeep[who] {
            // the fence that closes a record write
        } else {
            after_upkeep[who] = false;
            out.push(l);
        }
    }
    out
}

/// A req_tid as `epoch:n` (tids are `epoch << 32 | n` in non-coherent mode).
pub fn tid(t: u64) -> String {
    if t >> 32 != 0 {
        format!("{}:{}", t >> 32, t & 0xFFFF_FFFF)
    } else {
        t.to_string()
    }
}

fn op_name(op: u32) -> String {
    match op {
        0 => "WRITE".into(),
        1 => "READ".into(),
        2 => "FLUSH".into(),
        3 => "DISCARD".into(),
        4 => "WRITE_ZEROES".into(),
        x => format!("op {x}"),
    }
}

fn reject_name(r: Reject) -> &'static str {
    match r {
        Reject::SeCrc => "SE CRC does not verify (stale or torn entry)",
        Reject::DataCrc => "payload CRC does not verify (payload not landed yet)",
        Reject::CeCrc => "CE CRC does not verify (stale or torn entry)",
        Reject::Tid => "unexpected req_tid (stale or out-of-sequence entry)",
        Reject::BadOp => "bad op",
        Reject::BadRange => "bad range",
        Reject::BadDataArea => "bad data area",
        Reject::StaleAfterRetries => "never became valid: re-reads exhausted",
    }
}

fn result(r: i32) -> String {
    match r {
        0 => "ok".into(),
        -5 => "-EIO".into(),
        -22 => "-EINVAL".into(),
        -74 => "-EBADMSG".into(),
        -95 => "-EOPNOTSUPP".into(),
        x => x.to_string(),
    }
}

/// One entry in words.
pub fn describe(e: &Entry, map: &RegionMap) -> String {
    use TraceEvent as E;
    let ev = match e {
        Entry::Note(s) => return s.clone(),
        Entry::Fence(false) => return "store fence".into(),
        Entry::Fence(true) => return "full fence".into(),
        Entry::Proto(ev) => ev,
    };
    match *ev {
        E::SeSeen {
            chan,
            pos,
            req_tid,
            op,
            ..
        } => format!(
            "read SE    chan {chan} pos {pos:#x}: tid {} {}",
            tid(req_tid),
            op_name(op)
        ),
        E::SeSkipped { chan, pos, req_tid } => {
            format!(
                "skipped SE chan {chan} pos {pos:#x}: tid {} (DONE)",
                tid(req_tid)
            )
        }
        E::Rejected { chan, pos, why } => {
            format!("REJECTED   chan {chan} pos {pos:#x}: {}", reject_name(why))
        }
        E::DataCopied {
            chan,
            dir,
            data_off,
            len,
        } => match dir {
            CopyDir::FromShared => {
                format!("copied     {len} B out of chan {chan} data +{data_off:#x}")
            }
            CopyDir::ToShared => format!("copied     {len} B into chan {chan} data +{data_off:#x}"),
        },
        E::MediaOp {
            op,
            offset,
            len,
            result: r,
            ..
        } => format!(
            "media      {} {offset:#x} +{len}: {}",
            op_name(op),
            result(r)
        ),
        E::CePosted {
            chan,
            pos,
            req_tid,
            result: r,
        } => format!(
            "posted CE  chan {chan} pos {pos:#x}: tid {} {}",
            tid(req_tid),
            result(r)
        ),
        E::CeConsumed {
            chan,
            pos,
            req_tid,
            result: r,
        } => format!(
            "took CE    chan {chan} pos {pos:#x}: tid {} {}",
            tid(req_tid),
            result(r)
        ),
        E::SePosted {
            chan,
            pos,
            req_tid,
            op,
        } => format!(
            "posted SE  chan {chan} pos {pos:#x}: tid {} {}",
            tid(req_tid),
            op_name(op)
        ),
        E::PointerPublished { chan, which, value } => {
            let w = match which {
                Pointer::SubmrHead => "submr_head",
                Pointer::SubmrTail => "submr_tail",
                Pointer::ComprHead => "compr_head",
                Pointer::ComprTail => "compr_tail",
                Pointer::HostLine => "host line, submr_head",
                Pointer::DevLine => "device line, compr_head",
            };
            format!("published  chan {chan} {w} = {value:#x}")
        }
        E::WrittenBack { off, len } => format!("write-back {}", map.name(off, len)),
        E::Invalidated { off, len } => format!("invalidate {}", map.name(off, len)),
        E::RecordWritten {
            kind,
            id,
            copy,
            seq,
            ..
        } => format!("record     {} {id} copy {copy} seq {seq}", kind_name(kind)),
        E::RecordCleared { kind, id } => format!("cleared    {} {id}", kind_name(kind)),
        E::Heartbeat { kind, id, .. } => format!("heartbeat  {} {id}", kind_name(kind)),
        E::MgmtCommand { chan, cmd_seq, .. } => format!("RESET cmd  chan {chan} (#{cmd_seq})"),
        E::MgmtAnswered { chan, cmd_seq, ret } => {
            format!("RESET ret  chan {chan} (#{cmd_seq}): {ret}")
        }
        E::ChannelProvisioned { chan, seg_id } => {
            format!("provisioned chan {chan} (segment {seg_id})")
        }
        E::Reattached { chan, cursor } => format!("re-attached chan {chan} at {cursor:#x}"),
    }
}

fn kind_name(k: RecordKind) -> &'static str {
    match k {
        RecordKind::Transport => "transport",
        RecordKind::Host => "host",
        RecordKind::Backend => "backend",
        RecordKind::Blkdev => "blkdev",
        RecordKind::Segment => "segment",
        RecordKind::MgmtCmd => "mgmt cmd",
        RecordKind::MgmtRet => "mgmt ret",
    }
}

/// Render lines, folding a block of up to 6 lines that repeats 3 times or more
/// (the idle polling of an engine that waits) into one block with its count; the
/// last `max_lines` printed lines.
pub fn render(lines: &[Line], map: &RegionMap, max_lines: usize) -> Vec<String> {
    let keys: Vec<(Who, String)> = lines
        .iter()
        .map(|l| (l.who, describe(&l.entry, map)))
        .collect();
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    'next: while i < lines.len() {
        for p in 1..=6usize {
            if i + 3 * p > lines.len() {
                break;
            }
            let mut reps = 1;
            while i + (reps + 1) * p <= lines.len()
                && keys[i + reps * p..i + (reps + 1) * p] == keys[i..i + p]
            {
                reps += 1;
            }
            if reps >= 3 {
                for j in 0..p {
                    let mark = match (p, j) {
                        (1, _) => format!("   (x{reps})"),
                        (_, 0) => "   ┐".to_string(),
                        (_, j) if j == p - 1 => format!("   ┘ x{reps}"),
                        _ => "   │".to_string(),
                    };
                    out.push(fmt_line(lines[i + j].seq, &keys[i + j], &mark));
                }
                i += reps * p;
                continue 'next;
            }
        }
        out.push(fmt_line(lines[i].seq, &keys[i], ""));
        i += 1;
    }
    let skip = out.len().saturating_sub(max_lines);
    out.split_off(skip)
}

fn fmt_line(seq: u64, k: &(Who, String), mark: &str) -> String {
    format!("  #{seq:<7} {:<6} {}{mark}", k.0.name(), k.1)
}
