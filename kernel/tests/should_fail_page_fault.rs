//! A read from an unmapped address must produce the page-fault report (vector,
//! error code, RIP, CR2) and end the run with the failure status.
//! expect-exit: failure
//! expect-output: CPU EXCEPTION 14 (page fault (#PF))
//! expect-output: CR2=0x00000deadbeef000 (non-present page on read access, kernel mode)
//! expect-output: exit: failure (exception)
#![no_std]
// The test's whole point is one deliberately invalid read.
#![allow(unsafe_code)]
#![no_main]

use bootloader_api::{BootInfo, entry_point};

entry_point!(main, config = &kernel::BOOTLOADER_CONFIG);

fn main(boot_info: &'static mut BootInfo) -> ! {
    kernel::init(boot_info);
    kernel::serial_println!("touching 0xdeadbeef000");
    // SAFETY: deliberately invalid: this test checks the fault path.
    let v = unsafe { core::ptr::read_volatile(0xdea_dbee_f000 as *const u64) };
    kernel::serial_println!("read {v:#x}: no fault happened");
    kernel::exit_qemu(kernel::ExitCode::Success)
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    kernel::testing::test_panic(info)
}
