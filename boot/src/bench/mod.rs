//! The VM benchmarks behind `cargo run -- bench [fio|journal|profile]`. Performance figures
//! live here, never in tests.
//!
//! * [`fio`] — fio in one Linux guest on our ublk disk vs virtio-blk vs ublk null.
//! * [`journal`] — the journal-commit workload against the device kernel with a
//!   virtio-blk disk: FUA vs durability tokens.
//! * [`profile`] — one fio job on our ublk disk while the device counts TSC cycles
//!   per serve-loop phase.

pub mod fio;
pub mod journal;
pub mod profile;
