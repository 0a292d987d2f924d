//! The adversarial schedule's loop: random READ/WRITE/FLUSH requests over a model disk
//! with host and device steps interleaved in seeded bursts (up to 300 steps of one
//! side), maybe a RESET of queue 1 mid-stream and maybe a backend crash (cold or warm)
//! and re-attach, on the adversarial memory (`device::adversary`).
//!
//! The caller sets up the memory, the backend and the ready-to-start blkdev, and keeps
//! what is its own through [`Model`] (the model disk and its workload) and [`Hooks`]
//! (how a failure is explained, what is narrated). The loop stops at the first
//! failure: an engine error, a failed or wrong completion, whatever
//! [`Hooks::after_step`] reports, or no progress.

use crate::engine::{Blkdev, Completion, HostError, Request};
use device::adversary::Adversary;
use device::backend::{Backend, BackendConfig, BackendError};
use device::media::Media;
use device::rng::SplitMix64 as Rng;
use device::shm::{SharedMem, Shm};

const SEC: u64 = 1_000_000_000;

/// The model disk a schedule checks every completion against.
pub trait Model {
    /// A random request overlapping nothing in flight (a WRITE's data into `payload`).
    fn random_request(&self, r: &mut Rng, max_len: u32, payload: &mut Vec<u8>) -> Request;
    /// The host submitted `req` on queue `q` as `tid`.
    fn submitted(&mut self, q: usize, tid: u64, req: Request, payload: &[u8]);
    /// Check a completion; a failure with the requests it concerns, (queue, req_tid).
    fn completed(
        &mut self,
        q: usize,
        c: &Completion,
        read_buf: &[u8],
    ) -> Result<(), (String, Vec<(u32, u64)>)>;
    /// Requests in flight.
    fn in_flight(&self) -> usize;
    /// The backend crashed and re-attached (what it had staged may be lost).
    fn crashed(&mut self) {}
}

/// What the caller adds to the loop (every method has a plain default).
pub trait Hooks {
    /// A device error, as the failure says it.
    fn device_error(&self, e: &BackendError) -> String {
        format!("device: {e:?}")
    }
    /// An error of the host's poll of queue `q`.
    fn host_poll_error(&self, q: usize, e: &HostError) -> String {
        format!("host poll q{q}: {e:?}")
    }
    /// A completion the model rejected.
    fn completion_error(&self, e: String) -> String {
        e
    }
    /// No progress after `max_steps`.
    fn stall(&self, s: &State) -> String {
        format!(
            "no progress: submitted {}/{}, {} in flight",
            s.submitted, s.requests, s.in_flight
        )
    }
    /// Checked after each device step, each step before the queues are ready and each
    /// host step: a failure to report, if any.
    fn after_step(&self) -> Option<String> {
        None
    }
    /// The schedule's first failure, as it happens (later ones are only collected).
    fn failed(&self, _what: &str) {}
    /// Both queues are ready.
    fn ready(&self) {}
    /// The host submitted `req` on queue `q` as `tid`.
    fn submitted(&self, _q: usize, _req: &Request, _tid: u64) {}
}

/// The loop's progress, for [`Hooks::stall`].
pub struct State {
    pub submitted: u64,
    pub requests: u64,
    pub in_flight: usize,
    pub ready: bool,
    pub resetting: bool,
}

/// The shape of one schedule.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    /// Requests submitted in all.
    pub requests: u64,
    /// Largest request (bytes).
    pub max_len: u32,
    /// Chance (‰) that a burst is long (up to 300 steps of one side).
    pub long_bursts: u64,
    /// Steps after which the schedule counts as stuck.
    pub max_steps: u64,
    /// RESET queue 1 when this many requests were submitted.
    pub reset_at: Option<u64>,
    /// Crash the backend (and re-attach) when this many requests were submitted.
    pub crash_at: Option<u64>,
    /// The crashed backend restarts on the same CPU (`Adversary::crash_warm`).
    pub warm_crash: bool,
}

/// The device side: the adversary, the device's view and configuration (to re-attach
/// after a crash), and the backend.
pub struct Device<'a, 'm, M: SharedMem + ?Sized, D: Media> {
    pub adv: &'a Adversary,
    /// The device's view (its agent of `adv`, perhaps wrapped: traced, say).
    pub dshm: Shm<'m, M>,
    pub cfg: BackendConfig<'static>,
    pub backend: Option<Backend<'m, M, D>>,
}

/// What a schedule did.
pub struct Outcome {
    /// Every failure, first first (empty: the schedule passed).
    pub failures: Vec<String>,
    pub submitted: u64,
    /// Host and device steps taken.
    pub steps: u64,
    /// The requests the first failing completion concerns, (queue, req_tid).
    pub requests: Vec<(u32, u64)>,
}

/// Run the loop from `now` until every request completed or something failed.
pub fn run<'m, M: SharedMem + ?Sized, D: Media>(
    r: &mut Rng,
    shape: &Shape,
    device: &mut Device<'_, 'm, M, D>,
    dev: &mut Blkdev<'_, M>,
    model: &mut dyn Model,
    hooks: &dyn Hooks,
    mut now: u64,
) -> Outcome {
    let mut out = Outcome {
        failures: Vec::new(),
        submitted: 0,
        steps: 0,
        requests: Vec::new(),
    };
    let mut payload = Vec::new();
    let mut read_buf = vec![0u8; device::layout::chan::MAX_IO as usize];
    let (mut ready, mut resetting, mut crashed) = (false, false, false);
    let (mut who, mut burst) = (0u64, 0u64);
    let v = &mut out.failures;
    let fail = |v: &mut Vec<String>, what: String| {
        if v.is_empty() {
            hooks.failed(&what);
        }
        v.push(what);
    };
    let after = |v: &mut Vec<String>| {
        if let Some(what) = hooks.after_step() {
            fail(v, what);
        }
    };
    while v.is_empty() {
        if out.submitted == shape.requests && model.in_flight() == 0 && !resetting {
            break;
        }
        out.steps += 1;
        if out.steps > shape.max_steps {
            fail(
                v,
                hooks.stall(&State {
                    submitted: out.submitted,
                    requests: shape.requests,
                    in_flight: model.in_flight(),
                    ready,
                    resetting,
                }),
            );
            break;
        }
        if burst == 0 {
            who = r.below(2);
            burst = 1 + if r.chance(shape.long_bursts) {
                r.below(300)
            } else {
                r.below(6)
            };
        }
        burst -= 1;
        now += 10_000_000;
        if who == 0 {
            if let Some(b) = device.backend.as_mut()
                && let Err(e) = b.poll(now)
            {
                fail(v, hooks.device_error(&e));
            }
            after(v);
            continue;
        }
        // ---- host step
        if let Err(e) = dev.heartbeat(now) {
            fail(v, format!("host heartbeat: {e:?}"));
        }
        if !ready {
            match dev.poll_ready(now) {
                Ok(x) => {
                    ready = x;
                    if x {
                        hooks.ready();
                    }
                }
                Err(e) => fail(v, format!("host reset: {e:?}")),
            }
            after(v);
            continue;
        }
        if resetting {
            match dev.queues[1].poll_reset(now) {
                Ok(done) => resetting = !done,
                Err(e) => fail(v, format!("host reset q1: {e:?}")),
            }
        } else if shape.reset_at == Some(out.submitted) && dev.queues[1].in_flight() == 0 {
            dev.queues[1].start_reset(now).unwrap();
            resetting = true;
        }
        // (Not while a RESET is pending: the host gives a RESET 30 s, a re-attach
        // needs the backend dead for 30 s, so the RESET would rightly time out.)
        if shape.crash_at == Some(out.submitted) && !crashed && !resetting {
            // Backend dies: its dirty lines (never written back) are lost — and, if it
            // restarts on the same CPU, its clean copies stay cached, stale by the time
            // it re-attaches; after the 30 s liveness timeout everything in flight has
            // landed; re-attach.
            crashed = true;
            model.crashed();
            let (media, scratch) = device.backend.take().unwrap().into_parts();
            if shape.warm_crash {
                device.adv.crash_warm(0);
            } else {
                device.adv.crash(0);
            }
            device.adv.drain();
            now += 31 * SEC;
            match Backend::start(device.dshm, device.cfg, media, scratch, now) {
                Ok(b) => device.backend = Some(b),
                Err(e) => {
                    fail(v, format!("re-attach: {e:?}"));
                    break;
                }
            }
        }
        if out.submitted < shape.requests && r.chance(600) {
            let q = r.below(2) as usize;
            if !(q == 1 && (resetting || shape.reset_at == Some(out.submitted))) {
                let req = model.random_request(r, shape.max_len, &mut payload);
                match dev.queues[q].submit(req, &payload) {
                    Ok(tid) => {
                        hooks.submitted(q, &req, tid);
                        model.submitted(q, tid, req, &payload);
                        out.submitted += 1;
                    }
                    Err(HostError::Busy) => {}
                    Err(e) => fail(v, format!("submit: {e:?}")),
                }
            }
        }
        for (qi, q) in dev.queues.iter_mut().enumerate() {
            // Every CE the head shows, in one poll.
            let r = q.poll_batch(&mut read_buf, &mut |c, data| {
                if let Err((e, concern)) = model.completed(qi, c, data) {
                    if v.is_empty() {
                        out.requests.push((qi as u32, c.req_tid));
                        out.requests.extend(concern);
                    }
                    fail(v, hooks.completion_error(e));
                }
            });
            if let Err(e) = r {
                fail(v, hooks.host_poll_error(qi, &e));
            }
        }
        after(v);
    }
    out
}
