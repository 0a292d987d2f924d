//! Linux guest image (owned by the guest-image work; see docs/guest.md).
