//! A native CBD host — our host engine (`host::engine`), in this process — attached
//! to a booted device VM over the VM's shared file: the start of `bench journal`,
//! `boot/tests/device_serve.rs` and the crash tests (`tests/tests/crash/`).

use std::time::{Duration, Instant};

use device::native::{MmapMem, now_ns};
use device::shm::Shm;
use device::trace::NoTrace;
use host::engine::{Blkdev, Host, HostConfig};

/// How long the device may take to answer the RESET of every queue.
pub const RESET_LIMIT: Duration = Duration::from_secs(60);

/// Register as `hostname` on the transport in `mem` (the shared file the device VM
/// serves), find the live backend, dev-start `queues` queues (0: one per device
/// channel) and wait until the device has answered every queue's RESET. The
/// returned blkdev's `backend_id` is the backend it attached to.
pub fn attach<'a>(
    mem: &'a MmapMem,
    hostname: &'a str,
    queues: u32,
) -> Result<Blkdev<'a, MmapMem>, String> {
    let host = Host::register(
        Shm::new(mem, &NoTrace),
        HostConfig {
            hostname,
            ..HostConfig::default()
        },
        now_ns(),
    )
    .map_err(|e| format!("host register: {e:?}"))?;
    let bid = host
        .find_backend(now_ns())
        .map_err(|e| format!("no live backend: {e:?}"))?;
    let mut blk = host
        .dev_start(bid, queues, now_ns())
        .map_err(|e| format!("dev-start: {e:?}"))?;
    let t0 = Instant::now();
    while !blk
        .poll_ready(now_ns())
        .map_err(|e| format!("RESET: {e:?}"))?
    {
        if t0.elapsed() > RESET_LIMIT {
            return Err("the device did not answer the RESET".into());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(blk)
}
