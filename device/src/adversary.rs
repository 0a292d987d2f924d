//! The adversarial non-coherent shared memory (extensions §3), for native tests.
//!
//! One memory, one private write-back cache per agent:
//! * a load hits the agent's cached line if it has one (possibly stale) until the
//!   agent invalidates it; a miss fills the line from memory;
//! * a store dirties the agent's cached line and stays invisible to other agents;
//! * `write_back` sends the dirty line (all 64 bytes) towards memory, where it
//!   lands after a random delay (≤ `max_delay` ticks), in any order across lines
//!   (FIFO per line); dirty lines are also written back *spontaneously* (early)
//!   with probability `evict_per_mille` per tick;
//! * `invalidate` drops the agent's copies (writing dirty ones back, like CLFLUSH);
//! * fences give no cross-line ordering at all ("nothing orders lines across the link").
//!
//! Violations it reports by itself: two agents with dirty data in one line at the
//! same time, and a write-back that overwrites bytes another agent wrote (a lost
//! update: the line was shared by two writers). Stale reads are not violations by
//! themselves — the protocol must detect them (CRC, tid) and re-read; tests check
//! the data end to end against a model disk.
//!
//! Every shared-memory operation is one *tick*. Memory is copy-on-write over a
//! shared base snapshot so thousands of schedules start cheaply.

use crate::rng::SplitMix64;
use crate::shm::SharedMem;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

const L: usize = 64;

#[derive(Clone, Copy, Debug)]
pub struct AdvConfig {
    pub seed: u64,
    /// Per tick: chance (‰) that one random dirty line is written back early.
    pub evict_per_mille: u32,
    /// Upper bound on the delay between a write-back and its landing in memory.
    pub max_delay: u64,
}
impl Default for AdvConfig {
    fn default() -> Self {
        Self {
            seed: 1,
            evict_per_mille: 30,
            max_delay: 48,
        }
    }
}

#[derive(Clone)]
struct CLine {
    data: [u8; L],
    dirty: u64,
}

struct Pending {
    line: usize,
    agent: usize,
    data: [u8; L],
    mask: u64,
    due: u64,
}

struct Inner {
    base: Arc<Vec<u8>>,
    overlay: HashMap<usize, [u8; L]>,
    caches: Vec<HashMap<usize, CLine>>,
    dirty_lists: Vec<Vec<usize>>,
    pending: Vec<Pending>,
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
    pub landed: u64,
    pub stale_hits: u64,
}

impl Inner {
    fn mem_line(&self, line: usize) -> [u8; L] {
        if let Some(l) = self.overlay.get(&line) {
            return *l;
        }
        let mut a = [0u8; L];
        let o = line * L;
        let end = (o + L).min(self.base.len());
        a[..end - o].copy_from_slice(&self.base[o..end]);
        a
    }
    fn land(&mut self, p: Pending) {
        let cur = self.mem_line(p.line);
        let mut clobbered = false;
        for (i, (&new, &old)) in p.data.iter().zip(cur.iter()).enumerate() {
            if p.mask & (1 << i) == 0 && new != old {
                clobbered = true;
            }
        }
        if clobbered {
            self.violations.push(format!(
                "lost update: agent {} wrote back line {:#x} over bytes another agent had written (two writers share the line)",
                p.agent,
                p.line * L
            ));
        }
        self.overlay.insert(p.line, p.data);
        self.stats.landed += 1;
    }
    fn issue_write_back(&mut self, agent: usize, line: usize) {
        let Some(cl) = self.caches[agent].get_mut(&line) else {
            return;
        };
        if cl.dirty == 0 {
            return;
        }
        let (data, mask) = (cl.data, cl.dirty);
        cl.dirty = 0;
        self.stats.write_backs += 1;
        if let Some(p) = self
            .pending
            .iter_mut()
            .find(|p| p.line == line && p.agent == agent)
        {
            // Same line, same agent: the newer snapshot supersedes (FIFO per line).
            p.data = data;
            p.mask |= mask;
            return;
        }
        let due = self.tick + 1 + self.rng.next() % self.cfg.max_delay.max(1);
        self.pending.push(Pending {
            line,
            agent,
            data,
            mask,
            due,
        });
    }
    fn step(&mut self) {
        self.tick += 1;
        self.stats.ticks += 1;
        let tick = self.tick;
        let mut i = 0;
        while i < self.pending.len() {
            if self.pending[i].due <= tick {
                let p = self.pending.swap_remove(i);
                self.land(p);
            } else {
                i += 1;
            }
        }
        if self.rng.next() % 1000 < self.cfg.evict_per_mille as u64 {
            let a = (self.rng.next() % self.caches.len() as u64) as usize;
            let n = self.dirty_lists[a].len();
            if n > 0 {
                let k = (self.rng.next() % n as u64) as usize;
                let line = self.dirty_lists[a].swap_remove(k);
                if self.caches[a].get(&line).is_some_and(|c| c.dirty != 0) {
                    self.stats.early_write_backs += 1;
                    self.issue_write_back(a, line);
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
    fn read(&mut self, agent: usize, off: u64, buf: &mut [u8]) {
        self.step();
        let mut pos = 0usize;
        for line in Self::lines(off, buf.len() as u64) {
            let cl = match self.caches[agent].get(&line) {
                Some(c) => {
                    if c.dirty == 0 && c.data != self.mem_line(line) {
                        self.stats.stale_hits += 1;
                    }
                    c.data
                }
                None => {
                    let d = self.mem_line(line);
                    self.caches[agent].insert(line, CLine { data: d, dirty: 0 });
                    d
                }
            };
            let lo = (off as usize).saturating_sub(line * L);
            let n = (L - lo).min(buf.len() - pos);
            buf[pos..pos + n].copy_from_slice(&cl[lo..lo + n]);
            pos += n;
        }
    }
    fn write(&mut self, agent: usize, off: u64, len: usize, src: impl Fn(usize) -> u8) {
        self.step();
        let mut pos = 0usize;
        for line in Self::lines(off, len as u64) {
            for (other, cache) in self.caches.iter().enumerate() {
                if other != agent && cache.get(&line).is_some_and(|c| c.dirty != 0) {
                    self.violations.push(format!(
                        "agents {agent} and {other} both have dirty data in line {:#x}",
                        line * L
                    ));
                }
            }
            let lo = (off as usize).saturating_sub(line * L);
            let n = (L - lo).min(len - pos);
            if !self.caches[agent].contains_key(&line) {
                let d = self.mem_line(line);
                self.caches[agent].insert(line, CLine { data: d, dirty: 0 });
            }
            let cl = self.caches[agent].get_mut(&line).unwrap();
            if cl.dirty == 0 {
                self.dirty_lists[agent].push(line);
            }
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
    /// Memory starts as `base` (shared, never modified); `agents` private caches.
    pub fn new(base: Arc<Vec<u8>>, agents: usize, cfg: AdvConfig) -> Self {
        let len = base.len() as u64;
        Self {
            inner: Mutex::new(Inner {
                base,
                overlay: HashMap::new(),
                caches: vec![HashMap::new(); agents],
                dirty_lists: vec![Vec::new(); agents],
                pending: Vec::new(),
                tick: 0,
                rng: SplitMix64::new(cfg.seed),
                cfg,
                violations: Vec::new(),
                stats: AdvStats::default(),
            }),
            len,
        }
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
        g.caches[agent].clear();
        g.dirty_lists[agent].clear();
    }
    /// Let everything in flight land (time passes: e.g. the 30 s liveness timeout).
    pub fn drain(&self) {
        let mut g = self.lock();
        let p = std::mem::take(&mut g.pending);
        for e in p {
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
        for line in Inner::lines(off, len) {
            g.issue_write_back(self.id, line);
        }
    }
    fn invalidate(&self, off: u64, len: u64) {
        self.check(off, len);
        let mut g = self.adv.lock();
        g.step();
        for line in Inner::lines(off, len) {
            g.issue_write_back(self.id, line);
            g.caches[self.id].remove(&line);
        }
    }
    fn store_fence(&self) {
        self.adv.lock().step()
    }
    fn full_fence(&self) {
        self.adv.lock().step()
    }
}
