//! The Linux program's pieces: the mapping of the shared transport, the CBD path and the ublk
//! device that `cbd-host` (src/bin/cbd-host) puts together.
//!
//! * [`mem`]: the mapping and its [`device::shm::SharedMem`] implementation (the `unsafe`).
//! * [`map`]: finding/opening/mapping the transport device.
//! * [`attach`]: transport open, host registration, backend checks (the real path).
//! * [`cbd_disk`]: [`cbd_disk::CbdDisk`], the `device::host` engine behind ublk queues.
//! * [`disk`]: the [`disk::Disk`]/[`disk::QueueIo`] interface and the RAM test mode.
//! * `ublk` (cargo feature `ublk`, on by default): the ublk device (libublk), one queue per
//!   channel.

pub mod attach;
pub mod cbd_disk;
pub mod disk;
pub mod map;
pub mod mem;
#[cfg(feature = "ublk")]
pub mod ublk;
