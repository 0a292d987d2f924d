//! The journal-commit workload: a journal commit at QD1.
//!
//! A transaction = `blocks` data block writes (4 KiB, STANDARD, one at a time), then a
//! commit record (4 KiB) that must be durable before the transaction counts:
//! * **fua**: the commit is CRITICAL (what ublk FUA maps to): it completes only once
//!   durable, so every transaction waits for a media flush;
//! * **tokens**: the commit is STANDARD: the host goes on as soon as it completes and
//!   the device confirms durability asynchronously through the watermark (group
//!   commit at the device's STANDARD bound). A run ends only once every write it
//!   made is confirmed durable, and that wait is part of its time.
//!
//! Both run on one queue in the same session, so they see the same device and media.
//! Used by the `journal` bench (`host/benches/journal.rs`: native engines, simulated media) and by
//! `cargo run -- bench journal` (the device kernel in QEMU with a virtio-blk disk).

use crate::engine::{HostError, HostQueue, Intent, Request};
use device::layout::op;
use device::shm::SharedMem;
use std::time::{Duration, Instant};

/// Workload parameters.
#[derive(Clone, Copy, Debug)]
pub struct Journal {
    /// Data blocks per transaction.
    pub blocks: u64,
    /// Seconds each mode runs (plus the final wait for durability).
    pub secs: f64,
    /// Bytes of the device the journal cycles through (a multiple of 4 KiB).
    pub span: u64,
    /// A request that does not complete (or a durability wait that makes no
    /// progress) within this long fails the run instead of hanging it.
    pub stall: Duration,
}

/// What one mode measured.
#[derive(Clone, Copy, Debug, Default)]
pub struct Run {
    pub txns: u64,
    pub secs: f64,
    /// Tokens confirmed asynchronously during the run and their confirmation latency.
    pub confirmed: u64,
    pub latency_mean_ns: f64,
    pub latency_max_ns: u64,
}

impl Run {
    pub fn rate(&self) -> f64 {
        self.txns as f64 / self.secs.max(1e-9)
    }
}

/// Both modes, measured back to back on the same queue.
#[derive(Clone, Copy, Debug)]
pub struct Comparison {
    pub fua: Run,
    pub tokens: Run,
}

impl Comparison {
    pub fn ratio(&self) -> f64 {
        self.tokens.rate() / self.fua.rate().max(1e-9)
    }

    /// The lines the bench commands print.
    pub fn report(&self, j: &Journal) -> String {
        let (f, t) = (&self.fua, &self.tokens);
        format!(
            "journal commit QD1: {} data blocks + 1 commit record, 4 KiB each\n\
             fua:    {:>8.0} commits/s ({} in {:.2} s; every commit CRITICAL)\n\
             tokens: {:>8.0} commits/s ({} in {:.2} s, all confirmed durable); \
             confirmation latency mean {:.2} ms max {:.2} ms over {} tokens\n\
             ratio tokens/fua: {:.1}x",
            j.blocks,
            f.rate(),
            f.txns,
            f.secs,
            t.rate(),
            t.txns,
            t.secs,
            t.latency_mean_ns / 1e6,
            t.latency_max_ns as f64 / 1e6,
            t.confirmed,
            self.ratio()
        )
    }
}

fn err(what: &str, e: HostError) -> String {
    format!("{what}: {e:?}")
}

fn submit<M: SharedMem + ?Sized>(
    q: &mut HostQueue<'_, M>,
    req: Request,
    data: &[u8],
    intent: Intent,
    stall: Duration,
) -> Result<(), String> {
    let t = Instant::now();
    loop {
        match q.submit_intent(req, data, intent) {
            Ok(_) => return Ok(()),
            Err(HostError::Busy) if t.elapsed() < stall => std::hint::spin_loop(),
            Err(e) => return Err(err("submit", e)),
        }
    }
}

fn wait_one<M: SharedMem + ?Sized>(
    q: &mut HostQueue<'_, M>,
    buf: &mut [u8],
    now: &dyn Fn() -> u64,
    stall: Duration,
) -> Result<(), String> {
    let t = Instant::now();
    loop {
        match q.poll_at(buf, now()) {
            Ok(Some(c)) if c.result == 0 => return Ok(()),
            Ok(Some(c)) => return Err(format!("request failed with {}", c.result)),
            Ok(None) if t.elapsed() < stall => std::hint::spin_loop(),
            Ok(None) => return Err("no completion: the device stopped answering".to_string()),
            Err(e) => return Err(err("poll", e)),
        }
    }
}

/// One mode: `tokens` false = FUA commits, true = STANDARD commits + watermark.
pub fn run<M: SharedMem + ?Sized>(
    q: &mut HostQueue<'_, M>,
    j: &Journal,
    tokens: bool,
    now: &dyn Fn() -> u64,
) -> Result<Run, String> {
    if j.span < 4096 {
        return Err("journal span must be at least one 4 KiB block".to_string());
    }
    let data = vec![0xA5u8; 4096];
    let mut buf = vec![0u8; 4096];
    // The maximum is per run (the mean comes from the differences of the sums).
    q.tokens.latency_max_ns = 0;
    let before = q.tokens;
    let t = Instant::now();
    let mut txns = 0u64;
    let mut off = 0u64;
    let mut next = || {
        let o = off;
        off = (off + 4096) % (j.span / 4096 * 4096);
        Request {
            op: op::WRITE,
            offset: o,
            len: 4096,
        }
    };
    while t.elapsed().as_secs_f64() < j.secs {
        for _ in 0..j.blocks {
            submit(q, next(), &data, Intent::Standard, j.stall)?;
            wait_one(q, &mut buf, now, j.stall)?;
        }
        let intent = if tokens {
            Intent::Standard
        } else {
            Intent::Critical
        };
        submit(q, next(), &data, intent, j.stall)?;
        wait_one(q, &mut buf, now, j.stall)?;
        if tokens {
            q.poll_durable(now()).map_err(|e| err("watermark", e))?;
        }
        txns += 1;
    }
    // Every commit must be durable before the run counts.
    let mut progress = (Instant::now(), q.tokens.confirmed);
    while !q.all_completed_durable() {
        q.poll_durable(now()).map_err(|e| err("watermark", e))?;
        if q.tokens.confirmed != progress.1 {
            progress = (Instant::now(), q.tokens.confirmed);
        } else if progress.0.elapsed() > j.stall {
            return Err("the watermark stopped moving before every write was durable".into());
        }
        if q.tokens.lost != before.lost {
            return Err("the device lost staged writes (new incarnation) during the run".into());
        }
        std::hint::spin_loop();
    }
    let after = q.tokens;
    let samples = after.latency_samples - before.latency_samples;
    Ok(Run {
        txns,
        secs: t.elapsed().as_secs_f64(),
        confirmed: samples,
        latency_mean_ns: (after.latency_sum_ns - before.latency_sum_ns) as f64
            / samples.max(1) as f64,
        latency_max_ns: after.latency_max_ns,
    })
}

/// FUA first, then tokens, on the same queue. The queue must have negotiated
/// durability tokens (otherwise "tokens" would mean nothing).
pub fn compare<M: SharedMem + ?Sized>(
    q: &mut HostQueue<'_, M>,
    j: &Journal,
    now: &dyn Fn() -> u64,
) -> Result<Comparison, String> {
    if !q.durable_tokens() {
        return Err("the backend did not offer durability tokens".to_string());
    }
    let fua = run(q, j, false, now)?;
    let tokens = run(q, j, true, now)?;
    Ok(Comparison { fua, tokens })
}
