//! Deliberate protocol violations, **only** for the adversary's negative tests: with the cargo
//! feature `sabotage` (which the tests enable and the `cbd-host` binary never does) a
//! [`HostConfig`] carries a [`HostSabotage`]; without it every rule is always kept
//! ([`HostSabotage::NONE`], a constant).
//!
//! Each switch removes one rule of the non-coherent mode (docs/protocol.md §4);
//! `docs/adversary.md` lists the negative test that catches each one.

use super::HostConfig;

/// Rules a negative test switches off, one at a time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HostSabotage {
    /// Rule 2, publication order: publish `submr_head` before writing back the WRITE
    /// payload (the write-back happens at the next submission, as if the thread were
    /// preempted).
    pub publish_before_payload_write_back: bool,
    /// Rule 2, writer side: do not write back an SE after storing it; the device sees
    /// `submr_head` move but the SE stays in the host's cache.
    pub skip_se_write_back: bool,
    /// Rule 2, ordering: publish `submr_head` without the store fence that orders the
    /// SE and payload write-backs before it.
    pub skip_submr_head_fence: bool,
    /// Rule 3, reader side: do not invalidate a CE before (re-)reading it.
    pub skip_ce_invalidate: bool,
    /// Rule 3, reader side: invalidate a CE but do not follow with a full fence.
    pub skip_ce_full_fence: bool,
    /// Rule 4: accept CEs and READ payloads without checking the CE CRC / data_crc.
    pub skip_crc_check: bool,
    /// Rule 1: keep the device line inside the host's cache line (must match the backend).
    pub shared_ctrl_line: bool,
}

impl HostSabotage {
    /// Every rule kept (production behaviour).
    pub const NONE: Self = Self {
        publish_before_payload_write_back: false,
        skip_se_write_back: false,
        skip_submr_head_fence: false,
        skip_ce_invalidate: false,
        skip_ce_full_fence: false,
        skip_crc_check: false,
        shared_ctrl_line: false,
    };
}

impl HostConfig<'_> {
    /// The switches in force: all off unless the `sabotage` feature is on and a test
    /// set one (without the feature a constant the optimiser folds).
    #[inline]
    pub(super) fn sab(&self) -> HostSabotage {
        #[cfg(feature = "sabotage")]
        return self.sabotage;
        #[cfg(not(feature = "sabotage"))]
        return HostSabotage::NONE;
    }
    pub(super) fn publish_before_payload_write_back(&self) -> bool {
        self.sab().publish_before_payload_write_back
    }
    pub(super) fn shared_ctrl_line(&self) -> bool {
        self.sab().shared_ctrl_line
    }
}
