//! `boot`: host-side tooling of cbdfw — boot images, QEMU runner, Linux guest image.

pub mod guest;
