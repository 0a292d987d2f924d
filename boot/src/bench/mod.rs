//! The VM benchmarks behind `cargo run -- bench [fio|journal]`. Performance figures
//! live here, never in tests.
//!
//! * [`fio`] — fio in one Linux guest on our ublk disk vs virtio-blk vs ublk null.
//! * [`journal`] — the journal-commit workload against the device kernel with a
//!   virtio-blk disk: FUA vs durability tokens.

pub mod fio;
pub mod journal;
