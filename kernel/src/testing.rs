//! In-QEMU test harness (stable Rust: no custom test frameworks).
//!
//! Each file in `kernel/tests/` is its own bootable binary that calls [`run`] with
//! its cases. A case passes by returning; a failed assertion panics, the panic
//! handler prints `FAILED` and exits with the failure status, and the runner
//! (`cargo ktest`) reports the binary as failed.

/// One test case.
pub struct Test {
    pub name: &'static str,
    pub func: fn(),
}

/// Declare a list of test cases from function paths.
#[macro_export]
macro_rules! tests {
    ($($f:path),* $(,)?) => {
        &[$($crate::testing::Test { name: stringify!($f), func: $f }),*]
    };
}

/// Run all cases, print `name ... ok` for each, then exit with success.
pub fn run(suite: &str, tests: &[Test]) -> ! {
    crate::serial_println!("running {} kernel tests in {suite}", tests.len());
    for t in tests {
        crate::serial_print!("test {} ... ", t.name);
        (t.func)();
        crate::serial_println!("ok");
    }
    crate::serial_println!("kernel tests: {} passed in {suite}", tests.len());
    crate::exit_qemu(crate::ExitCode::Success)
}

/// Panic handler body for test binaries.
pub fn test_panic(info: &core::panic::PanicInfo) -> ! {
    crate::serial::force_write_fmt(format_args!(
        "FAILED\n\n{info}\nexit: failure (test failed)\n"
    ));
    crate::exit_qemu(crate::ExitCode::Failed)
}
