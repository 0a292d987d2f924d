//! The exit codes, declared once: what the kernel writes to QEMU's `isa-debug-exit`
//! device (port 0xf4), the status QEMU then exits with (`(code << 1) | 1`), and the
//! process status the runner (`boot`, behind `cargo run`) exits with for each, plus
//! the runner's own statuses.
//!
//! The kernel (`kernel::exit`) writes these codes and the runner (`qemu::status`)
//! maps them back; README.md's status table and docs/kernel.md's are checked against
//! this file by a test in `qemu::status`. No `std`, no dependencies.

/// Codes the kernel writes to `isa-debug-exit`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum ExitCode {
    /// Everything asked of this boot succeeded (QEMU status 33).
    Success = 0x10,
    /// A test, a panic or a CPU exception (QEMU status 35).
    Failed = 0x11,
    /// No CXL device / CEDT / window where one was required (status 37).
    NoCxl = 0x12,
    /// A HDM decoder refused to commit (status 39).
    DecoderCommit = 0x13,
    /// Shared region smaller than required (status 41).
    RegionTooSmall = 0x14,
}

impl ExitCode {
    /// Every code, in order.
    pub const ALL: [ExitCode; 5] = [
        ExitCode::Success,
        ExitCode::Failed,
        ExitCode::NoCxl,
        ExitCode::DecoderCommit,
        ExitCode::RegionTooSmall,
    ];

    /// The value written to `isa-debug-exit`.
    pub const fn code(self) -> u32 {
        self as u32
    }

    /// QEMU's exit status after the kernel wrote this code.
    pub const fn qemu_status(self) -> i32 {
        (((self as u32) << 1) | 1) as i32
    }

    /// The code behind a QEMU exit status, if the kernel wrote one.
    pub const fn from_qemu_status(status: i32) -> Option<ExitCode> {
        let mut i = 0;
        while i < Self::ALL.len() {
            if Self::ALL[i].qemu_status() == status {
                return Some(Self::ALL[i]);
            }
            i += 1;
        }
        None
    }

    /// The runner's process exit status for this outcome.
    pub const fn runner_status(self) -> u8 {
        match self {
            ExitCode::Success => 0,
            ExitCode::Failed => 1,
            ExitCode::NoCxl => 3,
            ExitCode::DecoderCommit => 4,
            ExitCode::RegionTooSmall => 5,
        }
    }

    /// What it means, as the runner says it.
    pub const fn meaning(self) -> &'static str {
        match self {
            ExitCode::Success => "success",
            ExitCode::Failed => "failure (test failed, panic or CPU exception)",
            ExitCode::NoCxl => "no CXL memory found (no CEDT, no type-3 device or no window)",
            ExitCode::DecoderCommit => "an HDM decoder did not commit",
            ExitCode::RegionTooSmall => "shared region smaller than required",
        }
    }
}

/// The runner's statuses for outcomes the kernel does not report itself.
pub mod runner {
    /// QEMU ended without the exit device (a triple fault under `-no-reboot`, a QEMU
    /// error, a signal), the runner failed, or its command line was bad.
    pub const ERROR: u8 = 2;
    /// The run took longer than `--timeout`; QEMU was killed.
    pub const TIMEOUT: u8 = 124;
    /// Ctrl-C; QEMU was killed.
    pub const INTERRUPTED: u8 = 130;
}

/// Every status the runner exits with and what it means, in order of status: the
/// table README.md shows.
pub const RUNNER_STATUSES: [(u8, &str); 8] = [
    (
        ExitCode::Success.runner_status(),
        ExitCode::Success.meaning(),
    ),
    (ExitCode::Failed.runner_status(), ExitCode::Failed.meaning()),
    (
        runner::ERROR,
        "QEMU or runner error (no exit code written, QEMU failed, or a bad command line)",
    ),
    (ExitCode::NoCxl.runner_status(), ExitCode::NoCxl.meaning()),
    (
        ExitCode::DecoderCommit.runner_status(),
        ExitCode::DecoderCommit.meaning(),
    ),
    (
        ExitCode::RegionTooSmall.runner_status(),
        ExitCode::RegionTooSmall.meaning(),
    ),
    (runner::TIMEOUT, "timed out (`--timeout`); QEMU killed"),
    (runner::INTERRUPTED, "interrupted (Ctrl-C); QEMU killed"),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_statuses_are_distinct() {
        for c in ExitCode::ALL {
            assert_eq!(ExitCode::from_qemu_status(c.qemu_status()), Some(c));
        }
        assert_eq!(
            ExitCode::ALL.map(ExitCode::qemu_status),
            [33, 35, 37, 39, 41]
        );
        // QEMU's own statuses (0 after a reset, 1 on an error) are not the kernel's.
        assert_eq!(ExitCode::from_qemu_status(0), None);
        assert_eq!(ExitCode::from_qemu_status(1), None);
        let s = RUNNER_STATUSES.map(|(s, _)| s);
        assert_eq!(s, [0, 1, 2, 3, 4, 5, 124, 130]);
        for c in ExitCode::ALL {
            assert!(RUNNER_STATUSES.contains(&(c.runner_status(), c.meaning())));
        }
    }
}
