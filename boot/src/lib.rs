//! `boot`: host-side tooling of cbdfw — kernel and boot-image builds, the QEMU
//! runner, kernel-test judging, and the Linux guest image.

pub mod bench;
pub mod device_vm;
pub mod guest;
pub mod image;
pub mod journal;
pub mod ktest;
pub mod pair;
pub mod qemu;
pub mod status;
pub mod topology;
