//! The checker: per-block linearizability (with crash points as rollbacks bounded by
//! the durable floor), per-channel order, and explanations of what went wrong.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::time::{Duration, Instant};

use crate::model::*;

/// The rule a counter-example breaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Rule {
    /// A read returned a value that a write completed before the read began had
    /// already overwritten (linearizability of the block as a register).
    StaleRead,
    /// A read (or the media after a crash) holds a value no write ever wrote there,
    /// nor the initial content.
    NeverWritten,
    /// A read (or the media after a crash) holds a value written only by a write
    /// invoked after the read completed (after the crash).
    FutureRead,
    /// One read (or the media after a crash) shows two overlapping writes mixed
    /// inside one 4 KiB block: block atomicity.
    TornBlock,
    /// No linearization of the block's operations explains what was read (a case the
    /// single-read rules above do not name, e.g. two reads seeing values in an order
    /// no write order gives).
    NotLinearizable,
    /// Requests on one channel completed, or took effect, out of submission order
    /// (checked at the CBD level only).
    ChannelOrder,
    /// After a crash the media lost a write that had been confirmed durable
    /// (DURABLE completion, watermark, token, or a FLUSH invoked after it completed).
    LostDurable,
}

impl Rule {
    /// The stable short name used in messages and by the tests.
    pub fn name(self) -> &'static str {
        match self {
            Rule::StaleRead => "stale-read",
            Rule::NeverWritten => "never-written",
            Rule::FutureRead => "future-read",
            Rule::TornBlock => "torn-block",
            Rule::NotLinearizable => "not-linearizable",
            Rule::ChannelOrder => "channel-order",
            Rule::LostDurable => "lost-durable",
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A minimal counter-example, explained in words.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub rule: Rule,
    /// The 4 KiB block (byte offset / 4096), if the rule is about one block.
    pub block: Option<u64>,
    /// The absolute 512-byte sector, when one sector shows it.
    pub sector: Option<u64>,
    /// The operations of the counter-example.
    pub ops: Vec<OpId>,
    /// The crash point involved (its time), if any.
    pub crash: Option<u64>,
    /// What happened and why it breaks the rule, several lines.
    pub explanation: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "violation of {}: {}", self.rule, self.explanation)
    }
}

/// Why a history was not accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckError {
    /// The history is not well formed.
    Invalid(HistoryError),
    /// The history breaks the model.
    Violation(Box<Violation>),
    /// The search for one block exceeded [`CheckOptions::max_states`].
    Undecided { block: u64, states: u64 },
}

impl CheckError {
    pub fn rule(&self) -> Option<Rule> {
        match self {
            CheckError::Violation(v) => Some(v.rule),
            _ => None,
        }
    }
    pub fn violation(&self) -> Option<&Violation> {
        match self {
            CheckError::Violation(v) => Some(v),
            _ => None,
        }
    }
}

impl fmt::Display for CheckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckError::Invalid(e) => write!(f, "invalid history: {e}"),
            CheckError::Violation(v) => v.fmt(f),
            CheckError::Undecided { block, states } => {
                write!(
                    f,
                    "undecided: block {block} needed more than {states} search states"
                )
            }
        }
    }
}

impl std::error::Error for CheckError {}

/// Knobs of [`check_with`].
#[derive(Clone, Copy, Debug)]
pub struct CheckOptions {
    /// Enforce per-channel submission order; `None` = from the history's level
    /// (on for [`Level::Cbd`], off for [`Level::Linux`]).
    pub channel_fifo: Option<bool>,
    /// Search budget per block (memoised states); exceeded = [`CheckError::Undecided`].
    pub max_states: u64,
    /// Shrink a search failure to a minimal set of operations (costs a few searches).
    pub minimize: bool,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            channel_fifo: None,
            max_states: 2_000_000,
            minimize: true,
        }
    }
}

/// What an accepted history contained.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub ops: usize,
    /// Distinct 4 KiB blocks touched.
    pub blocks: usize,
    /// Per-block pieces of operations searched (a 1 MiB request is 256).
    pub block_ops: usize,
    /// The largest single block's history.
    pub max_block_ops: usize,
    pub reads: usize,
    pub writes: usize,
    pub flushes: usize,
    pub crashes: usize,
    /// Write-like requests confirmed durable (any way) before the next crash.
    pub durable_writes: usize,
    /// Memoised search states over all blocks.
    pub states: u64,
    pub channel_fifo: bool,
    pub elapsed: Duration,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ok: {} ops ({} writes, {} reads, {} flushes), {} blocks, {} block ops (max {} in one block), \
             {} crashes, {} writes confirmed durable, {} states, channel order {}, {:.3} s",
            self.ops,
            self.writes,
            self.reads,
            self.flushes,
            self.blocks,
            self.block_ops,
            self.max_block_ops,
            self.crashes,
            self.durable_writes,
            self.states,
            if self.channel_fifo {
                "checked"
            } else {
                "not promised"
            },
            self.elapsed.as_secs_f64()
        )
    }
}

/// Checks a history with the default options.
pub fn check(h: &History) -> Result<Summary, CheckError> {
    check_with(h, &CheckOptions::default())
}

// ---------------------------------------------------------------------------------
// Durability confirmations

#[derive(Clone, Copy, Debug)]
enum Why {
    Flag(u64),
    Watermark { t: u64, chan: u16, tid: u64 },
    Confirm { t: u64 },
    Flush { id: OpId, t: u64 },
}

impl Why {
    fn t(self) -> u64 {
        match self {
            Why::Flag(t) | Why::Confirm { t } => t,
            Why::Watermark { t, .. } | Why::Flush { t, .. } => t,
        }
    }
    fn words(self) -> String {
        match self {
            Why::Flag(t) => format!("its completion carried DURABLE (t={t})"),
            Why::Watermark { t, chan, tid } => {
                format!("the durable watermark of ch{chan} reached tid {tid} at t={t}")
            }
            Why::Confirm { t } => format!("its token was confirmed at t={t}"),
            Why::Flush { id, t } => {
                format!("FLUSH #{id}, invoked after it completed, completed ok at t={t}")
            }
        }
    }
}

/// The next crash strictly after `t` (u64::MAX if none).
fn next_crash(crashes: &[u64], t: u64) -> u64 {
    let i = crashes.partition_point(|&c| c <= t);
    crashes.get(i).copied().unwrap_or(u64::MAX)
}

/// The last crash strictly before `t` (None if none).
fn prev_crash(crashes: &[u64], t: u64) -> Option<u64> {
    let i = crashes.partition_point(|&c| c < t);
    if i == 0 { None } else { Some(crashes[i - 1]) }
}

fn durability(h: &History, crashes: &[u64]) -> Vec<Option<Why>> {
    let mut flushes: Vec<(u64, u64, OpId)> = h
        .ops
        .iter()
        .filter(|o| o.kind == OpKind::Flush && o.ok())
        .map(|o| (o.invoke, o.completed_at().unwrap_or(u64::MAX), o.id))
        .collect();
    flushes.sort();
    // suffix minimum of completion time (and its flush)
    let mut suffix: Vec<(u64, OpId)> = vec![(u64::MAX, 0); flushes.len() + 1];
    for i in (0..flushes.len()).rev() {
        suffix[i] = suffix[i + 1].min((flushes[i].1, flushes[i].2));
    }
    let mut marks: HashMap<u16, Vec<&Watermark>> = HashMap::new();
    for w in &h.watermarks {
        marks.entry(w.chan).or_default().push(w);
    }
    for v in marks.values_mut() {
        v.sort_by_key(|w| w.t);
    }
    let mut confirms: HashMap<(u16, u64), Vec<u64>> = HashMap::new();
    for c in &h.confirms {
        confirms.entry((c.chan, c.tid)).or_default().push(c.t);
    }
    h.ops
        .iter()
        .map(|op| {
            if !op.kind.is_write_like() {
                return None;
            }
            let mut best: Option<Why> = None;
            let mut take = |w: Why| {
                if best.is_none_or(|b| w.t() < b.t()) {
                    best = Some(w);
                }
            };
            let horizon = next_crash(crashes, op.invoke);
            // A DURABLE completion seen after a crash (an orphan the next incarnation ran)
            // says nothing about the media at that crash.
            if op.durable
                && let Some(t) = op.completed_at()
                && t < horizon
            {
                take(Why::Flag(t));
            }
            if let Some(ms) = marks.get(&op.chan) {
                let start = ms.partition_point(|w| w.t < op.invoke);
                for w in &ms[start..] {
                    if w.t >= horizon {
                        break;
                    }
                    if w.tid > op.tid {
                        take(Why::Watermark {
                            t: w.t,
                            chan: w.chan,
                            tid: w.tid,
                        });
                        break;
                    }
                }
            }
            if let Some(ts) = confirms.get(&(op.chan, op.tid)) {
                for &t in ts {
                    if t >= op.invoke && t < horizon {
                        take(Why::Confirm { t });
                    }
                }
            }
            if op.ok()
                && let Some(done) = op.completed_at()
            {
                let i = flushes.partition_point(|f| f.0 <= done);
                let (t, id) = suffix[i];
                // Only before the first crash after the write's invocation: a write
                // whose completion was seen after a crash may have been lost in it,
                // and a later FLUSH (of the next incarnation) does not bring it back.
                if t < horizon {
                    take(Why::Flush { id, t });
                }
            }
            best
        })
        .collect()
}

// ---------------------------------------------------------------------------------
// Per-block decomposition

const ALL: u8 = 0xff;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SubKind {
    Write,
    Read,
    Crash,
}

/// One operation's effect on one block (or a crash point of that block).
#[derive(Clone, Debug)]
struct Sub {
    kind: SubKind,
    /// Index into `History::ops` (or `History::crashes` for a crash).
    src: usize,
    mask: u8,
    vals: [Digest; SECTORS_PER_BLOCK],
    /// A discard of undefined result: masked sectors may read as anything.
    any: bool,
    invoke: u64,
    /// Effective return (completion, or durability if earlier); u64::MAX = never.
    ret: u64,
    /// May never have taken effect (failed or never completed write).
    optional: bool,
    /// Confirmed durable before the next crash: the floor of what the media may hold.
    durable: bool,
    chan: u16,
    tid: u64,
    epoch: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Val {
    d: [Digest; SECTORS_PER_BLOCK],
    unknown: u8,
    any: u8,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct State {
    cur: Val,
    /// Crash points linearized so far (they come in time order).
    epoch: usize,
    /// Since the durable floor (the last durable write, or the epoch's start), the
    /// block held what the next crash's read-back shows: that read-back is allowed.
    seen: bool,
}

struct Ctx<'a> {
    h: &'a History,
    crashes: Vec<u64>,
    why: Vec<Option<Why>>,
    init: Val,
    fifo: bool,
}

fn initial_val(h: &History) -> Val {
    match h.header.initial {
        Initial::Zero => Val {
            d: [zero_digest(); SECTORS_PER_BLOCK],
            unknown: 0,
            any: 0,
        },
        Initial::Unknown => Val {
            d: [0; SECTORS_PER_BLOCK],
            unknown: ALL,
            any: 0,
        },
    }
}

fn split_blocks(ctx: &Ctx) -> BTreeMap<u64, Vec<Sub>> {
    let h = ctx.h;
    let zero = zero_digest();
    let mut blocks: BTreeMap<u64, Vec<Sub>> = BTreeMap::new();
    for (i, op) in h.ops.iter().enumerate() {
        let kind = match op.kind {
            OpKind::Read if op.ok() => SubKind::Read,
            OpKind::Read | OpKind::Flush => continue,
            _ => SubKind::Write,
        };
        let durable_at = ctx.why[i].map(|w| w.t());
        // never completed: if a crash followed, it took effect before that crash or never
        // (a request the restarted device runs has its completion recorded)
        let complete = op.completed_at().unwrap_or_else(|| {
            next_crash(&ctx.crashes, op.invoke)
                .saturating_sub(1)
                .max(op.invoke)
        });
        let ret = complete.min(durable_at.unwrap_or(u64::MAX));
        // failed: whatever it did (any subset of blocks, or nothing) — even if a watermark
        // later covers it; never completed: the same unless confirmed durable
        let failed = matches!(op.complete, Some((_, Outcome::Err(_))));
        let optional = kind == SubKind::Write && !op.ok() && (failed || durable_at.is_none());
        let (first, n) = op.sectors();
        let epoch = ctx.crashes.partition_point(|&c| c < op.invoke);
        for s in first..first + n {
            let block = s / SECTORS_PER_BLOCK as u64;
            let bit = (s % SECTORS_PER_BLOCK as u64) as usize;
            let list = blocks.entry(block).or_default();
            if list
                .last()
                .is_none_or(|l| l.src != i || l.kind == SubKind::Crash)
            {
                list.push(Sub {
                    kind,
                    src: i,
                    mask: 0,
                    vals: [0; SECTORS_PER_BLOCK],
                    any: op.kind == OpKind::Discard && h.header.discard == DiscardMode::Undefined,
                    invoke: op.invoke,
                    ret,
                    optional,
                    durable: durable_at.is_some(),
                    chan: op.chan,
                    tid: op.tid,
                    epoch,
                });
            }
            let sub = list.last_mut().unwrap_or_else(|| unreachable!());
            sub.mask |= 1 << bit;
            let k = (s - first) as usize;
            sub.vals[bit] = match op.kind {
                OpKind::Write => op.written[k],
                OpKind::Read => op.read[k],
                _ => zero,
            };
        }
    }
    // crash points: every block gets each crash; media sets mask/vals
    let mut media: HashMap<(usize, u64), (u8, [Digest; SECTORS_PER_BLOCK])> = HashMap::new();
    for (ci, c) in h.crashes.iter().enumerate() {
        for m in &c.media {
            for (k, &d) in m.digests.iter().enumerate() {
                let s = m.offset / SECTOR + k as u64;
                let e = media
                    .entry((ci, s / SECTORS_PER_BLOCK as u64))
                    .or_insert((0, [0; 8]));
                let bit = (s % SECTORS_PER_BLOCK as u64) as usize;
                e.0 |= 1 << bit;
                e.1[bit] = d;
            }
        }
    }
    for &(_, b) in media.keys() {
        blocks.entry(b).or_default();
    }
    for (&b, list) in blocks.iter_mut() {
        for (ci, c) in h.crashes.iter().enumerate() {
            let (mask, vals) = media.get(&(ci, b)).copied().unwrap_or((0, [0; 8]));
            list.push(Sub {
                kind: SubKind::Crash,
                src: ci,
                mask,
                vals,
                any: false,
                invoke: c.t,
                ret: c.t,
                optional: false,
                durable: false,
                chan: u16::MAX,
                tid: 0,
                epoch: ci,
            });
        }
        list.sort_by_key(|s| (s.invoke, s.ret));
    }
    blocks
}

// ---------------------------------------------------------------------------------
// Direct single-read checks: cheap, sound, and they name the rule precisely

/// Where a sector's value may have come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Source {
    Initial,
    Sub(usize),
}

struct Found {
    rule: Rule,
    /// Time of the observation (for picking the earliest).
    t: u64,
    block: u64,
    sector: u64,
    reader: usize,
    others: Vec<Source>,
    crash: Option<usize>,
    why: Option<Why>,
}

#[allow(clippy::needless_range_loop)] // sectors index several parallel arrays
fn direct(ctx: &Ctx, block: u64, subs: &[Sub]) -> Option<Found> {
    let mut best: Option<Found> = None;
    let mut keep = |f: Found| {
        if best.as_ref().is_none_or(|b| f.t < b.t) {
            best = Some(f);
        }
    };
    for (ri, r) in subs.iter().enumerate() {
        if r.kind == SubKind::Write || r.mask == 0 {
            continue;
        }
        let is_crash = r.kind == SubKind::Crash;
        // time before which a source must have been invoked
        let horizon = r.ret;
        let epoch_start = prev_crash(&ctx.crashes, r.invoke);
        let mut cands: [Vec<Source>; SECTORS_PER_BLOCK] = Default::default();
        let mut wild = 0u8;
        for s in 0..SECTORS_PER_BLOCK {
            if r.mask & (1 << s) == 0 {
                continue;
            }
            let v = r.vals[s];
            if ctx.init.unknown & (1 << s) != 0 {
                wild |= 1 << s;
                continue;
            }
            if ctx.init.d[s] == v {
                cands[s].push(Source::Initial);
            }
            for (wi, w) in subs.iter().enumerate() {
                if wi == ri || w.mask & (1 << s) == 0 || w.invoke >= horizon {
                    continue;
                }
                match w.kind {
                    SubKind::Write if w.any => wild |= 1 << s,
                    SubKind::Write | SubKind::Crash if w.vals[s] == v => {
                        cands[s].push(Source::Sub(wi))
                    }
                    _ => {}
                }
            }
            if wild & (1 << s) != 0 {
                continue;
            }
            let sector = block * SECTORS_PER_BLOCK as u64 + s as u64;
            let crash = if is_crash { Some(r.src) } else { None };
            if cands[s].is_empty() {
                let future = subs.iter().position(|w| {
                    w.kind == SubKind::Write && w.mask & (1 << s) != 0 && !w.any && w.vals[s] == v
                });
                keep(Found {
                    rule: if future.is_some() {
                        Rule::FutureRead
                    } else {
                        Rule::NeverWritten
                    },
                    t: r.ret,
                    block,
                    sector,
                    reader: ri,
                    others: future.map(Source::Sub).into_iter().collect(),
                    crash,
                    why: None,
                });
                continue;
            }
            // overwriters: in the reader's epoch, covering s with another value, done
            // before the reader began (reads) / durable before the crash (media)
            let mut latest: Option<(u64, usize)> = None;
            for (xi, x) in subs.iter().enumerate() {
                if xi == ri || x.mask & (1 << s) == 0 || x.vals[s] == v || x.any {
                    continue;
                }
                let counts = match x.kind {
                    SubKind::Write => {
                        !x.optional
                            && epoch_start.is_none_or(|e| x.invoke > e)
                            && if is_crash {
                                x.durable && x.invoke < r.invoke
                            } else {
                                x.ret < r.invoke
                            }
                    }
                    SubKind::Crash => Some(x.invoke) == epoch_start,
                    SubKind::Read => false,
                };
                if counts && latest.is_none_or(|(t, _)| x.invoke > t) {
                    latest = Some((x.invoke, xi));
                }
            }
            if let Some((m, xi)) = latest {
                let ret_of = |c: &Source| match c {
                    Source::Initial => 0,
                    Source::Sub(i) => subs[*i].ret,
                };
                if cands[s].iter().all(|c| ret_of(c) < m) {
                    let newest = cands[s]
                        .iter()
                        .copied()
                        .max_by_key(ret_of)
                        .unwrap_or(Source::Initial);
                    let x = &subs[xi];
                    let why = if x.kind == SubKind::Write {
                        ctx.why[x.src]
                    } else {
                        None
                    };
                    keep(Found {
                        rule: if is_crash {
                            Rule::LostDurable
                        } else {
                            Rule::StaleRead
                        },
                        t: r.ret,
                        block,
                        sector,
                        reader: ri,
                        others: vec![newest, Source::Sub(xi)],
                        crash,
                        why,
                    });
                }
            }
        }
        // torn block: two sectors from two different writes that both cover both
        let covers = |c: Source, s: usize| match c {
            Source::Initial => true,
            Source::Sub(i) => subs[i].mask & (1 << s) != 0,
        };
        'pairs: for s1 in 0..SECTORS_PER_BLOCK {
            for s2 in s1 + 1..SECTORS_PER_BLOCK {
                let (a, b) = (&cands[s1], &cands[s2]);
                if a.is_empty() || b.is_empty() || a.len() * b.len() > 64 {
                    continue;
                }
                if wild & ((1 << s1) | (1 << s2)) != 0 {
                    continue;
                }
                let torn = a.iter().all(|&c1| {
                    b.iter()
                        .all(|&c2| c1 != c2 && covers(c1, s2) && covers(c2, s1))
                });
                if torn {
                    keep(Found {
                        rule: Rule::TornBlock,
                        t: r.ret,
                        block,
                        sector: block * SECTORS_PER_BLOCK as u64 + s1 as u64,
                        reader: ri,
                        others: vec![a[0], b[0]],
                        crash: if is_crash { Some(r.src) } else { None },
                        why: None,
                    });
                    break 'pairs;
                }
            }
        }
    }
    best
}

// ---------------------------------------------------------------------------------
// The search (Wing & Gong / Lowe, memoised as in Porcupine)

enum Search {
    Ok(u64),
    Fail,
    Budget(u64),
}

struct Flags {
    fifo: bool,
    floor: bool,
}

/// The media read back at each crash, for this block: (mask, values); mask 0 = none.
type Backs = [(u8, [Digest; SECTORS_PER_BLOCK])];

/// Does `v` agree with a read-back on its sectors (unknown and undefined agree)?
fn agrees(v: &Val, back: &(u8, [Digest; SECTORS_PER_BLOCK])) -> bool {
    (0..SECTORS_PER_BLOCK).all(|s| {
        let bit = 1u8 << s;
        back.0 & bit == 0 || (v.any | v.unknown) & bit != 0 || v.d[s] == back.1[s]
    })
}

fn note(st: &mut State, backs: &Backs) {
    if let Some(b) = backs.get(st.epoch) {
        st.seen |= b.0 != 0 && agrees(&st.cur, b);
    }
}

fn read_apply(mut st: State, r: &Sub, backs: &Backs) -> Option<State> {
    let mut pinned = false;
    for s in 0..SECTORS_PER_BLOCK {
        let bit = 1u8 << s;
        if r.mask & bit == 0 || st.cur.any & bit != 0 {
            continue;
        }
        if st.cur.unknown & bit != 0 {
            st.cur.d[s] = r.vals[s];
            st.cur.unknown &= !bit;
            pinned = true;
        } else if st.cur.d[s] != r.vals[s] {
            return None;
        }
    }
    if pinned {
        note(&mut st, backs);
    }
    Some(st)
}

fn write_apply(mut st: State, w: &Sub, backs: &Backs, floor: bool) -> State {
    for s in 0..SECTORS_PER_BLOCK {
        let bit = 1u8 << s;
        if w.mask & bit == 0 {
            continue;
        }
        st.cur.unknown &= !bit;
        if w.any {
            st.cur.any |= bit;
        } else {
            st.cur.any &= !bit;
            st.cur.d[s] = w.vals[s];
        }
    }
    if w.durable && floor {
        // older versions may no longer be on the media after the next crash
        st.seen = false;
    }
    note(&mut st, backs);
    st
}

/// A crash: the block rolls back to a version since its floor — the one read back.
/// Without a read-back the content is unknown until read; sectors not read back too.
fn crash_apply(st: &State, backs: &Backs) -> Option<State> {
    let back = backs
        .get(st.epoch)
        .copied()
        .unwrap_or((0, [0; SECTORS_PER_BLOCK]));
    if back.0 != 0 && !st.seen {
        return None;
    }
    let mut cur = Val {
        d: back.1,
        unknown: !back.0,
        any: 0,
    };
    for s in 0..SECTORS_PER_BLOCK {
        if back.0 & (1 << s) == 0 {
            cur.d[s] = 0;
        }
    }
    let mut n = State {
        cur,
        epoch: st.epoch + 1,
        seen: false,
    };
    note(&mut n, backs);
    Some(n)
}

fn successors(st: &State, sub: &Sub, backs: &Backs, flags: &Flags) -> Vec<State> {
    match sub.kind {
        SubKind::Read => read_apply(st.clone(), sub, backs).into_iter().collect(),
        // an optional write takes effect, or is a no-op, at its instant
        SubKind::Write if sub.optional => {
            let applied = write_apply(st.clone(), sub, backs, flags.floor);
            if applied == *st {
                vec![applied]
            } else {
                vec![applied, st.clone()]
            }
        }
        SubKind::Write => vec![write_apply(st.clone(), sub, backs, flags.floor)],
        SubKind::Crash => crash_apply(st, backs).into_iter().collect(),
    }
}

#[derive(Clone, Copy)]
struct Entry {
    sub: usize,
    call: bool,
    prev: usize,
    next: usize,
}

const NIL: usize = usize::MAX;

fn search(subs: &[Sub], init: Val, flags: &Flags, budget: u64) -> Search {
    let n = subs.len();
    if n == 0 {
        return Search::Ok(0);
    }
    let backs: Vec<(u8, [Digest; SECTORS_PER_BLOCK])> = subs
        .iter()
        .filter(|s| s.kind == SubKind::Crash)
        .map(|s| (s.mask, s.vals))
        .collect();
    // FIFO predecessor: the previous sub of the same channel and epoch
    let mut pred = vec![NIL; n];
    if flags.fifo {
        let mut order: Vec<usize> = (0..n).filter(|&i| subs[i].kind != SubKind::Crash).collect();
        order.sort_by_key(|&i| (subs[i].chan, subs[i].epoch, subs[i].invoke, subs[i].tid));
        for w in order.windows(2) {
            let (a, b) = (&subs[w[0]], &subs[w[1]]);
            if a.chan == b.chan && a.epoch == b.epoch {
                pred[w[1]] = w[0];
            }
        }
    }
    // entries: 0 is the head sentinel
    let mut ev: Vec<(u64, bool, usize)> = Vec::with_capacity(2 * n);
    for (i, s) in subs.iter().enumerate() {
        ev.push((s.invoke, false, i));
        ev.push((s.ret, true, i));
    }
    // calls before returns at equal times: equal stamps are concurrent
    ev.sort_by_key(|&(t, is_ret, i)| (t, is_ret, i));
    let mut entries = vec![
        Entry {
            sub: NIL,
            call: false,
            prev: NIL,
            next: NIL
        };
        2 * n + 1
    ];
    let mut call_at = vec![0; n];
    let mut ret_at = vec![0; n];
    for (k, &(_, is_ret, i)) in ev.iter().enumerate() {
        let at = k + 1;
        entries[at] = Entry {
            sub: i,
            call: !is_ret,
            prev: k,
            next: if k + 1 < ev.len() { at + 1 } else { NIL },
        };
        if is_ret {
            ret_at[i] = at;
        } else {
            call_at[i] = at;
        }
    }
    entries[0].next = 1;
    let lift = |e: &mut Vec<Entry>, i: usize| {
        for at in [call_at[i], ret_at[i]] {
            let (p, nx) = (e[at].prev, e[at].next);
            e[p].next = nx;
            if nx != NIL {
                e[nx].prev = p;
            }
        }
    };
    let unlift = |e: &mut Vec<Entry>, i: usize| {
        for at in [ret_at[i], call_at[i]] {
            let (p, nx) = (e[at].prev, e[at].next);
            e[p].next = at;
            if nx != NIL {
                e[nx].prev = at;
            }
        }
    };
    let words = n.div_ceil(64);
    let mut done = vec![0u64; words];
    let is_done = |d: &[u64], i: usize| d[i / 64] & (1 << (i % 64)) != 0;
    let mut cache: HashSet<(Vec<u64>, State)> = HashSet::new();
    struct Frame {
        sub: usize,
        prev: State,
        next_succ: usize,
        forced: bool,
    }
    let mut stack: Vec<Frame> = Vec::new();
    let mut state = State {
        cur: init,
        epoch: 0,
        seen: false,
    };
    note(&mut state, &backs);
    let mut at = entries[0].next;
    let mut start = 0usize;
    let mut states = 0u64;
    'outer: loop {
        if entries[0].next == NIL {
            return Search::Ok(states);
        }
        if states > budget {
            return Search::Budget(states);
        }
        let e = entries[at];
        let mut backtrack = !e.call; // a return entry not linearized yet
        if e.call {
            let i = e.sub;
            if pred[i] == NIL || is_done(&done, pred[i]) {
                let succ = successors(&state, &subs[i], &backs, flags);
                // A read consistent now that leaves the state as it is (fixes no unknown
                // sector) is linearized now, with no alternative: every op that must
                // precede it is already linearized (its return came earlier), so a later
                // place is no better.
                let forced = subs[i].kind == SubKind::Read && succ.first() == Some(&state);
                for (k, s) in succ.into_iter().enumerate().skip(start) {
                    done[i / 64] |= 1 << (i % 64);
                    if cache.insert((done.clone(), s.clone())) {
                        states += 1;
                        let prev = std::mem::replace(&mut state, s);
                        stack.push(Frame {
                            sub: i,
                            prev,
                            next_succ: k + 1,
                            forced,
                        });
                        lift(&mut entries, i);
                        at = entries[0].next;
                        start = 0;
                        continue 'outer;
                    }
                    done[i / 64] &= !(1 << (i % 64));
                }
                backtrack = forced;
            }
            if !backtrack {
                start = 0;
                at = e.next;
                continue;
            }
        }
        if backtrack {
            loop {
                let Some(f) = stack.pop() else {
                    return Search::Fail;
                };
                unlift(&mut entries, f.sub);
                done[f.sub / 64] &= !(1 << (f.sub % 64));
                state = f.prev;
                if !f.forced {
                    at = call_at[f.sub];
                    start = f.next_succ;
                    break;
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------
// Explanations

fn short(d: Digest) -> String {
    if d == zero_digest() {
        "zeroes".into()
    } else {
        format!("{d:016x}")
    }
}

fn source_words(ctx: &Ctx, subs: &[Sub], c: Source) -> String {
    match c {
        Source::Initial => "the initial content".into(),
        Source::Sub(i) => {
            let s = &subs[i];
            match s.kind {
                SubKind::Crash => format!("the media read back after the crash at t={}", s.invoke),
                _ => format!("{}", ctx.h.ops[s.src]),
            }
        }
    }
}

fn sub_words(ctx: &Ctx, s: &Sub) -> String {
    match s.kind {
        SubKind::Crash => format!("crash at t={}", s.invoke),
        _ => format!("{}", ctx.h.ops[s.src]),
    }
}

fn sub_id(ctx: &Ctx, s: &Sub) -> Option<OpId> {
    match s.kind {
        SubKind::Crash => None,
        _ => Some(ctx.h.ops[s.src].id),
    }
}

fn block_range(block: u64) -> String {
    format!(
        "block {block} (bytes {:#x}..{:#x})",
        block * BLOCK,
        (block + 1) * BLOCK
    )
}

fn explain_found(ctx: &Ctx, subs: &[Sub], f: &Found) -> Violation {
    let r = &subs[f.reader];
    let s = (f.sector % SECTORS_PER_BLOCK as u64) as usize;
    let v = r.vals[s];
    let what = if r.kind == SubKind::Crash {
        format!("the media read back after the crash at t={}", r.invoke)
    } else {
        format!("read {}", sub_words(ctx, r))
    };
    let loc = format!(
        "{}, sector {} (byte {:#x})",
        block_range(f.block),
        f.sector,
        f.sector * SECTOR
    );
    let mut ops: Vec<OpId> = sub_id(ctx, r).into_iter().collect();
    for o in &f.others {
        if let Source::Sub(i) = o
            && let Some(id) = sub_id(ctx, &subs[*i])
        {
            ops.push(id);
        }
    }
    if let Some(Why::Flush { id, .. }) = f.why {
        ops.push(id);
    }
    // "the value of #3 write …" / "the initial content"
    let of = |c: Source| match c {
        Source::Initial => "the initial content".to_string(),
        c => format!("the value of {}", source_words(ctx, subs, c)),
    };
    let after = |c: Source| match c {
        Source::Initial => "",
        _ => ", was invoked after that value's writer completed",
    };
    let explanation = match f.rule {
        Rule::NeverWritten => format!(
            "{what} returned {} at {loc}; no write ever wrote that there, nor is it the initial content.",
            short(v)
        ),
        Rule::FutureRead => format!(
            "{what} returned {} at {loc}, the value of {}, which was invoked only after that read completed \
             (a value from the future).",
            short(v),
            source_words(ctx, subs, f.others[0])
        ),
        Rule::StaleRead => format!(
            "{what} returned {} at {loc}: {}. But {} completed before that read was invoked{}, and overwrote \
             the sector with {}: in every order consistent with real time the read comes after the overwrite \
             (linearizability of the block as a register).",
            short(v),
            of(f.others[0]),
            source_words(ctx, subs, f.others[1]),
            after(f.others[0]),
            match f.others[1] {
                Source::Sub(i) => short(subs[i].vals[s]),
                Source::Initial => "?".into(),
            }
        ),
        Rule::LostDurable => format!(
            "{what} holds {} at {loc}: {}. But {} was confirmed durable before the crash ({}){}, and wrote \
             {} there: a confirmed-durable write was lost.",
            short(v),
            of(f.others[0]),
            source_words(ctx, subs, f.others[1]),
            f.why
                .map(|w| w.words())
                .unwrap_or_else(|| "it was the media after the previous crash".into()),
            after(f.others[0]),
            match f.others[1] {
                Source::Sub(i) => short(subs[i].vals[s]),
                Source::Initial => "?".into(),
            }
        ),
        Rule::TornBlock => format!(
            "{what} shows, within {}, sectors from {} and from {}, and each of the two wrote the whole range \
             of both sectors: two overlapping writes mixed inside one block (each 4 KiB block takes one write \
             whole).",
            block_range(f.block),
            source_words(ctx, subs, f.others[0]),
            source_words(ctx, subs, f.others[1]),
        ),
        _ => unreachable!(),
    };
    Violation {
        rule: f.rule,
        block: Some(f.block),
        sector: Some(f.sector),
        ops,
        crash: f.crash.map(|c| ctx.h.crashes[c].t),
        explanation,
    }
}

fn describe_effect(ctx: &Ctx, subs: &[Sub], s: &Sub) -> String {
    // name each masked sector's value by its writer where unique
    let mut parts: Vec<(usize, usize, String)> = Vec::new();
    for k in 0..SECTORS_PER_BLOCK {
        if s.mask & (1 << k) == 0 {
            continue;
        }
        let v = s.vals[k];
        let name = if s.any {
            "undefined (discard)".to_string()
        } else if s.kind == SubKind::Write {
            short(v)
        } else {
            let writers: Vec<String> = subs
                .iter()
                .filter(|w| w.kind == SubKind::Write && w.mask & (1 << k) != 0 && w.vals[k] == v)
                .filter_map(|w| sub_id(ctx, w))
                .map(|id| format!("#{id}"))
                .collect();
            if !writers.is_empty() {
                format!("value of {}", writers.join("/"))
            } else if ctx.init.unknown & (1 << k) == 0 && ctx.init.d[k] == v {
                "initial content".into()
            } else {
                short(v)
            }
        };
        match parts.last_mut() {
            Some(p) if p.1 + 1 == k && p.2 == name => p.1 = k,
            _ => parts.push((k, k, name)),
        }
    }
    let verb = match s.kind {
        SubKind::Write => "writes",
        SubKind::Read => "read",
        SubKind::Crash if s.mask == 0 => return "(no media read back for this block)".into(),
        SubKind::Crash => "media afterwards",
    };
    let list: Vec<String> = parts
        .into_iter()
        .map(|(a, b, n)| {
            if a == b {
                format!("sector {a}: {n}")
            } else {
                format!("sectors {a}-{b}: {n}")
            }
        })
        .collect();
    format!("{verb} {}", list.join(", "))
}

fn explain_search(ctx: &Ctx, block: u64, subs: &[Sub], rule: Rule) -> Violation {
    let mut lines = Vec::new();
    let lead = match rule {
        Rule::ChannelOrder => format!(
            "no order of these operations on {} explains what was read if each channel's requests take \
             effect in submission order; an order exists without that promise, so a channel executed out of order:",
            block_range(block)
        ),
        Rule::LostDurable => format!(
            "no order of these operations on {} explains the media after the crash without losing a write \
             confirmed durable before it (one exists if durability is ignored):",
            block_range(block)
        ),
        _ => format!(
            "no order of these {} operations on {}, each taking effect at one instant between its invocation \
             and completion, explains what was read (sectors numbered within the block):",
            subs.len(),
            block_range(block)
        ),
    };
    lines.push(lead);
    for s in subs {
        let mut l = format!(
            "  {} — {}",
            sub_words(ctx, s),
            describe_effect(ctx, subs, s)
        );
        if s.optional {
            l.push_str(" (may not have taken effect)");
        }
        if s.durable
            && s.kind == SubKind::Write
            && let Some(w) = ctx.why[s.src]
        {
            l.push_str(&format!(" (durable: {})", w.words()));
        }
        lines.push(l);
    }
    Violation {
        rule,
        block: Some(block),
        sector: None,
        ops: subs.iter().filter_map(|s| sub_id(ctx, s)).collect(),
        crash: subs
            .iter()
            .find(|s| s.kind == SubKind::Crash)
            .map(|s| s.invoke),
        explanation: lines.join("\n"),
    }
}

fn classify(ctx: &Ctx, subs: &[Sub], budget: u64) -> Rule {
    let passes = |fl: Flags| matches!(search(subs, ctx.init, &fl, budget), Search::Ok(_));
    if ctx.fifo
        && passes(Flags {
            fifo: false,
            floor: true,
        })
    {
        return Rule::ChannelOrder;
    }
    if subs.iter().any(|s| s.kind == SubKind::Crash)
        && passes(Flags {
            fifo: ctx.fifo,
            floor: false,
        })
    {
        return Rule::LostDurable;
    }
    Rule::NotLinearizable
}

/// Fails the search for `rule`, and for no simpler reason (a single-observation rule):
/// shrinking must keep the counter-example's nature, not turn it into another one.
fn fails_as(ctx: &Ctx, block: u64, subs: &[Sub], rule: Rule, budget: u64) -> bool {
    if direct(ctx, block, subs).is_some() {
        return false;
    }
    let fl = Flags {
        fifo: ctx.fifo,
        floor: true,
    };
    if !matches!(search(subs, ctx.init, &fl, budget), Search::Fail) {
        return false;
    }
    classify(ctx, subs, budget) == rule
}

/// Shrinks a failing block history: shortest failing prefix, then drop operations one
/// by one while it still fails for the same rule.
fn minimize(ctx: &Ctx, block: u64, subs: &[Sub], rule: Rule) -> Vec<Sub> {
    const BUDGET: u64 = 200_000;
    let mut cur: Vec<Sub> = subs.to_vec();
    // prefix by invocation order: binary search, verified
    let (mut lo, mut hi) = (1usize, cur.len());
    while lo < hi {
        let mid = (lo + hi) / 2;
        if fails_as(ctx, block, &cur[..mid], rule, BUDGET) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    if hi < cur.len() && fails_as(ctx, block, &cur[..hi], rule, BUDGET) {
        cur.truncate(hi);
    }
    if cur.len() > 400 {
        return cur;
    }
    // greedy removal: reads first (they only constrain), then the rest, latest first
    let mut order: Vec<usize> = (0..cur.len()).collect();
    order.sort_by_key(|&i| (cur[i].kind != SubKind::Read, std::cmp::Reverse(i)));
    let mut removed = vec![false; cur.len()];
    for i in order {
        removed[i] = true;
        let trial: Vec<Sub> = cur
            .iter()
            .enumerate()
            .filter(|(k, _)| !removed[*k])
            .map(|(_, s)| s.clone())
            .collect();
        if trial.is_empty() || !fails_as(ctx, block, &trial, rule, BUDGET) {
            removed[i] = false;
        }
    }
    cur.into_iter()
        .enumerate()
        .filter(|(k, _)| !removed[*k])
        .map(|(_, s)| s)
        .collect()
}

// ---------------------------------------------------------------------------------

fn channel_order(ctx: &Ctx) -> Option<Violation> {
    let h = ctx.h;
    let mut by_chan: BTreeMap<(u16, usize), Vec<&Op>> = BTreeMap::new();
    for op in &h.ops {
        if op.complete.is_some() {
            let epoch = ctx.crashes.partition_point(|&c| c < op.invoke);
            by_chan.entry((op.chan, epoch)).or_default().push(op);
        }
    }
    let mut worst: Option<(u64, Violation)> = None;
    for ((chan, _), mut ops) in by_chan {
        ops.sort_by_key(|o| (o.invoke, o.tid));
        let mut max: Option<&Op> = None;
        for &op in &ops {
            let t = op.completed_at().unwrap_or(0);
            if let Some(m) = max
                && t < m.completed_at().unwrap_or(0)
            {
                if worst.as_ref().is_none_or(|(wt, _)| t < *wt) {
                    worst = Some((
                        t,
                        Violation {
                            rule: Rule::ChannelOrder,
                            block: None,
                            sector: None,
                            ops: vec![m.id, op.id],
                            crash: None,
                            explanation: format!(
                                "on ch{chan}, {op} completed before {m}, which was submitted before it: a \
                                 channel completes its requests in submission order (CBD level)."
                            ),
                        },
                    ));
                }
                continue;
            }
            if max.is_none_or(|m| t > m.completed_at().unwrap_or(0)) {
                max = Some(op);
            }
        }
    }
    worst.map(|(_, v)| v)
}

/// Checks a history. `Ok` = every rule holds; otherwise the earliest violation found,
/// shrunk to a minimal counter-example when it came from the search.
pub fn check_with(h: &History, opts: &CheckOptions) -> Result<Summary, CheckError> {
    let started = Instant::now();
    h.validate().map_err(CheckError::Invalid)?;
    let crashes: Vec<u64> = h.crashes.iter().map(|c| c.t).collect();
    let fifo = opts.channel_fifo.unwrap_or(h.header.level == Level::Cbd);
    let why = durability(h, &crashes);
    let ctx = Ctx {
        h,
        crashes,
        why,
        init: initial_val(h),
        fifo,
    };
    if fifo && let Some(v) = channel_order(&ctx) {
        return Err(CheckError::Violation(Box::new(v)));
    }
    let blocks = split_blocks(&ctx);
    let mut summary = Summary {
        ops: h.ops.len(),
        blocks: blocks.len(),
        reads: h.ops.iter().filter(|o| o.kind == OpKind::Read).count(),
        writes: h.ops.iter().filter(|o| o.kind.is_write_like()).count(),
        flushes: h.ops.iter().filter(|o| o.kind == OpKind::Flush).count(),
        crashes: h.crashes.len(),
        durable_writes: ctx.why.iter().filter(|w| w.is_some()).count(),
        channel_fifo: fifo,
        ..Default::default()
    };
    // 1. single-observation rules, earliest first
    let mut first: Option<(u64, Violation)> = None;
    for (&b, subs) in &blocks {
        summary.block_ops += subs.len();
        summary.max_block_ops = summary.max_block_ops.max(subs.len());
        if let Some(f) = direct(&ctx, b, subs)
            && first.as_ref().is_none_or(|(t, _)| f.t < *t)
        {
            first = Some((f.t, explain_found(&ctx, subs, &f)));
        }
    }
    if let Some((_, v)) = first {
        return Err(CheckError::Violation(Box::new(v)));
    }
    // 2. the search, block by block
    let flags = Flags { fifo, floor: true };
    for (&b, subs) in &blocks {
        match search(subs, ctx.init, &flags, opts.max_states) {
            Search::Ok(n) => {
                summary.states += n;
                log::debug!("history: block {b}: {} ops, {n} states", subs.len());
            }
            Search::Budget(n) => {
                return Err(CheckError::Undecided {
                    block: b,
                    states: n,
                });
            }
            Search::Fail => {
                let rule = classify(&ctx, subs, opts.max_states);
                let small = if opts.minimize {
                    minimize(&ctx, b, subs, rule)
                } else {
                    subs.clone()
                };
                return Err(CheckError::Violation(Box::new(explain_search(
                    &ctx, b, &small, rule,
                ))));
            }
        }
    }
    summary.elapsed = started.elapsed();
    log::info!("history: {summary}");
    Ok(summary)
}
