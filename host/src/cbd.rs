//! The real path: a CBD v3 transport in shared memory, this program as its *host*.
//!
//! Steps: open (validate) the transport, register as a host (by hostname), look up the backend
//! to dev-start against and refuse a missing, stopped or dead one with a clear message, then
//! start the block device with one channel per ublk queue.
//!
//! The blkdev I/O engine (submit + poll completions on a channel) belongs to the `device` crate
//! (`device::host`, in progress). Until it exists, [`CbdDisk::start`] stops after the backend
//! check with [`CbdError::EngineMissing`].

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use device::layout::{HB_TIMEOUT_NS, STATE_NONE, STATE_RUNNING};
use device::shm::Shm;
use device::trace::NoTrace;
use device::transport::{Transport, TransportError, is_alive};

use crate::mem::MappedMem;

/// Options of the CBD path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CbdOptions {
    pub hostname: String,
    pub backend_id: u32,
    /// Number of channels (= ublk queues).
    pub queues: u16,
    /// Write back / invalidate around every shared record access (non-coherent memory, e.g.
    /// two machines on a CXL switch). Off for coherent sharing (one machine, ivshmem).
    pub noncoherent: bool,
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
    EngineMissing {
        host_id: u32,
        backend_id: u32,
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
            CbdError::EngineMissing {
                host_id,
                backend_id,
            } => write!(
                f,
                "registered as host {host_id}, backend {backend_id} is alive, but this build has \
                 no CBD blkdev engine yet (device::host); use --backend ram to test the ublk side"
            ),
        }
    }
}

impl std::error::Error for CbdError {}

/// CLOCK_REALTIME in nanoseconds (the CBD heartbeat clock).
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// The result of registration: which host id we are and the backend we talk to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registered {
    pub host_id: u32,
    pub backend_id: u32,
    /// Backend disk size in bytes.
    pub dev_size: u64,
}

/// Opens the transport, registers this host and checks the backend.
pub fn register(
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
    let host_id = tp
        .register_host(&opts.hostname, now)
        .map_err(|err| CbdError::Transport {
            step: "registering the host",
            err,
        })?;
    log::info!(
        "registered as host {host_id} ({}); backend {} alive, {} MiB",
        opts.hostname,
        opts.backend_id,
        (be.dev_size << 9) >> 20
    );
    Ok(Registered {
        host_id,
        backend_id: opts.backend_id,
        dev_size: be.dev_size << 9,
    })
}

/// Starts the CBD block device (dev-start) on the registered transport.
pub fn start(
    mem: &'static MappedMem,
    opts: &CbdOptions,
) -> Result<Box<dyn crate::disk::Disk>, CbdError> {
    let reg = register(mem, opts, now_ns())?;
    Err(CbdError::EngineMissing {
        host_id: reg.host_id,
        backend_id: reg.backend_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use device::layout::BackendInfo;
    use std::fs::OpenOptions;

    fn mapped(len: u64) -> &'static MappedMem {
        let p = std::env::temp_dir().join(format!(
            "cbd-host-cbd-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&p)
            .unwrap();
        f.set_len(len).unwrap();
        std::fs::remove_file(&p).unwrap();
        Box::leak(Box::new(MappedMem::map(f, 0, len as usize).unwrap()))
    }

    fn opts() -> CbdOptions {
        CbdOptions {
            hostname: "guest".into(),
            backend_id: 0,
            queues: 1,
            noncoherent: false,
        }
    }

    #[test]
    fn empty_memory_is_not_a_transport() {
        let m = mapped(64 << 20);
        let e = register(m, &opts(), now_ns()).unwrap_err();
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
        let e = register(m, &opts(), now_ns()).unwrap_err();
        assert!(matches!(e, CbdError::NoBackend(0)), "{e}");
    }

    #[test]
    fn dead_backend_is_reported() {
        let now = now_ns();
        let m = formatted_with_backend(now - 60_000_000_000, STATE_RUNNING);
        let e = register(m, &opts(), now).unwrap_err();
        assert!(
            matches!(e, CbdError::BackendDead { id: 0, age_s: 60 }),
            "{e}"
        );
    }

    #[test]
    fn live_backend_registers_host() {
        let now = now_ns();
        let m = formatted_with_backend(now - 1_000_000_000, STATE_RUNNING);
        let r = register(m, &opts(), now).unwrap();
        assert_eq!(
            r,
            Registered {
                host_id: 0,
                backend_id: 0,
                dev_size: 2048 * 512
            }
        );
        // The same hostname re-registering while alive is refused.
        let e = register(m, &opts(), now).unwrap_err();
        assert!(e.to_string().contains("alive"), "{e}");
    }
}
