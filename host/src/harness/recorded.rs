//! A recorded schedule: host and backend engines in one thread, their steps
//! interleaved in seeded bursts, over a media that loses what was not flushed
//! (`native::CrashMedia`). Each request is recorded — invoked before its submission
//! could take effect (the device does not run in between: one thread), completed
//! after its CE was consumed — with the DURABLE flags and the watermarks the host saw;
//! a backend crash records the media read back, then the backend re-attaches.
//!
//! The caller brings the memory (coherent or adversarial: both views and what a
//! crash of the device does to it), the configurations and the workload's request
//! generator; [`Notes`] tells it what happened (the lessons narrate it).

use super::attach;
use crate::engine::{Completion, Host, HostConfig, HostError, Request};
use device::backend::{Backend, BackendConfig};
use device::layout::*;
use device::native::CrashMedia;
use device::rng::SplitMix64 as Rng;
use device::shm::{SharedMem, Shm};
use history::{Header, History, OpId, OpKind, Outcome, Recorder};
use std::collections::HashMap;

const SEC: u64 = 1_000_000_000;
const MS: u64 = 1_000_000;

/// The workload of one schedule.
pub struct Workload<'w> {
    /// Requests submitted in all (before the read-back).
    pub requests: u64,
    /// Steps after which the schedule counts as stuck.
    pub max_steps: u64,
    /// Crash the backend (and re-attach) after this many submissions.
    pub crash_at: Option<u64>,
    /// READs after the workload, taken from the end: (channel, READ).
    pub finals: Vec<(usize, Request)>,
    /// The next random request (a WRITE's data into the buffer).
    pub request: &'w dyn Fn(&mut Rng, &mut Vec<u8>) -> Request,
}

/// What a schedule tells its caller as it goes (every method does nothing by default).
pub trait Notes {
    /// The backend died; `unflushed` writes of its media could go either way.
    fn crashed(&self, _unflushed: usize) {}
    /// The host learnt a new durable watermark of queue `q`.
    fn watermark(&self, _q: usize, _watermark: u64) {}
    /// The host submitted `req` on queue `q` as `tid`, recorded as `id`.
    fn submitted(&self, _q: usize, _req: &Request, _tid: u64, _id: OpId) {}
    /// A tid as the messages show it.
    fn tid(&self, tid: u64) -> String {
        tid.to_string()
    }
}

/// The default: nothing to tell.
pub struct Quiet;
impl Notes for Quiet {}

/// A recorded schedule.
pub struct Recorded {
    pub history: History,
    /// Each recorded operation: (channel, req_tid).
    pub ops: HashMap<OpId, (u16, u64)>,
}

/// The device and host side of the memory a schedule runs on.
pub struct Sides<'a, M: SharedMem + ?Sized> {
    pub dshm: Shm<'a, M>,
    pub hshm: Shm<'a, M>,
    /// The device crashed: what it had not written back is lost, the lines in flight
    /// settle (adversarial memory); nothing on coherent memory.
    pub crash_device: &'a dyn Fn(),
}

/// Record the completion `c` of operation `id` (a READ's data from `read_buf`).
pub fn complete(rec: &Recorder, id: OpId, c: &Completion, read_buf: &[u8]) {
    let outcome = if c.result == 0 {
        Outcome::Ok
    } else {
        Outcome::Err(-c.result)
    };
    let data = (c.req.op == op::READ).then(|| &read_buf[..c.req.len as usize]);
    rec.complete(id, outcome, data, c.durable);
}

/// A request's kind as the history records it.
pub fn kind(opc: u32) -> OpKind {
    match opc {
        op::WRITE => OpKind::Write,
        op::READ => OpKind::Read,
        _ => OpKind::Flush,
    }
}

/// Run one schedule: the backend (`cfg`, over `media`) re-attaches, the host (`hc`)
/// registers and dev-starts two queues, then the workload runs with host and device
/// steps in bursts drawn from `r`. Returns the recorded history, or what went wrong
/// before there was one to check.
#[allow(clippy::too_many_arguments)]
pub fn run<M: SharedMem + ?Sized>(
    r: &mut Rng,
    sides: &Sides<'_, M>,
    cfg: BackendConfig<'static>,
    hc: HostConfig<'_>,
    media: CrashMedia,
    w: Workload<'_>,
    notes: &dyn Notes,
) -> Result<Recorded, String> {
    let (dshm, hshm) = (sides.dshm, sides.hshm);
    let mut now = super::T0 + 31 * SEC;
    let mut scratch = vec![0u8; chan::MAX_IO as usize];
    let mut backend = Some(
        Backend::start(dshm, cfg, media, &mut scratch, now).map_err(|e| format!("start: {e:?}"))?,
    );
    let host = Host::register(hshm, hc, now).map_err(|e| format!("register: {e:?}"))?;
    let mut dev = attach(&host, backend.as_mut().unwrap(), now)?;

    let rec = Recorder::new(Header::default());
    let mut ops = HashMap::new();
    let mut inflight: HashMap<(usize, u64), OpId> = HashMap::new();
    let mut watermark = [0u64; 2];
    let (mut submitted, mut ready, mut crashed) = (0u64, false, false);
    let (mut who, mut burst, mut steps) = (0u64, 0u64, 0u64);
    let mut read_buf = vec![0u8; chan::MAX_IO as usize];
    let mut payload = Vec::new();
    let mut finals = w.finals;
    loop {
        if submitted >= w.requests && finals.is_empty() && inflight.is_empty() {
            break;
        }
        steps += 1;
        if steps > w.max_steps {
            return Err(format!("no progress: {submitted}/{}", w.requests));
        }
        if burst == 0 {
            who = r.below(2);
            let max = if r.chance(100) { 100 } else { 6 };
            burst = 1 + r.below(max);
        }
        burst -= 1;
        now += MS;
        if who == 0 {
            backend
                .as_mut()
                .unwrap()
                .poll(now)
                .map_err(|e| format!("device: {e:?}"))?;
            continue;
        }
        // ---- host step
        let _ = dev.heartbeat(now);
        if !ready {
            ready = dev
                .poll_ready(now)
                .map_err(|e| format!("host reset: {e:?}"))?;
            continue;
        }
        if !crashed && w.crash_at.is_some_and(|c| c <= submitted) {
            crashed = true;
            // The backend dies (staging, and the device's cache, lost), the media
            // keeps one possible crash image; record it, then re-attach.
            let (mut m, sc, _) = backend.take().unwrap().into_parts_staged();
            let unflushed = m.unflushed();
            let img = m.crash();
            rec.crash();
            rec.media(0, &img);
            notes.crashed(unflushed);
            (sides.crash_device)();
            now += 31 * SEC;
            backend = Some(
                Backend::start(dshm, cfg, m, sc, now).map_err(|e| format!("re-attach: {e:?}"))?,
            );
        }
        // Completions, then what the host learnt about durability.
        #[allow(clippy::needless_range_loop)]
        for qi in 0..2 {
            loop {
                let c = match dev.queues[qi].poll_at(&mut read_buf, now) {
                    Ok(Some(c)) => c,
                    Ok(None) => break,
                    Err(e) => return Err(format!("q{qi} poll: {e:?}")),
                };
                let Some(id) = inflight.remove(&(qi, c.req_tid)) else {
                    return Err(format!(
                        "q{qi}: unknown completion {}",
                        notes.tid(c.req_tid)
                    ));
                };
                complete(&rec, id, &c, &read_buf);
            }
            let q = &mut dev.queues[qi];
            let up = q
                .poll_durable(now)
                .map_err(|e| format!("q{qi} poll_durable: {e:?}"))?;
            // Only the first incarnation's watermarks: after a re-attach the tid space
            // of the lost writes is vouched for by nobody.
            if !crashed && up.lost == 0 && up.watermark > watermark[qi] {
                watermark[qi] = up.watermark;
                rec.watermark(qi as u16, up.watermark);
                notes.watermark(qi, up.watermark);
            }
        }
        // Submit a few; after the workload, the read-back (racing the last writes).
        for _ in 0..r.below(4) {
            let (qi, req) = if submitted < w.requests {
                let qi = r.below(2) as usize;
                (qi, (w.request)(r, &mut payload))
            } else if let Some(&f) = finals.last() {
                f
            } else {
                break;
            };
            let data = (req.op == op::WRITE).then_some(&payload[..]);
            match dev.queues[qi].submit(req, data.unwrap_or(&[])) {
                Ok(t) => {
                    let id = rec.invoke(qi as u16, t, kind(req.op), req.offset, req.len, data);
                    ops.insert(id, (qi as u16, t));
                    notes.submitted(qi, &req, t, id);
                    inflight.insert((qi, t), id);
                    if submitted < w.requests {
                        submitted += 1;
                    } else {
                        finals.pop();
                    }
                }
                Err(HostError::Busy) => {}
                Err(e) => return Err(format!("submit: {e:?}")),
            }
        }
    }
    Ok(Recorded {
        history: rec.into_history(),
        ops,
    })
}
