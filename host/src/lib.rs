//! `host`: the Linux side of CBD. A program running in the Linux guest maps the shared transport
//! (devdax from a CXL region, or the ivshmem BAR), registers as a CBD host, dev-starts against
//! the backend, and exposes the disk as a ublk block device. See docs/host.md.
//!
//! * [`linux`]: the pieces of the Linux program (mapping, CBD path, ublk device).
//! * The `cbd-host` binary (src/bin/cbd-host): command line and main loop.

pub mod linux;
