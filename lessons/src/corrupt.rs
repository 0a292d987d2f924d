//! The corrupted completion, deterministically (host/tests/adversary.rs
//! `host_rejects_a_ce_whose_crc_does_not_verify`): the device completes a WRITE, then
//! one bit of that CE's `result` flips in shared memory. With entry CRCs (the
//! non-coherent mode requires them) the host must not accept it: it re-reads, reports
//! `HostError::Stale`, and takes the CE once it is intact again. Without them (a v3
//! transport formatted without CHANNEL_CRC) nothing tells the flipped CE from a real
//! one. Coherent memory: the flip is injected by hand, no cache plays a part.

use crate::adversarial::{DISK, T0};
use crate::trace::{RegionMap, TraceLog, Who, tid};
use device::backend::{Backend, BackendConfig};
use device::layout::*;
use device::native::{HeapMem, VecMedia};
use device::shm::{SharedMem, Shm};
use device::transport::{Transport, format_flags};
use host::engine::{Host, HostConfig, HostError, Request};

/// Where the lesson's channel lives (for the trace's names).
pub fn region_map(crc: bool) -> RegionMap {
    let mem = HeapMem::new(TransportInfo::region_for(2) as usize);
    let t = device::trace::NoTrace;
    let shm = Shm::new(&mem, &t);
    let flags = flags(crc);
    let mut map = RegionMap::default();
    if Transport::format(shm, flags, false, T0).is_ok()
        && let Ok(b) = Backend::start(
            shm,
            BackendConfig::default(),
            VecMedia::new(DISK),
            &mut vec![0u8; chan::MAX_IO as usize],
            T0,
        )
        && let Some(seg) = b.channel_segments().next()
        && let Ok(tp) = Transport::open(shm, false)
        && let Ok(base) = tp.channel_base(seg)
    {
        map.add_channel(0, &device::channel::ChannelGeom::new(base, flags, false));
    }
    map
}

fn flags(crc: bool) -> u16 {
    format_flags(crc)
}

/// What the host made of the corrupted CE.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// It refused it (and, with CRCs, took it once intact): the rule held.
    Refused(String),
    /// It took a CE the device never wrote: the rule was broken.
    Accepted(String),
    /// The scenario itself went wrong before the point.
    Harness(String),
}

/// `crc` false: the broken run (v3 entries without CRC, v3 mode); true: the fixed run
/// (CRC'd entries, non-coherent mode).
pub fn run(crc: bool, log: &TraceLog) -> Verdict {
    match scenario(crc, log) {
        Ok(v) => v,
        Err(e) => Verdict::Harness(e),
    }
}

fn scenario(crc: bool, log: &TraceLog) -> Result<Verdict, String> {
    let mem = HeapMem::new(TransportInfo::region_for(2) as usize);
    let (dtap, htap) = (log.tap(Who::Device), log.tap(Who::Host));
    let (dshm, hshm) = (Shm::new(&mem, &dtap), Shm::new(&mem, &htap));
    let flags = flags(crc);
    Transport::format(dshm, flags, false, T0).map_err(|e| format!("format: {e:?}"))?;
    let mut scratch = vec![0u8; chan::MAX_IO as usize];
    let bc = BackendConfig {
        noncoherent: crc,
        ..BackendConfig::default()
    };
    let mut backend = Backend::start(dshm, bc, VecMedia::new(DISK), &mut scratch, T0)
        .map_err(|e| format!("backend start: {e:?}"))?;
    let seg = backend.channel_segments().next().ok_or("no channel")?;
    let base = Transport::open(dshm, false)
        .and_then(|t| t.channel_base(seg))
        .map_err(|e| format!("open: {e:?}"))?;
    let g = device::channel::ChannelGeom::new(base, flags, false);
    let hc = HostConfig {
        hostname: "hostA",
        noncoherent: crc,
        nc_retries: 16,
        durable_tokens: false,
        ..HostConfig::default()
    };
    let host = Host::register(hshm, hc, T0).map_err(|e| format!("register: {e:?}"))?;
    let bid = host.find_backend(T0).map_err(|e| format!("find: {e:?}"))?;
    let mut dev = host
        .dev_start(bid, 1, T0)
        .map_err(|e| format!("dev-start: {e:?}"))?;
    let mut now = T0;
    while !dev.poll_ready(now).map_err(|e| format!("reset: {e:?}"))? {
        now += 1_000_000;
        backend.poll(now).map_err(|e| format!("device: {e:?}"))?;
    }
    let q = &mut dev.queues[0];
    let req = Request {
        op: op::WRITE,
        offset: 4096,
        len: 4096,
    };
    let t = q
        .submit(req, &[0x3C; 4096])
        .map_err(|e| format!("submit: {e:?}"))?;
    log.note(format!(
        "host submitted WRITE 0x1000 +4096 as tid {}",
        tid(t)
    ));
    backend
        .poll(now + 1)
        .map_err(|e| format!("device: {e:?}"))?;
    // The CE is at the completion ring's first slot; flip bit 0 of its `result`.
    let at = g.ce(0) + g.el.ce_fields().result as u64;
    let mut byte = [0u8; 1];
    mem.read(at, &mut byte);
    mem.write(at, &[byte[0] ^ 0x01]);
    log.note(format!(
        "THE LINK: bit 0 of the CE's `result` flips in shared memory ({} byte +{})",
        if crc {
            "24 B CE with ce_crc"
        } else {
            "16 B v3 CE, no CRC"
        },
        g.el.ce_fields().result
    ));
    let mut read_buf = vec![0u8; chan::MAX_IO as usize];
    match (crc, q.poll(&mut read_buf)) {
        (true, Err(HostError::Stale)) => {
            log.note("the host refused the CE (its CRC does not verify); the CE is restored");
        }
        (false, Err(HostError::BadCompletion { .. })) => {
            return Ok(Verdict::Refused("the host refused the CE".into()));
        }
        (_, Ok(Some(c))) => {
            let what = format!(
                "the host accepted a CE the device never wrote: tid {} result {} (the device \
                 posted 0)",
                tid(c.req_tid),
                c.result
            );
            log.failure(&what);
            return Ok(Verdict::Accepted(what));
        }
        (_, other) => return Err(format!("host poll: {other:?}")),
    }
    mem.write(at, &byte);
    match q.poll(&mut read_buf) {
        Ok(Some(c)) if c.req_tid == t && c.result == 0 => Ok(Verdict::Refused(format!(
            "the host refused the corrupted CE (16 re-reads, then HostError::Stale) and took the \
             intact one once it was restored: tid {} ok",
            tid(t)
        ))),
        other => Err(format!("the intact CE was not accepted: {other:?}")),
    }
}
