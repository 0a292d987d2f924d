//! The kernel's exit codes as the runner sees them, and the runner's own exit status.
//!
//! The kernel writes a code to `isa-debug-exit`; QEMU exits with `(code << 1) | 1`.
//! The codes, QEMU's statuses and the runner's are one table: `device::exit_code`.

use std::time::Duration;

use device::exit_code::{ExitCode, runner};

/// How a kernel run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KernelStatus {
    /// Kernel wrote [`ExitCode::Success`].
    Success,
    /// Kernel wrote [`ExitCode::Failed`]: test failure, panic or CPU exception.
    Failed,
    /// [`ExitCode::NoCxl`]: no CXL device, CEDT or window.
    NoCxl,
    /// [`ExitCode::DecoderCommit`]: an HDM decoder did not commit.
    DecoderCommit,
    /// [`ExitCode::RegionTooSmall`]: shared region smaller than required.
    RegionTooSmall,
    /// QEMU exited with a status the kernel does not produce (e.g. 0 after a
    /// triple fault with -no-reboot, or 1 for a QEMU error).
    Unexpected(Option<i32>),
    Timeout(Duration),
    Interrupted,
    RunnerError(String),
}

impl From<ExitCode> for KernelStatus {
    fn from(c: ExitCode) -> KernelStatus {
        match c {
            ExitCode::Success => KernelStatus::Success,
            ExitCode::Failed => KernelStatus::Failed,
            ExitCode::NoCxl => KernelStatus::NoCxl,
            ExitCode::DecoderCommit => KernelStatus::DecoderCommit,
            ExitCode::RegionTooSmall => KernelStatus::RegionTooSmall,
        }
    }
}

impl KernelStatus {
    pub fn from_qemu_exit(code: Option<i32>) -> KernelStatus {
        match code.and_then(ExitCode::from_qemu_status) {
            Some(c) => c.into(),
            None => KernelStatus::Unexpected(code),
        }
    }

    /// The code the kernel wrote, if this outcome is one.
    pub fn kernel_code(&self) -> Option<ExitCode> {
        Some(match self {
            KernelStatus::Success => ExitCode::Success,
            KernelStatus::Failed => ExitCode::Failed,
            KernelStatus::NoCxl => ExitCode::NoCxl,
            KernelStatus::DecoderCommit => ExitCode::DecoderCommit,
            KernelStatus::RegionTooSmall => ExitCode::RegionTooSmall,
            _ => return None,
        })
    }

    /// The runner's process exit status for this outcome.
    pub fn exit_code(&self) -> i32 {
        i32::from(match self {
            KernelStatus::Unexpected(_) | KernelStatus::RunnerError(_) => runner::ERROR,
            KernelStatus::Timeout(_) => runner::TIMEOUT,
            KernelStatus::Interrupted => runner::INTERRUPTED,
            k => k
                .kernel_code()
                .expect("the rest are kernel codes")
                .runner_status(),
        })
    }

    pub fn describe(&self) -> String {
        if let Some(c) = self.kernel_code() {
            return c.meaning().into();
        }
        match self {
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
            _ => unreachable!("kernel codes are described above"),
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
        for c in ExitCode::ALL {
            let k = KernelStatus::from_qemu_exit(Some(c.qemu_status()));
            assert_eq!(k.kernel_code(), Some(c));
            assert_eq!(k.exit_code(), i32::from(c.runner_status()));
        }
        assert_eq!(
            KernelStatus::Timeout(Duration::from_secs(1)).exit_code(),
            124
        );
        assert_eq!(KernelStatus::Interrupted.exit_code(), 130);
    }

    fn doc(name: &str) -> String {
        let p = crate::workspace_root().join(name);
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    /// The rows of the first Markdown table after the line containing `marker`.
    fn table_after(text: &str, marker: &str) -> Vec<Vec<String>> {
        let rest = &text[text.find(marker).unwrap_or_else(|| panic!("no {marker:?}"))..];
        rest.lines()
            .skip_while(|l| !l.starts_with('|'))
            .take_while(|l| l.starts_with('|'))
            .skip(2) // header and |---|
            .map(|l| {
                l.trim_matches('|')
                    .split('|')
                    .map(|c| c.trim().to_string())
                    .collect()
            })
            .collect()
    }

    /// README.md's status table is `device::exit_code::RUNNER_STATUSES`, row by row.
    #[test]
    fn readme_status_table_is_the_code_table() {
        let rows = table_after(&doc("README.md"), "exits with the device's status");
        let want: Vec<Vec<String>> = device::exit_code::RUNNER_STATUSES
            .iter()
            .map(|(s, m)| vec![s.to_string(), m.to_string()])
            .collect();
        assert_eq!(
            rows, want,
            "README.md's status table differs from device::exit_code"
        );
    }

    /// docs/kernel.md's table: one row per kernel code with its QEMU and runner status,
    /// and the runner's own statuses.
    #[test]
    fn kernel_doc_status_table_matches_the_code_table() {
        let rows = table_after(&doc("docs/kernel.md"), "## Exit statuses");
        let codes: Vec<Vec<String>> = rows
            .iter()
            .filter(|r| r[0].starts_with("0x"))
            .map(|r| r[..3].to_vec())
            .collect();
        let want: Vec<Vec<String>> = ExitCode::ALL
            .iter()
            .map(|c| {
                vec![
                    format!("{:#04x}", c.code()),
                    c.qemu_status().to_string(),
                    c.runner_status().to_string(),
                ]
            })
            .collect();
        assert_eq!(
            codes, want,
            "docs/kernel.md's exit table differs from device::exit_code"
        );
        let others: Vec<&str> = rows
            .iter()
            .filter(|r| !r[0].starts_with("0x"))
            .map(|r| r[2].as_str())
            .collect();
        assert_eq!(
            others,
            [
                runner::ERROR.to_string(),
                format!("{} / {}", runner::TIMEOUT, runner::INTERRUPTED)
            ]
        );
    }
}
