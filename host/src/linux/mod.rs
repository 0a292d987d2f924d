//! The Linux program's pieces: the mapping of the shared transport, the CBD path and the ublk
//! device that `cbd-host` (src/bin/cbd-host) puts together.
//!
//! * [`mem`]: the mapping and its [`device::shm::SharedMem`] implementation (the `unsafe`).
//! * [`map`]: finding/opening/mapping the transport device.
//! * [`attach`]: options and errors of the real path, `--format`, transport open, backend checks.
//! * [`cbd_disk`]: [`cbd_disk::CbdDisk`], the host engine ([`crate::engine`]) behind ublk queues.
//! * [`disk`]: the [`disk::Disk`]/[`disk::QueueIo`] interface and the RAM test mode.
//! * `ublk` (cargo feature `ublk`, on by default): the ublk device (libublk), one queue per
//!   channel.

pub mod attach;
pub mod cbd_disk;
pub mod disk;
pub mod map;
#[allow(unsafe_code)] // platform layer: the mmap of the transport and its SharedMem implementation
pub mod mem;
#[cfg(feature = "ublk")]
pub mod ublk;
