//! [`CbdDisk`]: the ublk-facing [`Disk`] over the host (blkdev) engine, [`crate::engine`].
//! This file: dev-start, the state the queues share, token counters, the heartbeat thread;
//! `queue.rs`: [`CbdQueue`], what one ublk queue thread runs.
//!
//! * dev-start gives one [`HostQueue`] per channel; each moves into its ublk queue thread.
//! * Requests are submitted and their completions polled in that thread: one at a time
//!   ([`QueueIo::submit`]), or as ublk hands them over ([`QueueIo::start`]), each reported as
//!   soon as it is done ([`QueueIo::poll`]).
//!   While waiting, the backend record is re-read every [`LIVENESS_CHECK_NS`] (or
//!   [`LIVENESS_CHECK_POLLS`] empty polls): a backend that stopped or whose heartbeat is older
//!   than the 30 s timeout fails the requests with `EIO` instead of hanging them.
//! * With durability tokens negotiated (the backend offers them, no `--plain-v3`): a FUA write
//!   is sent CRITICAL (it completes once durable; no FLUSH), and a ublk FLUSH sends **no
//!   command**: it waits until, on every channel, the durable watermark covers every write
//!   completed before the flush arrived (`EIO` if the backend lost completed writes since the
//!   last flush). Plain writes carry `CbdOptions::default_intent`.
//! * Without tokens (plain v3): FLUSH → CBD FLUSH; a FUA write is followed by a CBD FLUSH
//!   before it completes.
//! * Each channel's [`HostQueue`] sits behind its own mutex, held for one engine call at a time
//!   (never two at once), so a flush on one queue and the stats can read the other channels.
//! * A heartbeat thread owns the [`Blkdev`] record and rewrites it (and the host record) every
//!   5 s; [`Disk::shutdown`] stops it and clears the blkdev record (dev-stop).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::engine::{Blkdev, Host, HostConfig, HostError, HostQueue, Intent, TokenStats};
use device::layout::features;
use device::shm::Shm;
use device::trace::NoTrace;
use device::transport::Transport;

mod liveness;
mod queue;
mod record;
mod replay;

pub use liveness::{DEAD_AFTER_NS, DEFAULT_RECOVER_TIMEOUT_NS, Verdict};
pub use queue::CbdQueue;
pub use record::{FLUSH_CHANNEL, HistoryLog, header as history_header};
pub use replay::MAX_PIECES as REPLAY_MAX_PIECES;

use super::attach::{CbdError, CbdOptions, Registered};
use super::disk::{Disk, QueueIo, Stats};
use super::mem::MappedMem;

/// How often (in clock time) a waiting request re-checks the backend's liveness...
pub const LIVENESS_CHECK_NS: u64 = 100_000_000;
/// ... or after this many empty polls, whichever comes first (independent of the clock).
pub const LIVENESS_CHECK_POLLS: u32 = 1 << 16;
/// How long dev-start waits for every channel to answer RESET (v3 uses 30 s).
pub const READY_TIMEOUT_NS: u64 = 30_000_000_000;
/// Default replay buffer (`--replay-buffer`): 32 MiB of written data.
pub const DEFAULT_REPLAY_BYTES: usize = 32 << 20;
/// How long a token flush sleeps between two looks at the watermarks.
pub const FLUSH_WAIT_SLEEP: Duration = Duration::from_micros(100);

/// Nanosecond wall clock (CLOCK_REALTIME in production; injectable for tests).
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

static TRACE: NoTrace = NoTrace;

type Q = HostQueue<'static, MappedMem>;

/// One channel: its engine queue and the end (max tid + 1) of the writes completed on it.
struct Chan {
    q: Q,
    write_end: u64,
    /// What the history recorded of its watermark.
    marks: record::ChanMarks,
}

type ChanRef = Arc<Mutex<Chan>>;

fn lock(c: &ChanRef) -> std::sync::MutexGuard<'_, Chan> {
    c.lock().unwrap_or_else(|p| p.into_inner())
}

/// What every queue of the disk shares.
struct Shared {
    chans: Vec<ChanRef>,
    /// Durability tokens negotiated on every channel (and not `--plain-v3`).
    tokens: bool,
    default_intent: Intent,
    /// DISCARD / WRITE_ZEROES go to the backend: it offers them (`features::DISCARD_WZ`)
    /// and not `--plain-v3`. Otherwise they fail with `EOPNOTSUPP` here.
    discard_wz: bool,
    stats: Stats,
    /// CBD FLUSH commands sent (plain v3: one per ublk flush and per FUA write).
    cbd_flushes_sent: AtomicU64,
    /// ublk flushes answered from the watermarks (no command).
    flushes_by_watermark: AtomicU64,
    /// FUA writes sent CRITICAL.
    critical_writes: AtomicU64,
    /// Sum of the channels' lost tokens already reported as a failed flush.
    lost_reported: Mutex<u64>,
    /// `--history`: the log of what was submitted and completed.
    history: Option<record::Recording>,
    /// The replay buffer (durability tokens on and `--replay-buffer` > 0).
    replay: Option<Mutex<replay::Replay>>,
    /// Per channel: the engine's `lost_below` as last seen (pieces below need replay).
    lost_below: Vec<AtomicU64>,
    /// Bumped after any channel's `lost_below` grew: queues look for pieces to replay.
    restart_gen: AtomicU64,
    /// Is the backend there (read by the heartbeat thread and by waiting queues)?
    live: Mutex<liveness::Liveness>,
    tp: Transport<'static, MappedMem>,
}

/// Durability counters of the whole disk (sum over the channels), readable while running.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TokenSummary {
    pub negotiated: bool,
    pub issued: u64,
    pub completed: u64,
    pub confirmed: u64,
    pub confirmed_at_completion: u64,
    pub lost: u64,
    /// Completed, not confirmed yet.
    pub outstanding: u64,
    pub latency_mean_us: u64,
    pub latency_max_us: u64,
    /// Sum of the channels' watermarks (exclusive tids; each grows monotonically).
    pub watermark_sum: u64,
    pub cbd_flushes_sent: u64,
    pub flushes_by_watermark: u64,
    pub critical_writes: u64,
    /// Replay buffer: requests and bytes sent again after a backend restart, data held now.
    pub replayed_writes: u64,
    pub replayed_bytes: u64,
    pub replay_held_bytes: u64,
    /// Backend outages the host held I/O through (down → alive again).
    pub outages: u64,
}

fn lock_replay(r: &Mutex<replay::Replay>) -> std::sync::MutexGuard<'_, replay::Replay> {
    r.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    /// `poll_durable` on channel `idx` (held as `g`), recording in the history what it
    /// showed (a new incarnation, a higher watermark).
    fn poll_durable(&self, idx: usize, g: &mut Chan, now: u64) -> Result<(), HostError> {
        g.q.poll_durable(now)?;
        if let Some(h) = &self.history {
            h.durable_seen(idx as u16, g);
        }
        self.after_durable(idx, g);
        Ok(())
    }

    /// What a look at channel `idx`'s durability line means for the replay buffer: a new
    /// restart seen (its pieces from before need replay), confirmed pieces leave.
    fn after_durable(&self, idx: usize, g: &Chan) {
        let lb = g.q.lost_below();
        if lb > self.lost_below[idx].swap(lb, Ordering::AcqRel) {
            self.restart_gen.fetch_add(1, Ordering::AcqRel);
            log::warn!(
                "channel {idx}: the backend restarted (incarnation {}); {}",
                g.q.tokens.incarnation,
                if self.replay.is_some() {
                    "replaying the writes it had not made durable"
                } else {
                    "writes it had not made durable are lost (no replay buffer)"
                }
            );
        }
        if let Some(r) = &self.replay {
            let q = &g.q;
            lock_replay(r).confirm(idx as u16, q.tokens.watermark, |t| q.is_durable(t));
        }
    }

    /// Every channel's `lost_below` as last seen.
    fn lost_below_now(&self) -> Vec<u64> {
        self.lost_below
            .iter()
            .map(|a| a.load(Ordering::Acquire))
            .collect()
    }

    /// The liveness verdict now (reads the backend record).
    fn observe(&self, now: u64) -> Verdict {
        self.live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .observe(&self.tp, now)
    }

    fn tokens_summary(&self, now: u64) -> TokenSummary {
        let mut t = TokenStats::default();
        for (i, c) in self.chans.iter().enumerate() {
            let mut g = lock(c);
            if self.tokens
                && let Err(e) = self.poll_durable(i, &mut g, now)
            {
                log::debug!("stats: poll_durable: {e:?}");
            }
            let s = g.q.tokens;
            t.issued += s.issued;
            t.completed += s.completed;
            t.confirmed += s.confirmed;
            t.confirmed_at_completion += s.confirmed_at_completion;
            t.lost += s.lost;
            t.latency_sum_ns += s.latency_sum_ns;
            t.latency_samples += s.latency_samples;
            t.latency_max_ns = t.latency_max_ns.max(s.latency_max_ns);
            t.watermark += s.watermark;
        }
        let (replayed_writes, replayed_bytes, replay_held_bytes) =
            self.replay.as_ref().map_or((0, 0, 0), |r| {
                let r = lock_replay(r);
                (r.replayed_requests, r.replayed_bytes, r.used() as u64)
            });
        let outages = self.live.lock().unwrap_or_else(|p| p.into_inner()).outages;
        TokenSummary {
            replayed_writes,
            replayed_bytes,
            replay_held_bytes,
            outages,
            negotiated: self.tokens,
            issued: t.issued,
            completed: t.completed,
            confirmed: t.confirmed,
            confirmed_at_completion: t.confirmed_at_completion,
            lost: t.lost,
            outstanding: t.completed.saturating_sub(t.confirmed + t.lost),
            latency_mean_us: t.mean_latency_ns() / 1000,
            latency_max_us: t.latency_max_ns / 1000,
            watermark_sum: t.watermark,
            cbd_flushes_sent: self.cbd_flushes_sent.load(Ordering::Relaxed),
            flushes_by_watermark: self.flushes_by_watermark.load(Ordering::Relaxed),
            critical_writes: self.critical_writes.load(Ordering::Relaxed),
        }
    }
}

impl std::fmt::Display for TokenSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "cbd_flushes_sent={} flushes_by_watermark={} critical_writes={} durable_tokens={} \
             tokens_issued={} tokens_completed={} tokens_confirmed={} \
             tokens_confirmed_at_completion={} tokens_outstanding={} tokens_lost={} \
             confirm_latency_mean_us={} confirm_latency_max_us={} watermark_sum={} \
             replayed_writes={} replayed_bytes={} replay_held_bytes={} outages={}",
            self.cbd_flushes_sent,
            self.flushes_by_watermark,
            self.critical_writes,
            if self.negotiated { "on" } else { "off" },
            self.issued,
            self.completed,
            self.confirmed,
            self.confirmed_at_completion,
            self.outstanding,
            self.lost,
            self.latency_mean_us,
            self.latency_max_us,
            self.watermark_sum,
            self.replayed_writes,
            self.replayed_bytes,
            self.replay_held_bytes,
            self.outages
        )
    }
}

/// The CBD disk: size, the channels, the heartbeat thread.
pub struct CbdDisk {
    reg: Registered,
    shared: Arc<Shared>,
    claimed: Mutex<Vec<bool>>,
    clock: Clock,
    stop: Arc<AtomicBool>,
    heartbeat: Mutex<Option<std::thread::JoinHandle<()>>>,
}

fn host_err(step: &'static str, e: HostError) -> CbdError {
    match e {
        HostError::Transport(err) => CbdError::Transport { step, err },
        other => CbdError::Engine { step, err: other },
    }
}

impl CbdDisk {
    /// register → check backend → dev-start with `opts.queues` channels → wait until every
    /// channel answered RESET → power window → start the heartbeat thread.
    pub fn start(
        mem: &'static MappedMem,
        opts: &CbdOptions,
        clock: Clock,
    ) -> Result<CbdDisk, CbdError> {
        Self::start_recording(mem, opts, clock, None)
    }

    /// [`CbdDisk::start`], recording the history of every request in `history`
    /// (`cbd-host --history`; see `record.rs` for what is recorded).
    pub fn start_recording(
        mem: &'static MappedMem,
        opts: &CbdOptions,
        clock: Clock,
        history: Option<Arc<HistoryLog>>,
    ) -> Result<CbdDisk, CbdError> {
        // Clear errors for missing/stopped/dead backends first.
        let reg0 = super::attach::prepare(mem, opts, &*clock)?;
        let hostname: &'static str = Box::leak(opts.hostname.clone().into_boxed_str());
        let cfg = HostConfig {
            hostname,
            noncoherent: opts.noncoherent && !opts.plain_v3,
            queue_depth: opts.depth.clamp(1, crate::engine::MAX_DEPTH as u16) as usize,
            durable_tokens: !opts.plain_v3,
            ..HostConfig::default()
        };
        let shm = Shm::new(mem, &TRACE);
        let host = Host::register(shm, cfg, clock()).map_err(|e| host_err("registering", e))?;
        let mut dev = match Self::start_blkdev(&host, opts, &*clock) {
            Ok(d) => d,
            Err(e) => {
                // Leave nothing alive: a retry with this hostname must not wait 30 s.
                if let Err(u) = host.unregister(clock()) {
                    log::warn!("clearing the host record after a failed start: {u:?}");
                }
                return Err(e);
            }
        };
        let reg = Registered {
            host_id: host.host_id,
            ..reg0
        };
        let mut queues: Vec<Q> = std::mem::take(&mut dev.queues).into_iter().collect();
        let tokens = !opts.plain_v3 && queues.iter().all(|q| q.durable_tokens());
        if tokens {
            for q in &mut queues {
                q.set_power_window_us(opts.power_window_us)
                    .map_err(|e| host_err("setting the power window", e))?;
            }
        } else if opts.power_window_us != 0 {
            log::warn!("--power-window-us ignored: durability tokens are not in use");
        }
        log::info!(
            "dev-start: blkdev {} on backend {} with {} channel(s); {}",
            dev.blkdev_id,
            dev.backend_id,
            queues.len(),
            if opts.plain_v3 {
                "plain CBD v3 (--plain-v3): FUA = WRITE + FLUSH, flush = CBD FLUSH"
            } else if tokens {
                "durability tokens on: FUA = CRITICAL, flush = wait for the watermark"
            } else {
                "durability tokens not offered by the backend: FUA = WRITE + FLUSH, flush = CBD FLUSH"
            }
        );
        let n = queues.len();
        let shared = Arc::new(Shared {
            chans: queues
                .into_iter()
                .map(|q| {
                    Arc::new(Mutex::new(Chan {
                        q,
                        write_end: 0,
                        marks: Default::default(),
                    }))
                })
                .collect(),
            tokens,
            default_intent: opts.default_intent,
            discard_wz: !opts.plain_v3 && reg.features & features::DISCARD_WZ != 0,
            stats: Stats::default(),
            cbd_flushes_sent: AtomicU64::new(0),
            flushes_by_watermark: AtomicU64::new(0),
            critical_writes: AtomicU64::new(0),
            lost_reported: Mutex::new(0),
            history: history.map(record::Recording::new),
            replay: (tokens && opts.replay_bytes > 0)
                .then(|| Mutex::new(replay::Replay::new(opts.replay_bytes))),
            lost_below: (0..n).map(|_| AtomicU64::new(0)).collect(),
            restart_gen: AtomicU64::new(0),
            live: Mutex::new(liveness::Liveness::new(
                reg.backend_id,
                opts.recover_timeout_ns,
                clock(),
            )),
            tp: host.tp.clone(),
        });
        if tokens {
            log::info!(
                "replay buffer: {} MiB (--replay-buffer); I/O held up to {} s for a backend that is down (--recover-timeout)",
                opts.replay_bytes >> 20,
                opts.recover_timeout_ns / 1_000_000_000
            );
        } else {
            log::info!(
                "no replay buffer (no durability tokens); I/O held up to {} s for a backend that is down (--recover-timeout); a flush after a backend restart fails with EIO",
                opts.recover_timeout_ns / 1_000_000_000
            );
        }
        shared.observe(clock());
        let stop = Arc::new(AtomicBool::new(false));
        let hb = {
            let (stop, clock, shared) =
                (Arc::clone(&stop), Arc::clone(&clock), Arc::clone(&shared));
            std::thread::Builder::new()
                .name("cbd-heartbeat".into())
                .spawn(move || heartbeat_loop(dev, &shared, &stop, &*clock))
                .map_err(|_| CbdError::Engine {
                    step: "starting the heartbeat thread",
                    err: HostError::NotReady,
                })?
        };
        Ok(CbdDisk {
            reg,
            shared,
            claimed: Mutex::new(vec![false; n]),
            clock,
            stop,
            heartbeat: Mutex::new(Some(hb)),
        })
    }

    /// dev-start and wait until every channel answered RESET; on failure the blkdev record
    /// is cleared again.
    fn start_blkdev(
        host: &Host<'static, MappedMem>,
        opts: &CbdOptions,
        clock: &dyn Fn() -> u64,
    ) -> Result<Blkdev<'static, MappedMem>, CbdError> {
        let mut dev = host
            .dev_start(opts.backend_id, opts.queues as u32, clock())
            .map_err(|e| host_err("dev-start", e))?;
        let t0 = clock();
        loop {
            let err = match dev.poll_ready(clock()) {
                Ok(true) => return Ok(dev),
                Ok(false) if clock().saturating_sub(t0) <= READY_TIMEOUT_NS => {
                    std::thread::yield_now();
                    continue;
                }
                Ok(false) => HostError::Timeout,
                Err(e) => e,
            };
            if let Err(e) = dev.stop() {
                log::warn!("clearing the blkdev record after a failed RESET: {e:?}");
            }
            return Err(host_err("channel RESET", err));
        }
    }

    pub fn registered(&self) -> &Registered {
        &self.reg
    }

    /// Durability tokens are in use (FUA = CRITICAL, flush = watermark wait).
    pub fn durable_tokens(&self) -> bool {
        self.shared.tokens
    }

    /// The durability counters now (reads every channel's watermark first).
    pub fn token_summary(&self) -> TokenSummary {
        self.shared.tokens_summary((self.clock)())
    }
}

/// How often the blkdev record's heartbeat is rewritten (v3 asks for ≤ 5 s).
const HEARTBEAT_EVERY: Duration = Duration::from_millis(200);
/// How often the background thread reads the durability watermarks with tokens on.
/// Confirmations are stamped when the host *sees* them: without this look, tokens
/// completed at the end of a burst would wait for the next flush or stats read, and
/// the confirmation latency would measure the host's inattention, not the device.
pub const WATERMARK_EVERY: Duration = Duration::from_millis(2);

fn heartbeat_loop(
    mut dev: Blkdev<'static, MappedMem>,
    shared: &Shared,
    stop: &AtomicBool,
    clock: &dyn Fn() -> u64,
) {
    let mut last_hb: Option<std::time::Instant> = None;
    while !stop.load(Ordering::Acquire) {
        if last_hb.is_none_or(|t| t.elapsed() >= HEARTBEAT_EVERY) {
            if let Err(e) = dev.heartbeat(clock()) {
                log::error!("heartbeat: {e:?}");
            }
            shared.observe(clock());
            last_hb = Some(std::time::Instant::now());
        }
        if shared.tokens {
            for (i, c) in shared.chans.iter().enumerate() {
                // A busy queue thread holds its channel; it is not waiting on us.
                if let Ok(mut g) = c.try_lock()
                    && let Err(e) = shared.poll_durable(i, &mut g, clock())
                {
                    log::debug!("watermark: {e:?}");
                }
            }
            std::thread::sleep(WATERMARK_EVERY);
        } else {
            std::thread::sleep(HEARTBEAT_EVERY);
        }
    }
    // dev-stop: the queues left with the ublk threads; the record is cleared here. Then the
    // host record, so that this hostname can register again at once.
    match dev.stop() {
        Ok(()) => log::info!("dev-stop: blkdev record cleared"),
        Err(e) => log::error!("dev-stop: {e:?}"),
    }
    match dev.unregister_host(clock()) {
        Ok(true) => log::info!("host record {} cleared", dev.host_id),
        Ok(false) => log::info!("host record {} left (in use or not ours)", dev.host_id),
        Err(e) => log::error!("clearing the host record: {e:?}"),
    }
}

impl Disk for CbdDisk {
    fn size(&self) -> u64 {
        self.reg.dev_size
    }
    fn queue(&self, qid: u16) -> Result<Box<dyn QueueIo>, String> {
        let mut claimed = self.claimed.lock().unwrap_or_else(|p| p.into_inner());
        let n = claimed.len();
        match claimed.get_mut(qid as usize) {
            Some(c) if !*c => *c = true,
            _ => {
                return Err(format!(
                    "no CBD channel for ublk queue {qid} ({n} channel(s))"
                ));
            }
        }
        Ok(Box::new(CbdQueue::new(
            qid as usize,
            Arc::clone(&self.shared),
            Arc::clone(&self.clock),
        )))
    }
    fn describe(&self) -> String {
        format!(
            "CBD backend {} ({} MiB) as host {}",
            self.reg.backend_id,
            self.reg.dev_size >> 20,
            self.reg.host_id
        )
    }
    fn max_discard_bytes(&self) -> u32 {
        if self.shared.discard_wz {
            super::disk::MAX_DISCARD_BYTES
        } else {
            0
        }
    }
    fn stats(&self) -> String {
        format!("{} {}", self.shared.stats, self.token_summary())
    }
    fn shutdown(&self) {
        self.stop.store(true, Ordering::Release);
        if let Some(h) = self
            .heartbeat
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            h.join().ok();
        }
    }
}
