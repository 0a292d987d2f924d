//! [`CbdDisk`]: the ublk-facing [`Disk`] over the `device` crate's host (blkdev) engine.
//!
//! * dev-start gives one [`HostQueue`] per channel; each moves into its ublk queue thread.
//! * Requests are submitted and their completions polled in that thread: one at a time
//!   ([`QueueIo::submit`]), or a ublk batch together ([`QueueIo::start`] + [`QueueIo::finish`]).
//!   While waiting, the backend record is re-read every [`LIVENESS_CHECK_NS`] (or
//!   [`LIVENESS_CHECK_POLLS`] empty polls): a backend that stopped or whose heartbeat is older
//!   than the 30 s timeout fails the requests with `EIO` instead of hanging them.
//! * FLUSH → CBD FLUSH. A FUA write is followed by a CBD FLUSH before it completes.
//! * A heartbeat thread owns the [`Blkdev`] record and rewrites it (and the host record) every
//!   5 s; [`Disk::shutdown`] stops it and clears the blkdev record (dev-stop).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use device::host::{Blkdev, Host, HostConfig, HostError, HostQueue, Request};
use device::layout::{STATE_RUNNING, chan, op};
use device::shm::Shm;
use device::trace::NoTrace;
use device::transport::{Transport, is_alive};

use crate::cbd::{CbdError, CbdOptions, Registered};
use crate::disk::{Disk, Errno, Op, QueueIo, Req, Sink, Stats};
use crate::mem::MappedMem;

/// How often (in clock time) a waiting request re-checks the backend's liveness...
pub const LIVENESS_CHECK_NS: u64 = 100_000_000;
/// ... or after this many empty polls, whichever comes first (independent of the clock).
pub const LIVENESS_CHECK_POLLS: u32 = 1 << 16;
/// How long dev-start waits for every channel to answer RESET (v3 uses 30 s).
pub const READY_TIMEOUT_NS: u64 = 30_000_000_000;

/// Nanosecond wall clock (CLOCK_REALTIME in production; injectable for tests).
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

static TRACE: NoTrace = NoTrace;

type Q = HostQueue<'static, MappedMem>;

/// The CBD disk: size, the queues waiting to be claimed, the heartbeat thread.
pub struct CbdDisk {
    reg: Registered,
    queues: Mutex<Vec<Option<Q>>>,
    tp: Transport<'static, MappedMem>,
    clock: Clock,
    stats: Arc<Stats>,
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
    /// channel answered RESET → start the heartbeat thread.
    pub fn start(
        mem: &'static MappedMem,
        opts: &CbdOptions,
        clock: Clock,
    ) -> Result<CbdDisk, CbdError> {
        // Clear errors for missing/stopped/dead backends first.
        let reg0 = crate::cbd::prepare(mem, opts, &*clock)?;
        let hostname: &'static str = Box::leak(opts.hostname.clone().into_boxed_str());
        let cfg = HostConfig {
            hostname,
            noncoherent: opts.noncoherent,
            queue_depth: opts.depth.clamp(1, device::host::MAX_DEPTH as u16) as usize,
            ..HostConfig::default()
        };
        let shm = Shm::new(mem, &TRACE);
        let host = Host::register(shm, cfg, clock()).map_err(|e| host_err("registering", e))?;
        let mut dev = host
            .dev_start(opts.backend_id, opts.queues as u32, clock())
            .map_err(|e| host_err("dev-start", e))?;
        let t0 = clock();
        while !dev
            .poll_ready(clock())
            .map_err(|e| host_err("channel RESET", e))?
        {
            if clock().saturating_sub(t0) > READY_TIMEOUT_NS {
                return Err(CbdError::Engine {
                    step: "channel RESET",
                    err: HostError::Timeout,
                });
            }
            std::thread::yield_now();
        }
        let reg = Registered {
            host_id: host.host_id,
            ..reg0
        };
        log::info!(
            "dev-start: blkdev {} on backend {} with {} channel(s)",
            dev.blkdev_id,
            dev.backend_id,
            dev.queues.len()
        );
        let queues: Vec<Option<Q>> = std::mem::take(&mut dev.queues)
            .into_iter()
            .map(Some)
            .collect();
        let stop = Arc::new(AtomicBool::new(false));
        let hb = {
            let (stop, clock) = (Arc::clone(&stop), Arc::clone(&clock));
            std::thread::Builder::new()
                .name("cbd-heartbeat".into())
                .spawn(move || heartbeat_loop(dev, &stop, &*clock))
                .map_err(|_| CbdError::Engine {
                    step: "starting the heartbeat thread",
                    err: HostError::NotReady,
                })?
        };
        Ok(CbdDisk {
            reg,
            queues: Mutex::new(queues),
            tp: host.tp.clone(),
            clock,
            stats: Arc::new(Stats::default()),
            stop,
            heartbeat: Mutex::new(Some(hb)),
        })
    }

    pub fn registered(&self) -> &Registered {
        &self.reg
    }
}

fn heartbeat_loop(mut dev: Blkdev<'static, MappedMem>, stop: &AtomicBool, clock: &dyn Fn() -> u64) {
    while !stop.load(Ordering::Acquire) {
        if let Err(e) = dev.heartbeat(clock()) {
            log::error!("heartbeat: {e:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    // dev-stop: the queues left with the ublk threads; the record is cleared here.
    match dev.stop() {
        Ok(()) => log::info!("dev-stop: blkdev record cleared"),
        Err(e) => log::error!("dev-stop: {e:?}"),
    }
}

impl Disk for CbdDisk {
    fn size(&self) -> u64 {
        self.reg.dev_size
    }
    fn queue(&self, qid: u16) -> Result<Box<dyn QueueIo>, String> {
        let mut qs = self.queues.lock().unwrap_or_else(|p| p.into_inner());
        let n = qs.len();
        let q = qs
            .get_mut(qid as usize)
            .and_then(Option::take)
            .ok_or_else(|| format!("no CBD channel for ublk queue {qid} ({n} channel(s))"))?;
        Ok(Box::new(CbdQueue {
            q,
            tp: self.tp.clone(),
            backend_id: self.reg.backend_id,
            clock: Arc::clone(&self.clock),
            stats: Arc::clone(&self.stats),
            read_buf: vec![0; chan::MAX_IO as usize],
            inflight: std::collections::HashMap::new(),
            early: Vec::new(),
        }))
    }
    fn describe(&self) -> String {
        format!(
            "CBD backend {} ({} MiB) as host {}",
            self.reg.backend_id,
            self.reg.dev_size >> 20,
            self.reg.host_id
        )
    }
    fn stats(&self) -> String {
        self.stats.to_string()
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

/// One ublk queue = one CBD channel.
pub struct CbdQueue {
    q: Q,
    tp: Transport<'static, MappedMem>,
    backend_id: u32,
    clock: Clock,
    stats: Arc<Stats>,
    read_buf: Vec<u8>,
    /// Started requests by CBD tid: the ublk tag, and whether a FUA write still needs its
    /// FLUSH (false once the FLUSH itself is in flight).
    inflight: std::collections::HashMap<u64, Started>,
    /// Completions taken while starting (a full ring): tag, result, READ data.
    early: Vec<(u16, Result<(), Errno>, Vec<u8>)>,
}

#[derive(Clone, Copy, Debug)]
struct Started {
    tag: u16,
    op: Op,
    fua_flush_pending: bool,
}

impl CbdQueue {
    fn backend_alive(&self, now: u64) -> bool {
        match self.tp.backend(self.backend_id) {
            Ok(Some(b)) => b.rec.state == STATE_RUNNING && is_alive(b.rec.alive_ts, now),
            _ => false,
        }
    }

    /// Submits one request and waits for its completion; `Ok(result)` is 0 or -errno.
    fn roundtrip(&mut self, r: Request, payload: &[u8]) -> Result<i32, Errno> {
        let mut next_check = (self.clock)() + LIVENESS_CHECK_NS;
        let mut polls = 0u32;
        let tid = loop {
            match self.q.submit(r, payload) {
                Ok(t) => break t,
                Err(HostError::Busy) => {
                    // Only our own earlier request can occupy the queue; drain it.
                    if let Ok(Some(c)) = self.q.poll(&mut self.read_buf) {
                        log::warn!("stray completion {c:?}");
                    }
                }
                Err(e) => {
                    log::error!("submit {r:?}: {e:?}");
                    return Err(Errno(libc::EIO));
                }
            }
            self.check_alive(&mut next_check, &mut polls)?;
        };
        loop {
            match self.q.poll(&mut self.read_buf) {
                Ok(Some(c)) if c.req_tid == tid => return Ok(c.result),
                Ok(Some(c)) => log::warn!("completion for unknown tid {}", c.req_tid),
                Ok(None) => {
                    self.check_alive(&mut next_check, &mut polls)?;
                    std::hint::spin_loop();
                }
                Err(e) => {
                    log::error!("poll: {e:?}");
                    return Err(Errno(libc::EIO));
                }
            }
        }
    }

    fn check_alive(&self, next_check: &mut u64, polls: &mut u32) -> Result<(), Errno> {
        let now = (self.clock)();
        *polls += 1;
        if now >= *next_check || *polls >= LIVENESS_CHECK_POLLS {
            *next_check = now + LIVENESS_CHECK_NS;
            *polls = 0;
            if !self.backend_alive(now) {
                log::error!(
                    "backend {} is dead or stopped; failing the request",
                    self.backend_id
                );
                return Err(Errno(libc::EIO));
            }
            std::thread::yield_now();
        }
        Ok(())
    }
}

impl CbdQueue {
    fn to_request(req: &Req) -> Request {
        Request {
            op: match req.op {
                Op::Read => op::READ,
                Op::Write => op::WRITE,
                Op::Flush => op::FLUSH,
                Op::Discard => op::DISCARD,
                Op::WriteZeroes => op::WRITE_ZEROES,
            },
            offset: req.offset,
            len: req.len,
        }
    }

    /// Handles one completion of a started request: a FUA write gets its FLUSH; everything
    /// else is reported through `sink`.
    fn on_completion(
        &mut self,
        c: device::host::Completion,
        sink: &mut Sink<'_>,
    ) -> Result<(), Errno> {
        let Some(st) = self.inflight.remove(&c.req_tid) else {
            log::warn!("completion for unknown tid {}", c.req_tid);
            return Ok(());
        };
        if c.result < 0 {
            self.stats
                .errors
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            sink(st.tag, Err(Errno(-c.result)), &[]);
            return Ok(());
        }
        if st.fua_flush_pending {
            let flush = Request {
                op: op::FLUSH,
                offset: 0,
                len: 0,
            };
            let tid = self.submit_blocking(flush, &[], sink)?;
            self.inflight.insert(
                tid,
                Started {
                    fua_flush_pending: false,
                    ..st
                },
            );
            return Ok(());
        }
        let len = c.req.len as usize;
        let data: &[u8] = if st.op == Op::Read {
            &self.read_buf[..len]
        } else {
            &[]
        };
        sink(st.tag, Ok(()), data);
        Ok(())
    }

    /// Submits, polling completions (into `sink`) while the channel is full.
    fn submit_blocking(
        &mut self,
        r: Request,
        payload: &[u8],
        sink: &mut Sink<'_>,
    ) -> Result<u64, Errno> {
        let mut next_check = (self.clock)() + LIVENESS_CHECK_NS;
        let mut polls = 0u32;
        loop {
            match self.q.submit(r, payload) {
                Ok(t) => return Ok(t),
                Err(HostError::Busy) => match self.q.poll(&mut self.read_buf) {
                    Ok(Some(c)) => self.on_completion(c, sink)?,
                    Ok(None) => self.check_alive(&mut next_check, &mut polls)?,
                    Err(e) => {
                        log::error!("poll: {e:?}");
                        return Err(Errno(libc::EIO));
                    }
                },
                Err(e) => {
                    log::error!("submit {r:?}: {e:?}");
                    return Err(Errno(libc::EIO));
                }
            }
        }
    }

    /// Fails everything in flight (dead backend / broken channel).
    fn fail_all(&mut self, sink: &mut Sink<'_>) {
        for (_, st) in self.inflight.drain() {
            self.stats
                .errors
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            sink(st.tag, Err(Errno(libc::EIO)), &[]);
        }
    }
}

impl QueueIo for CbdQueue {
    fn submit(&mut self, req: &Req, buf: &mut [u8]) -> Result<(), Errno> {
        self.stats.count(req);
        let code = match req.op {
            Op::Read => op::READ,
            Op::Write => op::WRITE,
            Op::Flush => op::FLUSH,
            Op::Discard => op::DISCARD,
            Op::WriteZeroes => op::WRITE_ZEROES,
        };
        let len = req.len as usize;
        if matches!(req.op, Op::Read | Op::Write) && (len > buf.len() || req.len > chan::MAX_IO) {
            return Err(Errno(libc::EINVAL));
        }
        let r = Request {
            op: code,
            offset: req.offset,
            len: req.len,
        };
        let payload: &[u8] = if req.op == Op::Write {
            &buf[..len]
        } else {
            &[]
        };
        let res = self.roundtrip(r, payload)?;
        if res < 0 {
            self.stats
                .errors
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return Err(Errno(-res));
        }
        if req.op == Op::Read {
            buf[..len].copy_from_slice(&self.read_buf[..len]);
        }
        if req.fua && req.op == Op::Write {
            let f = Request {
                op: op::FLUSH,
                offset: 0,
                len: 0,
            };
            let res = self.roundtrip(f, &[])?;
            if res < 0 {
                return Err(Errno(-res));
            }
        }
        Ok(())
    }

    fn start(&mut self, tag: u16, req: &Req, buf: &mut [u8]) -> Option<Result<(), Errno>> {
        self.stats.count(req);
        let len = req.len as usize;
        if matches!(req.op, Op::Read | Op::Write) && (len > buf.len() || req.len > chan::MAX_IO) {
            return Some(Err(Errno(libc::EINVAL)));
        }
        let payload: &[u8] = if req.op == Op::Write {
            &buf[..len]
        } else {
            &[]
        };
        // Completions that arrive while waiting for room are kept for `finish` (with a copy of
        // their READ data: the sink that owns the buffers is not available here).
        let mut early = std::mem::take(&mut self.early);
        let res = self.submit_blocking(Self::to_request(req), payload, &mut |t, r, d| {
            early.push((t, r, d.to_vec()))
        });
        self.early = early;
        match res {
            Ok(tid) => {
                self.inflight.insert(
                    tid,
                    Started {
                        tag,
                        op: req.op,
                        fua_flush_pending: req.fua && req.op == Op::Write,
                    },
                );
                None
            }
            Err(e) => Some(Err(e)),
        }
    }

    fn finish(&mut self, sink: &mut Sink<'_>) {
        for (t, r, d) in std::mem::take(&mut self.early) {
            sink(t, r, &d);
        }
        let mut next_check = (self.clock)() + LIVENESS_CHECK_NS;
        let mut polls = 0u32;
        while !self.inflight.is_empty() {
            let step = match self.q.poll(&mut self.read_buf) {
                Ok(Some(c)) => self.on_completion(c, sink),
                Ok(None) => {
                    std::hint::spin_loop();
                    self.check_alive(&mut next_check, &mut polls)
                }
                Err(e) => {
                    log::error!("poll: {e:?}");
                    Err(Errno(libc::EIO))
                }
            };
            if step.is_err() {
                self.fail_all(sink);
            }
        }
    }
}
