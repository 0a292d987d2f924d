//! Leaving QEMU with a status through the `isa-debug-exit` device (port 0xf4).
//!
//! QEMU exits with `(code << 1) | 1`; the runner (boot/) maps those statuses back.

use x86_64::instructions::port::Port;

/// Codes the kernel writes to `isa-debug-exit`. Keep in sync with `boot::status`.
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

/// Exit QEMU. Falls back to halting forever if the device is absent.
pub fn exit_qemu(code: ExitCode) -> ! {
    // SAFETY: port 0xf4 is the isa-debug-exit device the runner always adds;
    // writing it only terminates the VM.
    unsafe { Port::<u32>::new(0xf4).write(code as u32) };
    crate::arch::halt_forever()
}
