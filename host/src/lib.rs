//! `host`: the Linux side of CBD. A program running in the Linux guest maps the shared transport
//! (devdax from a CXL region, or the ivshmem BAR), registers as a CBD host, dev-starts against
//! the backend, and exposes the disk as a ublk block device. See docs/host.md.
//!
//! * [`mem`]: the mapping and its [`device::shm::SharedMem`] implementation (the `unsafe`).
//! * [`map`]: finding/opening/mapping the transport device.
//! * [`cbd`]: transport open, host registration, backend checks (the real path).
//! * [`engine`]: [`engine::CbdDisk`], the `device::host` engine behind ublk queues.
//! * [`disk`]: the [`disk::Disk`]/[`disk::QueueIo`] interface and the RAM test mode.
//! * [`ublk`]: the ublk device (libublk), one queue per channel.
//! * [`cli`]: command line.

pub mod cbd;
pub mod cli;
pub mod disk;
pub mod engine;
pub mod map;
pub mod mem;
pub mod ublk;
