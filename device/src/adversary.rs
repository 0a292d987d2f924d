//! The adversarial non-coherent shared memory (extensions §3), for native tests.
//!
//! It allows what x86 and a CXL link allow (`docs/adversary.md`, "Model"):
//! * a store dirties the agent's private cached line and stays invisible to others;
//! * a load hits the agent's cached line if it has one (possibly stale); a miss
//!   fills the line from memory;
//! * `write_back` (CLWB / CLFLUSHOPT) *starts* a write-back of the dirty line (all
//!   64 bytes): it lands after a random delay, usually short (≤ `max_delay` ticks),
//!   sometimes long (`slow_per_mille`, up to `slow_delay`), in any order with the
//!   agent's other write-backs — until a fence: every write-back an agent issued
//!   before a `store_fence` / `full_fence` lands before any it issues after it
//!   (post-fence write-backs get a due time after every pre-fence one);
//! * dirty lines are also written back *spontaneously* (early), with probability
//!   `evict_per_mille` per tick;
//! * `invalidate` writes a dirty line back (CLFLUSH) and drops the copy — but the
//!   drop is not ordered against the agent's later loads until its next
//!   `full_fence`: until then a load returns the old copy with probability
//!   `unfenced_load_per_mille` (1000: every load, for as long as the agent does not
//!   fence);
//! * `crash(agent)` loses the agent's cache; `crash_warm(agent)` loses only its
//!   dirty lines (a process restarted on the same CPU keeps clean, stale copies).
//!
//! Violations it reports by itself: two agents with dirty data in one line at the
//! same time, and a write-back that overwrites bytes another agent wrote (a lost
//! update). Stale reads are legal — the protocol must detect them (CRC, tid) and
//! re-read — but the memory *explains* each one (see [`Why`]): when a reader gives
//! up, [`StaleWitness`] (a tracer) records why its last stale read was stale, which
//! names the rule a broken engine skipped.
//!
//! Every shared-memory operation is one *tick*. Memory is copy-on-write over a
//! shared base snapshot so thousands of schedules start cheaply.

use crate::rng::SplitMix64;
use crate::shm::SharedMem;
use crate::trace::{Reject, TraceEvent, Tracer};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

const L: usize = 64;

/// Copy the bytes of `src` that `mask` selects into `d`.
fn merge(d: &mut [u8; L], src: &[u8; L], mask: u64) {
    for (i, (x, &y)) in d.iter_mut().zip(src.iter()).enumerate() {
        if mask & (1 << i) != 0 {
            *x = y;
        }
    }
}

/// Line-number keyed maps with a cheap hash (a schedule that provisions zeroes
/// 32 MiB: half a million lines).
type Map<V> = HashMap<usize, V, std::hash::BuildHasherDefault<LineHash>>;

#[derive(Default)]
struct LineHash(u64);
impl std::hash::Hasher for LineHash {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ b as u64).wrapping_mul(0x100_0000_01b3);
        }
    }
    fn write_usize(&mut self, n: usize) {
        self.0 = (n as u64 ^ self.0)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .rotate_left(29);
    }
}

#[derive(Clone, Copy, Debug)]
pub struct AdvConfig {
    pub seed: u64,
    /// Per tick: chance (‰) that one random dirty line is written back early.
    pub evict_per_mille: u32,
    /// Upper bound on the usual delay between a write-back and its landing.
    pub max_delay: u64,
    /// Chance (‰) that a write-back is slow: it lands after up to `slow_delay` ticks
    /// (write buffers below the CPU cache drain "eventually").
    pub slow_per_mille: u32,
    pub slow_delay: u64,
    /// Chance (‰) that a load of a line whose invalidation is not yet fenced returns
    /// the old copy.
    pub unfenced_load_per_mille: u32,
}
impl Default for AdvConfig {
    fn default() -> Self {
        Self {
            seed: 1,
            evict_per_mille: 30,
            max_delay: 48,
            slow_per_mille: 20,
            slow_delay: 3000,
            unfenced_load_per_mille: 1000,
        }
    }
}

/// Why a load returned bytes older than the newest the writer stored: the rule
/// whose absence would make such a read the one a reader relies on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Why {
    /// The writer's newest bytes are still dirty in its cache, or only a spontaneous
    /// eviction is carrying them: it never wrote them back.
    NotWrittenBack,
    /// The newest bytes are in a write-back that a later write-back of the same agent
    /// overtook: no fence between them.
    Overtaken,
    /// The newest bytes are in a write-back not yet landed that nothing overtook: if
    /// the reader came here from an index, the index was published before this write-back.
    WrittenBackAfterIndex,
    /// The reader's own cached copy, never invalidated since it was filled.
    NotInvalidated,
    /// The reader's cached copy, invalidated but with no full fence since.
    InvalidateNotFenced,
}

impl Why {
    /// The rule a reader that gives up on such a read shows broken.
    pub fn rule(self) -> &'static str {
        match self {
            Why::NotWrittenBack => "writer did not write back before publishing",
            Why::Overtaken => "no store fence between a write-back and a later one",
            Why::WrittenBackAfterIndex => "index published before the write-back",
            Why::NotInvalidated => "reader did not invalidate before loading",
            Why::InvalidateNotFenced => "no full fence between invalidate and load",
        }
    }
}

/// One stale read: who, where, why.
#[derive(Clone, Copy, Debug)]
pub struct StaleRead {
    pub agent: usize,
    pub tick: u64,
    pub off: u64,
    pub why: Why,
    /// The agent that wrote the newest bytes (for the writer-side reasons).
    pub writer: Option<usize>,
}

impl std::fmt::Display for StaleRead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "agent {} read {:#x} stale at tick {}: {:?} ({}",
            self.agent,
            self.off,
            self.tick,
            self.why,
            self.why.rule()
        )?;
        if let Some(w) = self.writer {
            write!(f, "; writer agent {w}")?;
        }
        write!(f, ")")
    }
}

#[derive(Clone)]
struct CLine {
    data: [u8; L],
    dirty: u64,
    /// Invalidated with no full fence since: the copy may still be returned.
    inval_pending: bool,
}

struct Pending {
    line: usize,
    agent: usize,
    data: [u8; L],
    mask: u64,
    due: u64,
    /// The agent's fence epoch at issue and the global issue order.
    epoch: u64,
    seq: u64,
    /// Unique key part (lines of one call share `seq`).
    id: u64,
    /// Issued by `write_back`/`invalidate` (false: only spontaneous evictions).
    explicit: bool,
}

#[derive(Default)]
struct Agent {
    cache: Map<CLine>,
    dirty_list: Vec<usize>,
    /// Fences so far; write-backs of an epoch land before any of a later epoch.
    epoch: u64,
    /// Every write-back issued before the last fence is due by this tick.
    floor: u64,
    /// Latest due time of any write-back this agent issued.
    max_due: u64,
    /// Lines invalidated since the last full fence.
    inval_list: Vec<usize>,
    /// Per writer: (epoch, seq) of the latest-issued write-back whose data this agent
    /// has loaded from memory.
    observed: Vec<(u64, u64)>,
    last_stale: Option<StaleRead>,
}

struct Inner {
    base: Arc<Vec<u8>>,
    overlay: Map<[u8; L]>,
    /// (writer, epoch, seq) of the write-back that last landed in each line.
    landed_from: Map<(usize, u64, u64)>,
    agents: Vec<Agent>,
    /// Write-backs in flight by (due, id).
    pending: BTreeMap<(u64, u64), Pending>,
    /// Keys of the write-backs in flight per line.
    pending_lines: Map<Vec<(u64, u64)>>,
    /// Issue order of write-back calls (every line of one call gets the same).
    seq: u64,
    ids: u64,
    tick: u64,
    rng: SplitMix64,
    cfg: AdvConfig,
    violations: Vec<String>,
    stats: AdvStats,
}

/// Counters (tests print them; the docs quote them).
#[derive(Clone, Copy, Debug, Default)]
pub struct AdvStats {
    pub ticks: u64,
    pub write_backs: u64,
    pub early_write_backs: u64,
    pub slow_write_backs: u64,
    pub landed: u64,
    /// Loads that returned bytes older than the newest stored.
    pub stale_reads: u64,
    /// Of those, loads served from a copy whose invalidation was not fenced.
    pub unfenced_hits: u64,
    pub fences: u64,
}

impl Inner {
    fn mem_line(&self, line: usize) -> [u8; L] {
        if let Some(l) = self.overlay.get(&line) {
            return *l;
        }
        let mut a = [0u8; L];
        let o = line * L;
        if o < self.base.len() {
            let end = (o + L).min(self.base.len());
            a[..end - o].copy_from_slice(&self.base[o..end]);
        }
        a
    }
    fn land(&mut self, p: Pending) {
        let cur = self.mem_line(p.line);
        let clobbered = p
            .data
            .iter()
            .zip(cur.iter())
            .enumerate()
            .any(|(i, (&new, &old))| p.mask & (1 << i) == 0 && new != old);
        if clobbered {
            self.violations.push(format!(
                "lost update: agent {} wrote back line {:#x} over bytes another agent had written (two writers share the line)",
                p.agent,
                p.line * L
            ));
        }
        self.overlay.insert(p.line, p.data);
        self.landed_from.insert(p.line, (p.agent, p.epoch, p.seq));
        if let Some(v) = self.pending_lines.get_mut(&p.line) {
            v.retain(|k| *k != (p.due, p.id));
            if v.is_empty() {
                self.pending_lines.remove(&p.line);
            }
        }
        self.stats.landed += 1;
    }
    /// Memory as `agent` sees it on a miss: its own write-backs still in flight are
    /// visible to it (one agent's accesses to one address stay in order).
    fn own_view(&self, agent: usize, line: usize) -> [u8; L] {
        let mut d = self.mem_line(line);
        for p in self.pending_of(line) {
            if p.agent == agent {
                merge(&mut d, &p.data, p.mask);
            }
        }
        d
    }
    fn delay(&mut self) -> u64 {
        if self.rng.chance(self.cfg.slow_per_mille as u64) {
            self.stats.slow_write_backs += 1;
            let s = self.cfg.slow_delay.max(2);
            s / 2 + self.rng.below(s / 2)
        } else {
            1 + self.rng.below(self.cfg.max_delay.max(1))
        }
    }
    fn issue_write_back(&mut self, agent: usize, line: usize, explicit: bool) {
        let Some(cl) = self.agents[agent].cache.get_mut(&line) else {
            return;
        };
        if cl.dirty == 0 {
            return;
        }
        let (data, mask) = (cl.data, cl.dirty);
        cl.dirty = 0;
        self.stats.write_backs += 1;
        let epoch = self.agents[agent].epoch;
        let same = self.pending_lines.get(&line).and_then(|v| {
            v.iter()
                .copied()
                .find(|k| self.pending[k].agent == agent && self.pending[k].epoch == epoch)
        });
        if let Some(k) = same {
            // Same line, same agent, no fence since: the newer snapshot supersedes.
            let p = self.pending.get_mut(&k).unwrap();
            p.data = data;
            p.mask |= mask;
            p.explicit |= explicit;
            return;
        }
        let due = (self.tick + self.delay()).max(self.agents[agent].floor + 1);
        let a = &mut self.agents[agent];
        a.max_due = a.max_due.max(due);
        self.ids += 1;
        let (seq, id) = (self.seq, self.ids);
        self.pending.insert(
            (due, id),
            Pending {
                line,
                agent,
                data,
                mask,
                due,
                epoch,
                seq,
                id,
                explicit,
            },
        );
        self.pending_lines.entry(line).or_default().push((due, id));
    }
    /// The write-backs of `line` in flight, in issue order.
    fn pending_of(&self, line: usize) -> Vec<&Pending> {
        let Some(v) = self.pending_lines.get(&line) else {
            return Vec::new();
        };
        let mut ps: Vec<&Pending> = v.iter().map(|k| &self.pending[k]).collect();
        ps.sort_by_key(|p| p.seq);
        ps
    }
    fn fence(&mut self, agent: usize, full: bool) {
        self.step();
        self.stats.fences += 1;
        let a = &mut self.agents[agent];
        a.floor = a.floor.max(a.max_due);
        a.epoch += 1;
        if full {
            for line in std::mem::take(&mut a.inval_list) {
                if a.cache.get(&line).is_some_and(|c| c.inval_pending) {
                    a.cache.remove(&line);
                }
            }
        }
    }
    fn step(&mut self) {
        self.tick += 1;
        self.stats.ticks += 1;
        let tick = self.tick;
        while let Some(e) = self.pending.first_entry() {
            if e.key().0 > tick {
                break;
            }
            let p = e.remove();
            self.land(p);
        }
        if self.rng.chance(self.cfg.evict_per_mille as u64) {
            let a = self.rng.below(self.agents.len() as u64) as usize;
            let n = self.agents[a].dirty_list.len();
            if n > 0 {
                let k = self.rng.below(n as u64) as usize;
                let line = self.agents[a].dirty_list.swap_remove(k);
                if self.agents[a]
                    .cache
                    .get(&line)
                    .is_some_and(|c| c.dirty != 0)
                {
                    self.stats.early_write_backs += 1;
                    self.seq += 1;
                    self.issue_write_back(a, line, false);
                }
            }
        }
    }
    fn lines(off: u64, len: u64) -> std::ops::Range<usize> {
        if len == 0 {
            return 0..0;
        }
        (off as usize / L)..((off + len - 1) as usize / L + 1)
    }
    /// Bytes `lo..hi` of `line` as the newest stores of agents other than `reader` left
    /// them, and why memory does not hold them yet (writer-side reasons only).
    fn newest(
        &self,
        reader: usize,
        line: usize,
        lo: usize,
        hi: usize,
    ) -> ([u8; L], Option<(Why, usize)>) {
        let mut d = self.mem_line(line);
        let mut why = None;
        for p in self.pending_of(line) {
            if p.agent != reader {
                let differs = (lo..hi).any(|i| p.mask & (1 << i) != 0 && p.data[i] != d[i]);
                merge(&mut d, &p.data, p.mask);
                if differs {
                    // Overtaken: the reader has loaded data of a later write-back of the
                    // same agent and epoch (no fence between); otherwise whatever the
                    // reader followed here was written back before this line was.
                    let o = self.agents[reader].observed[p.agent];
                    let overtaken = o.0 == p.epoch && o.1 > p.seq;
                    let y = if !p.explicit {
                        Why::NotWrittenBack
                    } else if overtaken {
                        Why::Overtaken
                    } else {
                        Why::WrittenBackAfterIndex
                    };
                    why = Some((y, p.agent));
                }
            }
        }
        for (w, a) in self.agents.iter().enumerate() {
            if w == reader {
                continue;
            }
            if let Some(c) = a.cache.get(&line)
                && c.dirty != 0
            {
                let differs = (lo..hi).any(|i| c.dirty & (1 << i) != 0 && c.data[i] != d[i]);
                merge(&mut d, &c.data, c.dirty);
                if differs {
                    why = Some((Why::NotWrittenBack, w));
                }
            }
        }
        (d, why)
    }
    fn read(&mut self, agent: usize, off: u64, buf: &mut [u8]) {
        self.step();
        let mut pos = 0usize;
        let mut stale: Option<StaleRead> = None;
        for line in Self::lines(off, buf.len() as u64) {
            let lo = (off as usize).saturating_sub(line * L);
            let n = (L - lo).min(buf.len() - pos);
            let mut from_cache = None;
            if let Some(c) = self.agents[agent].cache.get(&line) {
                let keep =
                    !c.inval_pending || self.rng.chance(self.cfg.unfenced_load_per_mille as u64);
                if keep {
                    from_cache = Some((c.data, c.dirty, c.inval_pending));
                } else {
                    self.agents[agent].cache.remove(&line);
                }
            }
            let cl = match from_cache {
                Some((d, dirty, pending_inval)) => {
                    let (newest, _) = self.newest(agent, line, lo, lo + n);
                    let is_stale = (lo..lo + n).any(|i| dirty & (1 << i) == 0 && d[i] != newest[i]);
                    if is_stale {
                        let why = if pending_inval {
                            self.stats.unfenced_hits += 1;
                            Why::InvalidateNotFenced
                        } else {
                            Why::NotInvalidated
                        };
                        stale.get_or_insert(StaleRead {
                            agent,
                            tick: self.tick,
                            off: (line * L + lo) as u64,
                            why,
                            writer: None,
                        });
                    }
                    d
                }
                None => {
                    let d = self.own_view(agent, line);
                    let (newest, why) = self.newest(agent, line, lo, lo + n);
                    if let Some(&(w, e, s)) = self.landed_from.get(&line)
                        && w != agent
                    {
                        let o = &mut self.agents[agent].observed[w];
                        if s > o.1 {
                            *o = (e, s);
                        }
                    }
                    if let Some((why, w)) = why
                        && (lo..lo + n).any(|i| d[i] != newest[i])
                    {
                        stale.get_or_insert(StaleRead {
                            agent,
                            tick: self.tick,
                            off: (line * L + lo) as u64,
                            why,
                            writer: Some(w),
                        });
                    }
                    self.agents[agent].cache.insert(
                        line,
                        CLine {
                            data: d,
                            dirty: 0,
                            inval_pending: false,
                        },
                    );
                    d
                }
            };
            buf[pos..pos + n].copy_from_slice(&cl[lo..lo + n]);
            pos += n;
        }
        if let Some(s) = stale {
            self.stats.stale_reads += 1;
            self.agents[agent].last_stale = Some(s);
        }
    }
    fn write(&mut self, agent: usize, off: u64, len: usize, src: impl Fn(usize) -> u8) {
        self.step();
        let mut pos = 0usize;
        for line in Self::lines(off, len as u64) {
            for (other, a) in self.agents.iter().enumerate() {
                if other != agent && a.cache.get(&line).is_some_and(|c| c.dirty != 0) {
                    self.violations.push(format!(
                        "agents {agent} and {other} both have dirty data in line {:#x} (two writers share the line)",
                        line * L
                    ));
                }
            }
            let lo = (off as usize).saturating_sub(line * L);
            let n = (L - lo).min(len - pos);
            if !self.agents[agent].cache.contains_key(&line) {
                let d = self.own_view(agent, line);
                self.agents[agent].cache.insert(
                    line,
                    CLine {
                        data: d,
                        dirty: 0,
                        inval_pending: false,
                    },
                );
            }
            let a = &mut self.agents[agent];
            let cl = a.cache.get_mut(&line).unwrap();
            if cl.dirty == 0 {
                a.dirty_list.push(line);
            }
            // A store brings the line back: the pending invalidation no longer matters.
            cl.inval_pending = false;
            for i in 0..n {
                cl.data[lo + i] = src(pos + i);
                cl.dirty |= 1 << (lo + i);
            }
            pos += n;
        }
    }
}

/// The adversarial memory, shared by the agents (each gets an [`AgentMem`]).
pub struct Adversary {
    inner: Mutex<Inner>,
    len: u64,
}

impl Adversary {
    /// Memory starts as `base` (shared, never modified; shorter than `len` = zeros
    /// beyond); `agents` private caches.
    pub fn with_len(base: Arc<Vec<u8>>, len: u64, agents: usize, cfg: AdvConfig) -> Self {
        Self {
            inner: Mutex::new(Inner {
                base,
                overlay: Map::default(),
                landed_from: Map::default(),
                agents: (0..agents)
                    .map(|_| Agent {
                        observed: vec![(0, 0); agents],
                        ..Agent::default()
                    })
                    .collect(),
                pending: BTreeMap::new(),
                pending_lines: Map::default(),
                seq: 0,
                ids: 0,
                tick: 0,
                rng: SplitMix64::new(cfg.seed),
                cfg,
                violations: Vec::new(),
                stats: AdvStats::default(),
            }),
            len,
        }
    }
    /// Memory starts as `base` (shared, never modified); `agents` private caches.
    pub fn new(base: Arc<Vec<u8>>, agents: usize, cfg: AdvConfig) -> Self {
        let len = base.len() as u64;
        Self::with_len(base, len, agents, cfg)
    }
    pub fn agent(&self, id: usize) -> AgentMem<'_> {
        AgentMem { adv: self, id }
    }
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
    /// Crash an agent: its cache (including dirty, never written back lines) is lost.
    pub fn crash(&self, agent: usize) {
        let mut g = self.lock();
        let a = &mut g.agents[agent];
        a.cache.clear();
        a.dirty_list.clear();
        a.inval_list.clear();
    }
    /// Crash an agent that restarts on the same CPU: its dirty lines are lost, its
    /// clean copies (stale by now, perhaps) stay cached.
    pub fn crash_warm(&self, agent: usize) {
        let mut g = self.lock();
        let a = &mut g.agents[agent];
        a.cache.retain(|_, c| c.dirty == 0);
        for c in a.cache.values_mut() {
            c.inval_pending = false;
        }
        a.dirty_list.clear();
        a.inval_list.clear();
    }
    /// Let everything in flight land (time passes: e.g. the 30 s liveness timeout).
    pub fn drain(&self) {
        let mut g = self.lock();
        let p = std::mem::take(&mut g.pending);
        for (_, e) in p {
            g.land(e);
        }
    }
    /// Violations found so far.
    pub fn violations(&self) -> Vec<String> {
        self.lock().violations.clone()
    }
    pub fn stats(&self) -> AdvStats {
        self.lock().stats
    }
    /// The last stale read of `agent`, explained.
    pub fn last_stale(&self, agent: usize) -> Option<StaleRead> {
        self.lock().agents[agent].last_stale
    }
    /// What memory holds (not any cache) at `off`.
    pub fn memory(&self, off: u64, buf: &mut [u8]) {
        let g = self.lock();
        for (i, b) in buf.iter_mut().enumerate() {
            let a = off as usize + i;
            *b = g.mem_line(a / L)[a % L];
        }
    }
}

/// One agent's view of the adversarial memory.
pub struct AgentMem<'a> {
    adv: &'a Adversary,
    id: usize,
}

impl AgentMem<'_> {
    /// This agent's last stale read, explained ([`Adversary::last_stale`]).
    pub fn last_stale(&self) -> Option<StaleRead> {
        self.adv.last_stale(self.id)
    }
    fn check(&self, off: u64, len: u64) {
        assert!(
            off.checked_add(len).is_some_and(|e| e <= self.adv.len),
            "adversary: out of bounds"
        );
    }
}

impl SharedMem for AgentMem<'_> {
    fn size(&self) -> u64 {
        self.adv.len
    }
    fn read(&self, off: u64, buf: &mut [u8]) {
        self.check(off, buf.len() as u64);
        self.adv.lock().read(self.id, off, buf)
    }
    fn write(&self, off: u64, data: &[u8]) {
        self.check(off, data.len() as u64);
        self.adv.lock().write(self.id, off, data.len(), |i| data[i])
    }
    fn fill(&self, off: u64, len: u64, byte: u8) {
        self.check(off, len);
        self.adv.lock().write(self.id, off, len as usize, |_| byte)
    }
    fn load_u32(&self, off: u64) -> u32 {
        let mut b = [0u8; 4];
        self.read(off, &mut b);
        u32::from_le_bytes(b)
    }
    fn store_u32(&self, off: u64, v: u32) {
        self.write(off, &v.to_le_bytes())
    }
    fn load_u64(&self, off: u64) -> u64 {
        let mut b = [0u8; 8];
        self.read(off, &mut b);
        u64::from_le_bytes(b)
    }
    fn store_u64(&self, off: u64, v: u64) {
        self.write(off, &v.to_le_bytes())
    }
    fn write_back(&self, off: u64, len: u64) {
        self.check(off, len);
        let mut g = self.adv.lock();
        g.step();
        g.seq += 1;
        for line in Inner::lines(off, len) {
            g.issue_write_back(self.id, line, true);
        }
    }
    fn invalidate(&self, off: u64, len: u64) {
        self.check(off, len);
        let mut g = self.adv.lock();
        g.step();
        g.seq += 1;
        for line in Inner::lines(off, len) {
            g.issue_write_back(self.id, line, true);
            let a = &mut g.agents[self.id];
            if let Some(c) = a.cache.get_mut(&line)
                && !c.inval_pending
            {
                c.inval_pending = true;
                a.inval_list.push(line);
            }
        }
    }
    fn store_fence(&self) {
        self.adv.lock().fence(self.id, false)
    }
    fn full_fence(&self) {
        self.adv.lock().fence(self.id, true)
    }
}

/// A tracer for one agent's engine that, whenever the engine gives up on an entry or
/// payload that never verified (`Rejected` with `StaleAfterRetries` or `DataCrc`),
/// records why the agent's last stale read was stale: the rule a broken engine skipped.
pub struct StaleWitness<'a> {
    adv: &'a Adversary,
    agent: usize,
    seen: Mutex<Vec<String>>,
}

impl<'a> StaleWitness<'a> {
    pub fn new(adv: &'a Adversary, agent: usize) -> Self {
        Self {
            adv,
            agent,
            seen: Mutex::new(Vec::new()),
        }
    }
    /// Explanations of the give-ups so far (oldest first).
    pub fn take(&self) -> Vec<String> {
        std::mem::take(&mut self.seen.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

impl Tracer for StaleWitness<'_> {
    fn event(&self, ev: &TraceEvent) {
        if let TraceEvent::Rejected {
            chan,
            pos,
            why: why @ (Reject::StaleAfterRetries | Reject::DataCrc),
        } = ev
        {
            let s = match self.adv.last_stale(self.agent) {
                Some(s) => format!("gave up ({why:?}) at chan {chan} pos {pos}: {s}"),
                None => format!("gave up ({why:?}) at chan {chan} pos {pos}: no stale read seen"),
            };
            self.seen.lock().unwrap_or_else(|p| p.into_inner()).push(s);
        }
    }
}
