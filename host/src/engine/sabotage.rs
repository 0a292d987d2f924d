//! Deliberate protocol violations, **only** for the adversary's negative tests: with the cargo
//! feature `sabotage` (which the tests enable and the `cbd-host` binary never does) a
//! [`HostConfig`] carries a [`HostSabotage`]; without it every rule is always kept.

use super::HostConfig;

/// Rules a negative test switches off, one at a time.
#[cfg(feature = "sabotage")]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HostSabotage {
    /// Publish `submr_head` before writing back the WRITE payload (the write-back
    /// happens at the next submission, as if the thread were preempted).
    pub publish_before_payload_write_back: bool,
    /// Keep the device line inside the host's cache line (must match the backend).
    pub shared_ctrl_line: bool,
}

#[cfg(feature = "sabotage")]
impl HostConfig<'_> {
    pub(super) fn publish_before_payload_write_back(&self) -> bool {
        self.sabotage.publish_before_payload_write_back
    }
    pub(super) fn shared_ctrl_line(&self) -> bool {
        self.sabotage.shared_ctrl_line
    }
}

#[cfg(not(feature = "sabotage"))]
impl HostConfig<'_> {
    pub(super) fn publish_before_payload_write_back(&self) -> bool {
        false
    }
    pub(super) fn shared_ctrl_line(&self) -> bool {
        false
    }
}
