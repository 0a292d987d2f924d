//! A sequential simulation of a device that keeps every promise of the model, used to
//! generate legal histories: requests are invoked, take effect block by block at
//! instants inside their interval, complete; a crash keeps per block one version not
//! older than its durable floor.

#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};

use history::*;

pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x9e37_79b9_7f4a_7c15 | 1)
    }
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

#[derive(Clone, Debug)]
pub struct Params {
    pub seed: u64,
    pub level: Level,
    pub chans: u16,
    pub qd: usize,
    /// Size of the disk the workload touches, in 4 KiB blocks.
    pub blocks: u64,
    pub ops: usize,
    /// Largest request in sectors.
    pub max_sectors: u64,
    pub crash_percent: u64,
    pub fail_percent: u64,
}

struct Flight {
    idx: usize,
    /// Blocks not yet applied / captured, in order.
    todo: VecDeque<u64>,
    fail: bool,
    /// Flush: the writes it covers (completed before it was invoked).
    covers: Vec<usize>,
}

/// The generated history plus what the simulation knows about it.
pub struct Run {
    pub h: History,
    /// Per crash: the ops (indices) confirmed durable before it.
    pub durable_before: Vec<Vec<usize>>,
}

pub fn run(p: &Params) -> Run {
    let mut rng = Rng::new(p.seed);
    let zero = zero_digest();
    let sectors = p.blocks * SECTORS_PER_BLOCK as u64;
    let mut h = History::new(Header {
        level: p.level,
        ..Header::default()
    });
    let mut disk = vec![zero; sectors as usize];
    // per block: versions since the last crash (values), and the durable floor index
    let mut versions: Vec<Vec<Vec<Digest>>> = (0..p.blocks).map(|_| vec![vec![zero; 8]]).collect();
    let mut floor = vec![0usize; p.blocks as usize];
    // (op idx, block) -> version index it produced, this epoch
    let mut produced: HashMap<usize, Vec<(u64, usize)>> = HashMap::new();
    let mut flights: Vec<Flight> = Vec::new();
    let mut tids = vec![0u64; p.chans as usize];
    let mut t = 1u64;
    let mut completed_this_epoch: Vec<usize> = Vec::new();
    let mut durable_epoch: Vec<usize> = Vec::new();
    let mut run = Run {
        h: History::default(),
        durable_before: Vec::new(),
    };
    let fifo = p.level == Level::Cbd;
    let mut invoked = 0usize;
    let mut crashes = 0;

    let mark_durable = |i: usize,
                        floor: &mut Vec<usize>,
                        produced: &mut HashMap<usize, Vec<(u64, usize)>>,
                        durable_epoch: &mut Vec<usize>| {
        // once durable, an op's versions are the floor; later marks change nothing
        if let Some(list) = produced.remove(&i) {
            for (b, vi) in list {
                floor[b as usize] = floor[b as usize].max(vi);
            }
            durable_epoch.push(i);
        }
    };

    while invoked < p.ops || !flights.is_empty() {
        t += 1;
        let action = rng.below(100);
        if action < 35 && invoked < p.ops {
            // invoke
            let chan = rng.below(p.chans as u64) as u16;
            if flights.iter().filter(|f| h.ops[f.idx].chan == chan).count() >= p.qd {
                continue;
            }
            let tid = tids[chan as usize];
            tids[chan as usize] += 1;
            let k = rng.below(100);
            let kind = if k < 45 {
                OpKind::Write
            } else if k < 88 {
                OpKind::Read
            } else {
                OpKind::Flush
            };
            let id = h.ops.len() as OpId;
            let (offset, len, written) = if kind == OpKind::Flush {
                (0, 0, Vec::new())
            } else {
                let aligned = rng.chance(60);
                let n = if aligned {
                    8 * (1 + rng.below(p.max_sectors.div_ceil(8)))
                } else {
                    1 + rng.below(p.max_sectors)
                }
                .min(sectors);
                let start = if aligned {
                    8 * rng.below((sectors - n) / 8 + 1)
                } else {
                    rng.below(sectors - n + 1)
                };
                let written = if kind == OpKind::Write {
                    (0..n).map(|k| ((id + 1) << 24) | (k + 1)).collect()
                } else {
                    Vec::new()
                };
                (start * SECTOR, (n * SECTOR) as u32, written)
            };
            h.ops.push(Op {
                id,
                chan,
                tid,
                kind,
                offset,
                len,
                written,
                read: Vec::new(),
                invoke: t,
                complete: None,
                durable: false,
            });
            let idx = h.ops.len() - 1;
            let op = &h.ops[idx];
            let mut todo = VecDeque::new();
            if kind != OpKind::Flush {
                let (s, n) = op.sectors();
                for b in s / 8..=(s + n - 1) / 8 {
                    todo.push_back(b);
                }
                h.ops[idx].read = if kind == OpKind::Read {
                    vec![0; n as usize]
                } else {
                    Vec::new()
                };
            }
            let covers = if kind == OpKind::Flush {
                completed_this_epoch.clone()
            } else {
                Vec::new()
            };
            flights.push(Flight {
                idx,
                todo,
                fail: rng.chance(p.fail_percent),
                covers,
            });
            invoked += 1;
        } else if action < 70 && !flights.is_empty() {
            // one block of one request takes effect
            let mut cands: Vec<usize> = Vec::new();
            let mut seen = vec![false; p.chans as usize];
            for (i, f) in flights.iter().enumerate() {
                let ch = h.ops[f.idx].chan as usize;
                // at the CBD level only the oldest request of its channel not yet done
                if !(f.todo.is_empty() || fifo && seen[ch]) {
                    cands.push(i);
                    seen[ch] = true;
                }
            }
            if cands.is_empty() {
                continue;
            }
            let fi = cands[rng.below(cands.len() as u64) as usize];
            let b = flights[fi].todo.pop_front().unwrap_or(0);
            let idx = flights[fi].idx;
            let (s, n) = h.ops[idx].sectors();
            let lo = s.max(b * 8);
            let hi = (s + n).min(b * 8 + 8);
            match h.ops[idx].kind {
                OpKind::Write => {
                    if flights[fi].fail && rng.chance(50) {
                        continue; // a failed write leaves this block alone
                    }
                    for sec in lo..hi {
                        disk[sec as usize] = h.ops[idx].written[(sec - s) as usize];
                    }
                    let v: Vec<Digest> = disk[(b * 8) as usize..(b * 8 + 8) as usize].to_vec();
                    versions[b as usize].push(v);
                    produced
                        .entry(idx)
                        .or_default()
                        .push((b, versions[b as usize].len() - 1));
                }
                OpKind::Read => {
                    for sec in lo..hi {
                        h.ops[idx].read[(sec - s) as usize] = disk[sec as usize];
                    }
                }
                _ => {}
            }
        } else if action < 92 && !flights.is_empty() {
            // a completion
            let mut cands: Vec<usize> = Vec::new();
            let mut seen = vec![false; p.chans as usize];
            for (i, f) in flights.iter().enumerate() {
                let ch = h.ops[f.idx].chan as usize;
                // at the CBD level only the oldest request of its channel completes
                if f.todo.is_empty() && !(fifo && seen[ch]) {
                    cands.push(i);
                }
                seen[ch] = true;
            }
            if cands.is_empty() {
                continue;
            }
            let fi = cands[rng.below(cands.len() as u64) as usize];
            let f = flights.remove(fi);
            let idx = f.idx;
            let kind = h.ops[idx].kind;
            let fail = f.fail && kind != OpKind::Flush;
            h.ops[idx].complete = Some((t, if fail { Outcome::Err(5) } else { Outcome::Ok }));
            if fail && kind == OpKind::Read {
                h.ops[idx].read.clear();
            }
            if kind == OpKind::Write {
                completed_this_epoch.push(idx);
                if !fail && rng.chance(10) {
                    h.ops[idx].durable = true;
                    mark_durable(idx, &mut floor, &mut produced, &mut durable_epoch);
                }
            }
            if kind == OpKind::Flush {
                for &w in &f.covers {
                    if h.ops[w].ok() {
                        mark_durable(w, &mut floor, &mut produced, &mut durable_epoch);
                    }
                }
            }
        } else if action < 96 && fifo {
            // a durable watermark: everything below the oldest in-flight tid
            let chan = rng.below(p.chans as u64) as u16;
            let wm = flights
                .iter()
                .filter(|f| h.ops[f.idx].chan == chan)
                .map(|f| h.ops[f.idx].tid)
                .min()
                .unwrap_or(tids[chan as usize]);
            let covered: Vec<usize> = completed_this_epoch
                .iter()
                .copied()
                .filter(|&i| h.ops[i].chan == chan && h.ops[i].tid < wm)
                .collect();
            for i in covered {
                mark_durable(i, &mut floor, &mut produced, &mut durable_epoch);
            }
            h.watermarks.push(Watermark { t, chan, tid: wm });
        } else if rng.below(100) < p.crash_percent && crashes < 3 {
            // crash: per block one version at or after the floor
            crashes += 1;
            let mut media = Vec::new();
            for b in 0..p.blocks as usize {
                let vs = &versions[b];
                let pick = floor[b] + rng.below((vs.len() - floor[b]) as u64) as usize;
                let v = vs[pick].clone();
                disk[b * 8..b * 8 + 8].copy_from_slice(&v);
                media.extend(v.iter().copied());
                versions[b] = vec![v];
                floor[b] = 0;
            }
            let cut = if rng.chance(30) { sectors / 2 } else { sectors };
            h.crashes.push(Crash {
                t,
                media: vec![MediaRange {
                    offset: 0,
                    digests: media[..cut as usize].to_vec(),
                }],
            });
            run.durable_before.push(std::mem::take(&mut durable_epoch));
            // in flight: abandoned (never complete)
            flights.clear();
            produced.clear();
            completed_this_epoch.clear();
        }
    }
    for op in &mut h.ops {
        if op.kind == OpKind::Read && !op.ok() {
            op.read.clear(); // abandoned at a crash: nothing was returned
        }
    }
    run.h = h;
    run
}
