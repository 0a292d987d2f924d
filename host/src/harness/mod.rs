//! Test harnesses of both engines natively, shared by the cross-role tests
//! (`host/tests/`) and the protocol lessons (`lessons/`, `cargo run -- lesson`) so that
//! a lesson runs exactly the schedule its test runs (cargo feature `harness`; the
//! `cbd-host` binary never enables it).
//!
//! * [`adversarial`]: the loop of an adversarial schedule (random requests over a model
//!   disk, RESET and crash mid-stream) on the adversarial memory.
//! * [`recorded`]: one seeded schedule of host and backend steps whose requests are
//!   recorded as a history for `history::check`.

use crate::engine::{Blkdev, Host};
use device::backend::Backend;
use device::shm::SharedMem;

pub mod adversarial;
pub mod recorded;

/// The schedules' clock at the transport's format (CLOCK_REALTIME ns); they start
/// 31 s later, past every record's liveness timeout.
pub const T0: u64 = 1_700_000_000_000_000_000;

/// The host finds the backend (its record lands some time after it was written back:
/// the device polls meanwhile) and dev-starts two queues.
pub fn attach<'a, M: SharedMem + ?Sized, D: device::media::Media>(
    host: &Host<'a, M>,
    backend: &mut Backend<'_, M, D>,
    now: u64,
) -> Result<Blkdev<'a, M>, String> {
    for _ in 0..1000 {
        if let Ok(id) = host.find_backend(now) {
            return host
                .dev_start(id, 2, now)
                .map_err(|e| format!("dev-start: {e:?}"));
        }
        backend.poll(now).map_err(|e| format!("device: {e:?}"))?;
    }
    Err("the backend record never became visible".into())
}
