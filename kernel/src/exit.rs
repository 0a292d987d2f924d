//! Leaving QEMU with a status through the `isa-debug-exit` device (port 0xf4).
//!
//! QEMU exits with `(code << 1) | 1`; the runner (`qemu::status`) maps those statuses
//! back. The codes are declared once, in `device::exit_code`.

use x86_64::instructions::port::Port;

/// Codes the kernel writes to `isa-debug-exit` (the table in `device::exit_code`).
pub use device::exit_code::ExitCode;

/// Exit QEMU. Falls back to halting forever if the device is absent.
pub fn exit_qemu(code: ExitCode) -> ! {
    // SAFETY: port 0xf4 is the isa-debug-exit device the runner always adds;
    // writing it only terminates the VM.
    unsafe { Port::<u32>::new(0xf4).write(code.code()) };
    crate::arch::halt_forever()
}
