//! The kernel's exit codes as the runner sees them, and the runner's own exit status.
//!
//! The kernel writes a code to `isa-debug-exit`; QEMU exits with `(code << 1) | 1`.
//! Keep the codes in sync with `kernel::exit::ExitCode`.

use std::time::Duration;

/// How a kernel run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KernelStatus {
    /// Kernel wrote 0x10.
    Success,
    /// Kernel wrote 0x11: test failure, panic or CPU exception.
    Failed,
    /// 0x12: no CXL device, CEDT or window.
    NoCxl,
    /// 0x13: an HDM decoder did not commit.
    DecoderCommit,
    /// 0x14: shared region smaller than required.
    RegionTooSmall,
    /// QEMU exited with a status the kernel does not produce (e.g. 0 after a
    /// triple fault with -no-reboot, or 1 for a QEMU error).
    Unexpected(Option<i32>),
    Timeout(Duration),
    Interrupted,
    RunnerError(String),
}

impl KernelStatus {
    pub fn from_qemu_exit(code: Option<i32>) -> KernelStatus {
        match code {
            Some(33) => KernelStatus::Success,
            Some(35) => KernelStatus::Failed,
            Some(37) => KernelStatus::NoCxl,
            Some(39) => KernelStatus::DecoderCommit,
            Some(41) => KernelStatus::RegionTooSmall,
            other => KernelStatus::Unexpected(other),
        }
    }

    /// The runner's process exit status for this outcome.
    pub fn exit_code(&self) -> i32 {
        match self {
            KernelStatus::Success => 0,
            KernelStatus::Failed => 1,
            KernelStatus::Unexpected(_) | KernelStatus::RunnerError(_) => 2,
            KernelStatus::NoCxl => 3,
            KernelStatus::DecoderCommit => 4,
            KernelStatus::RegionTooSmall => 5,
            KernelStatus::Timeout(_) => 124,
            KernelStatus::Interrupted => 130,
        }
    }

    pub fn describe(&self) -> String {
        match self {
            KernelStatus::Success => "success".into(),
            KernelStatus::Failed => "failure (test failed, panic or CPU exception)".into(),
            KernelStatus::NoCxl => {
                "no CXL memory found (no CEDT, no type-3 device or no window)".into()
            }
            KernelStatus::DecoderCommit => "an HDM decoder did not commit".into(),
            KernelStatus::RegionTooSmall => "shared region smaller than required".into(),
            KernelStatus::Unexpected(Some(0)) => {
                "QEMU exited 0 without isa-debug-exit (guest reset: triple fault?)".into()
            }
            KernelStatus::Unexpected(Some(c)) => {
                format!("QEMU exited with status {c} (QEMU error?)")
            }
            KernelStatus::Unexpected(None) => "QEMU was killed by a signal".into(),
            KernelStatus::Timeout(d) => format!("timed out after {} s; QEMU killed", d.as_secs()),
            KernelStatus::Interrupted => "interrupted (Ctrl-C); QEMU killed".into(),
            KernelStatus::RunnerError(e) => format!("runner error: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qemu_statuses_map_to_distinct_exit_codes() {
        let all =
            [33, 35, 37, 39, 41, 0, 1].map(|c| KernelStatus::from_qemu_exit(Some(c)).exit_code());
        assert_eq!(all, [0, 1, 3, 4, 5, 2, 2]);
        assert_eq!(KernelStatus::from_qemu_exit(None).exit_code(), 2);
    }
}
