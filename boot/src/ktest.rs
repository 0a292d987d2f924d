//! Kernel tests: every `kernel/tests/*.rs` is a bootable binary; boot each and judge it.
//!
//! A test file may declare what it expects in `//! expect-…:` lines:
//! * `//! expect-exit: failure` — the binary must end with the failure status (used
//!   by the tests proving that failures are detected); files named `should_fail*`
//!   imply it;
//! * `//! expect-output: TEXT` — the serial output must contain TEXT;
//! * `//! qemu-topology: NAME` — boot with `qemu/topologies/NAME.args` (a fresh
//!   256 MiB backing file in /dev/shm, removed afterwards).
//!
//! Without declarations a test must exit with success *and* print its
//! `kernel tests: N passed` line (a binary that exits 0 without running its cases
//! is a failure).

use qemu::status::KernelStatus;

/// What a test binary is expected to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expectation {
    pub should_fail: bool,
    pub output: Vec<String>,
    pub topology: Option<String>,
}

impl Expectation {
    /// Read the expectations from a test's source text and file name.
    pub fn parse(name: &str, source: &str) -> Expectation {
        let mut e = Expectation {
            should_fail: name.starts_with("should_fail"),
            output: Vec::new(),
            topology: None,
        };
        for line in source.lines() {
            let l = line.trim();
            if let Some(v) = l.strip_prefix("//! expect-exit:") {
                e.should_fail = v.trim() == "failure";
            } else if let Some(v) = l.strip_prefix("//! expect-output:") {
                e.output.push(v.trim().to_string());
            } else if let Some(v) = l.strip_prefix("//! qemu-topology:") {
                e.topology = Some(v.trim().to_string());
            }
        }
        if !e.should_fail {
            e.output.push("kernel tests:".into());
        }
        e
    }

    /// Judge a run: `Ok(())` if it met the expectation, else why not.
    pub fn judge(&self, status: &KernelStatus, output: &str) -> Result<(), String> {
        let want = if self.should_fail {
            KernelStatus::Failed
        } else {
            KernelStatus::Success
        };
        if *status != want {
            return Err(format!(
                "expected {}, got {}",
                want.describe(),
                status.describe()
            ));
        }
        for o in &self.output {
            if !output.contains(o.as_str()) {
                return Err(format!("output lacks {o:?}"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failing_kernel_test_is_reported_as_failure() {
        let e = Expectation::parse("basic", "//! plain test\n");
        assert!(e.judge(&KernelStatus::Failed, "test x ... FAILED").is_err());
        assert!(
            e.judge(
                &KernelStatus::Timeout(std::time::Duration::from_secs(1)),
                ""
            )
            .is_err()
        );
        // exiting 0 without having run the cases is not a pass either
        assert!(e.judge(&KernelStatus::Success, "").is_err());
        assert!(
            e.judge(&KernelStatus::Success, "kernel tests: 3 passed in basic")
                .is_ok()
        );
    }

    #[test]
    fn should_fail_tests_need_failure_and_their_output() {
        let e = Expectation::parse(
            "should_fail_page_fault",
            "//! expect-output: CR2=0x00000deadbeef000\n",
        );
        assert!(e.should_fail);
        assert!(
            e.judge(&KernelStatus::Success, "kernel tests: 1 passed")
                .is_err()
        );
        assert!(e.judge(&KernelStatus::Failed, "no report").is_err());
        assert!(
            e.judge(&KernelStatus::Failed, "    CR2=0x00000deadbeef000 (…)")
                .is_ok()
        );
        let e = Expectation::parse("x", "//! expect-exit: failure\n");
        assert!(e.should_fail);
    }
}
