//! The real path: a CBD v3 transport in shared memory, this program as its *host*.
//!
//! Here: the options of the CBD path, its errors, `--format`, opening (validating) the
//! transport and looking up the backend to dev-start against, refusing a missing, stopped or
//! dead one with a clear message. `CbdDisk::start` (`super::cbd_disk`) begins with [`prepare`],
//! then registers as a host (by hostname) and starts the block device with one channel per
//! ublk queue over the blkdev engine, [`crate::engine`]. This module does not depend on
//! `cbd_disk`.

use std::fmt;

use device::layout::{HB_TIMEOUT_NS, STATE_NONE, STATE_RUNNING};
use device::shm::SharedMem;
use device::shm::Shm;
use device::trace::NoTrace;
use device::transport::{SlotKind, Transport, TransportError, format_flags, host_name, is_alive};

use super::mem::MappedMem;

/// Options of the CBD path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CbdOptions {
    pub hostname: String,
    pub backend_id: u32,
    /// Number of channels (= ublk queues).
    pub queues: u16,
    /// Requests in flight per channel (the ublk queue depth; at most crate::engine::MAX_DEPTH).
    pub depth: u16,
    /// Write back / invalidate around every shared record access (non-coherent memory, e.g.
    /// two machines on a CXL switch). Off for coherent sharing (one machine, ivshmem).
    pub noncoherent: bool,
    /// Format a CBD v3 transport (flags MULTIHOST, like the cbdfw kernel) when the mapping holds
    /// none. Never overwrites a valid transport.
    pub format: bool,
    /// How long to wait for the backend to appear/come alive (0: fail at once).
    pub wait_backend_ns: u64,
    /// Plain CBD v3: none of our extensions (no durability tokens, no non-coherent mode, no
    /// DISCARD/WRITE_ZEROES). FUA = WRITE + CBD FLUSH, flush = CBD FLUSH.
    pub plain_v3: bool,
    /// Power window advertised to the backend (µs; 0 = none). Only with durability tokens.
    pub power_window_us: u64,
    /// Intent of plain (non-FUA) writes when durability tokens are on.
    pub default_intent: crate::engine::Intent,
    /// The caller proved that every earlier cbd-host of this host name is dead (it holds
    /// the [`HostLock`], or took over the dead one's ublk device): records of this host
    /// name that still look alive are that dead program's, and [`prepare`] reclaims them
    /// ([`reclaim_own_records`]) instead of being refused for 30 s.
    pub reclaim: bool,
    /// How long requests are held for a backend that is down (dead or restarting) before
    /// they fail with `EIO` (`--recover-timeout`).
    pub recover_timeout_ns: u64,
    /// Replay buffer: bytes of written data kept until the backend confirms them durable,
    /// to send again after a restart that lost them (`--replay-buffer`; 0 = none: the next
    /// flush fails with `EIO` instead). Only with durability tokens.
    pub replay_bytes: usize,
}

impl CbdOptions {
    /// Defaults for everything but the host name.
    pub fn new(hostname: impl Into<String>) -> CbdOptions {
        CbdOptions {
            hostname: hostname.into(),
            backend_id: 0,
            queues: 1,
            depth: 64,
            noncoherent: false,
            format: false,
            wait_backend_ns: 0,
            plain_v3: false,
            power_window_us: 0,
            default_intent: crate::engine::Intent::Standard,
            reclaim: false,
            recover_timeout_ns: super::cbd_disk::DEFAULT_RECOVER_TIMEOUT_NS,
            replay_bytes: super::cbd_disk::DEFAULT_REPLAY_BYTES,
        }
    }
}

#[derive(Debug)]
pub enum CbdError {
    Transport {
        step: &'static str,
        err: TransportError,
    },
    NoBackend(u32),
    BackendNotRunning {
        id: u32,
        state: u8,
    },
    BackendDead {
        id: u32,
        age_s: u64,
    },
    /// The host engine refused (dev-start, RESET, ...).
    Engine {
        step: &'static str,
        err: crate::engine::HostError,
    },
}

impl fmt::Display for CbdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CbdError::Transport { step, err } => match err {
                TransportError::Invalid(why) => write!(
                    f,
                    "{step}: no valid CBD transport in the mapping ({why}); is the backend \
                     running and is --offset right?"
                ),
                TransportError::Alive => write!(
                    f,
                    "{step}: another host with this id is alive (heartbeat within 30 s); \
                     wait or use another --hostname"
                ),
                other => write!(f, "{step}: {other:?}"),
            },
            CbdError::NoBackend(id) => write!(
                f,
                "backend {id} does not exist in the transport (is the cbdfw backend started?)"
            ),
            CbdError::BackendNotRunning { id, state } => {
                write!(f, "backend {id} is not running (state {state})")
            }
            CbdError::BackendDead { id, age_s } => write!(
                f,
                "backend {id} is dead: last heartbeat {age_s} s ago (timeout {} s)",
                HB_TIMEOUT_NS / 1_000_000_000
            ),
            CbdError::Engine { step, err } => match err {
                crate::engine::HostError::InUse => write!(
                    f,
                    "{step}: the backend already serves a running blkdev (another host?)"
                ),
                crate::engine::HostError::Unsupported => write!(
                    f,
                    "{step}: the backend does not offer the non-coherent mode (--noncoherent)"
                ),
                crate::engine::HostError::Invalid => write!(
                    f,
                    "{step}: invalid request (more --queues than the backend has channels?)"
                ),
                crate::engine::HostError::Timeout => {
                    write!(f, "{step}: the backend did not answer within 30 s")
                }
                other => write!(f, "{step}: {other:?}"),
            },
        }
    }
}

impl std::error::Error for CbdError {}

/// CLOCK_REALTIME in nanoseconds (the CBD heartbeat clock).
pub use device::native::now_ns;

/// The backend we talk to (and, once registered, our host id).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registered {
    pub host_id: u32,
    pub backend_id: u32,
    /// Backend disk size in bytes.
    pub dev_size: u64,
    /// Feature bits the backend advertises (`device::layout::features`).
    pub features: u64,
}

/// Opens the transport and checks the backend (exists, running, alive) without writing
/// anything: the specific errors for a missing, stopped or dead backend come from here.
/// `host_id` of the result is `u32::MAX` (not registered yet).
pub fn register_check_only(
    mem: &'static MappedMem,
    opts: &CbdOptions,
    now: u64,
) -> Result<Registered, CbdError> {
    static TRACE: NoTrace = NoTrace;
    let shm = Shm::new(mem, &TRACE);
    let tp = Transport::open(shm, opts.noncoherent).map_err(|err| CbdError::Transport {
        step: "opening the transport",
        err,
    })?;
    let be = tp
        .backend(opts.backend_id)
        .map_err(|err| CbdError::Transport {
            step: "reading the backend record",
            err,
        })?
        .ok_or(CbdError::NoBackend(opts.backend_id))?
        .rec;
    if be.state == STATE_NONE {
        return Err(CbdError::NoBackend(opts.backend_id));
    }
    if be.state != STATE_RUNNING {
        return Err(CbdError::BackendNotRunning {
            id: opts.backend_id,
            state: be.state,
        });
    }
    if !is_alive(be.alive_ts, now) {
        return Err(CbdError::BackendDead {
            id: opts.backend_id,
            age_s: now.saturating_sub(be.alive_ts) / 1_000_000_000,
        });
    }
    log::info!(
        "backend {} alive, {} MiB",
        opts.backend_id,
        (be.dev_size << 9) >> 20
    );
    Ok(Registered {
        host_id: u32::MAX,
        backend_id: opts.backend_id,
        dev_size: be.dev_size << 9,
        features: be.features,
    })
}

/// The proof, on this Linux, that no other cbd-host of a host name runs: an exclusive
/// `flock` on `DIR/host-NAME.lock`, held for the life of the program. The kernel drops it
/// when its holder dies, however it dies (SIGKILL included), so a program that gets it knows
/// that records of its host name which still look alive belong to a dead predecessor.
#[derive(Debug)]
pub struct HostLock {
    _file: std::fs::File,
    pub path: std::path::PathBuf,
}

/// What [`HostLock::acquire`] found.
#[derive(Debug)]
pub enum Lock {
    Held(HostLock),
    /// Another live process holds it: a cbd-host of this host name runs here.
    Busy(std::path::PathBuf),
}

impl HostLock {
    /// Takes the lock of `hostname` in `dir` (created if missing) without waiting.
    pub fn acquire(dir: &std::path::Path, hostname: &str) -> std::io::Result<Lock> {
        std::fs::create_dir_all(dir)?;
        let name: String = hostname
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let path = dir.join(format!("host-{name}.lock"));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        match file.try_lock() {
            Ok(()) => Ok(Lock::Held(HostLock { _file: file, path })),
            Err(std::fs::TryLockError::WouldBlock) => Ok(Lock::Busy(path)),
            Err(std::fs::TryLockError::Error(e)) => Err(e),
        }
    }
}

/// What [`reclaim_own_records`] cleared.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reclaimed {
    /// The dead program's host record, if one was left.
    pub host_id: Option<u32>,
    /// Its blkdev records (any state but NONE), cleared before the host record.
    pub blkdevs: Vec<u32>,
}

/// Clears what a dead cbd-host of `hostname` left in the transport: every blkdev record
/// naming its host record, then the host record itself. Only for a caller that proved the
/// predecessor dead ([`CbdOptions::reclaim`]); records of other host names are never
/// touched. The backend answers the new dev-start's RESETs as usual (staged writes of
/// the dead program's channels are made durable before the answer), so nothing of the
/// dead program's survives but what it wrote.
pub fn reclaim_own_records(
    mem: &'static MappedMem,
    noncoherent: bool,
    hostname: &str,
) -> Result<Reclaimed, CbdError> {
    static TRACE: NoTrace = NoTrace;
    let step = "reclaiming the records of a dead cbd-host of this host name";
    let te = |err| CbdError::Transport { step, err };
    let tp = Transport::open(Shm::new(mem, &TRACE), noncoherent).map_err(te)?;
    let name = host_name(hostname);
    let mut out = Reclaimed::default();
    for hid in 0..tp.info.host_num {
        let Some(h) = tp.host(hid).map_err(te)? else {
            continue;
        };
        if h.rec.state == STATE_NONE || h.rec.hostname != name {
            continue;
        }
        for bid in 0..tp.info.blkdev_num {
            if let Some(d) = tp.blkdev(bid).map_err(te)?
                && d.rec.state != STATE_NONE
                && d.rec.host_id == hid
            {
                tp.clear(SlotKind::Blkdev, bid).map_err(te)?;
                out.blkdevs.push(bid);
            }
        }
        tp.clear(SlotKind::Host, hid).map_err(te)?;
        out.host_id = Some(hid);
    }
    Ok(out)
}

/// Formats the transport if asked and none exists, then waits (up to `opts.wait_backend_ns`)
/// for the backend to exist and be alive. Missing/stopped/dead backends after the wait and
/// every other error are returned at once. With [`CbdOptions::reclaim`], the records a dead
/// cbd-host of this host name left are then cleared ([`reclaim_own_records`]).
pub fn prepare(
    mem: &'static MappedMem,
    opts: &CbdOptions,
    clock: &dyn Fn() -> u64,
) -> Result<Registered, CbdError> {
    static TRACE: NoTrace = NoTrace;
    if opts.format {
        let shm = Shm::new(mem, &TRACE);
        match Transport::open(shm, opts.noncoherent) {
            Ok(_) => log::info!("--format: a valid transport exists; left as it is"),
            Err(TransportError::Invalid(why)) => {
                Transport::format(shm, format_flags(opts.noncoherent), false, clock()).map_err(
                    |err| CbdError::Transport {
                        step: "formatting the transport",
                        err,
                    },
                )?;
                log::info!(
                    "formatted a CBD v3 transport over {} MiB (there was none: {why})",
                    mem.size() >> 20
                );
            }
            Err(err) => {
                return Err(CbdError::Transport {
                    step: "opening the transport",
                    err,
                });
            }
        }
    }
    let t0 = clock();
    let mut logged = false;
    loop {
        let now = clock();
        match register_check_only(mem, opts, now) {
            Err(
                e @ (CbdError::NoBackend(_)
                | CbdError::BackendNotRunning { .. }
                | CbdError::BackendDead { .. }),
            ) if now.saturating_sub(t0) < opts.wait_backend_ns => {
                if !logged {
                    log::info!("waiting for the backend: {e}");
                    logged = true;
                }
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            Ok(r) => {
                if opts.reclaim {
                    let got = reclaim_own_records(mem, opts.noncoherent, &opts.hostname)?;
                    if let Some(h) = got.host_id {
                        log::info!(
                            "reclaimed host record {h} and blkdev record(s) {:?} of a dead \
                             cbd-host named {:?}",
                            got.blkdevs,
                            opts.hostname
                        );
                    }
                }
                return Ok(r);
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use device::layout::BackendInfo;

    fn mapped(len: u64) -> &'static MappedMem {
        let (f, p) = crate::linux::mem::tests::tmpfile(len);
        std::fs::remove_file(&p).unwrap();
        Box::leak(Box::new(MappedMem::map(f, 0, len as usize).unwrap()))
    }

    fn opts() -> CbdOptions {
        CbdOptions {
            depth: 8,
            ..CbdOptions::new("guest")
        }
    }

    #[test]
    fn format_creates_a_transport_once() {
        let m = mapped(64 << 20);
        let o = CbdOptions {
            format: true,
            ..opts()
        };
        // Formatted, but no backend yet: the backend error, not a transport error.
        let e = prepare(m, &o, &now_ns).unwrap_err();
        assert!(matches!(e, CbdError::NoBackend(0)), "{e}");
        static TRACE: NoTrace = NoTrace;
        let info = Transport::open(Shm::new(m, &TRACE), false).unwrap().info;
        // A second --format leaves the existing transport alone.
        m.store_u64(info.host_slot(0), 0x5a5a);
        let _ = prepare(m, &o, &now_ns);
        assert_eq!(m.load_u64(info.host_slot(0)), 0x5a5a);
    }

    #[test]
    fn empty_memory_is_not_a_transport() {
        let m = mapped(64 << 20);
        let e = register_check_only(m, &opts(), now_ns()).unwrap_err();
        assert!(matches!(e, CbdError::Transport { .. }), "{e}");
        assert!(e.to_string().contains("no valid CBD transport"), "{e}");
    }

    fn formatted_with_backend(alive_ts: u64, state: u8) -> &'static MappedMem {
        // state 0: the slot stays as `format` left it (no backend).
        static TRACE: NoTrace = NoTrace;
        let m = mapped(64 << 20);
        let tp = Transport::format(Shm::new(m, &TRACE), 0, true, 0).unwrap();
        if state != 0 {
            tp.write_backend(
                0,
                &BackendInfo {
                    state,
                    alive_ts,
                    dev_size: 2048,
                    ..Default::default()
                },
            )
            .unwrap();
        }
        m
    }

    #[test]
    fn missing_backend_is_reported() {
        let m = formatted_with_backend(0, 0);
        let e = register_check_only(m, &opts(), now_ns()).unwrap_err();
        assert!(matches!(e, CbdError::NoBackend(0)), "{e}");
    }

    #[test]
    fn dead_backend_is_reported() {
        let now = now_ns();
        let m = formatted_with_backend(now - 60_000_000_000, STATE_RUNNING);
        let e = register_check_only(m, &opts(), now).unwrap_err();
        assert!(
            matches!(e, CbdError::BackendDead { id: 0, age_s: 60 }),
            "{e}"
        );
    }

    #[test]
    fn live_backend_passes_the_check() {
        let now = now_ns();
        let m = formatted_with_backend(now - 1_000_000_000, STATE_RUNNING);
        let r = register_check_only(m, &opts(), now).unwrap();
        assert_eq!(
            r,
            Registered {
                host_id: u32::MAX,
                backend_id: 0,
                dev_size: 2048 * 512,
                features: 0,
            }
        );
    }
}
