//! The cbdfw device kernel.
#![no_std]
#![no_main]

use bootloader_api::{BootInfo, entry_point};
use kernel::{ExitCode, exit_qemu};

entry_point!(kernel_main, config = &kernel::BOOTLOADER_CONFIG);

fn kernel_main(boot_info: &'static mut BootInfo) -> ! {
    let platform = kernel::init(boot_info);
    log::info!(
        "cbdfw {} — CBD backend device firmware",
        env!("CARGO_PKG_VERSION")
    );
    kernel::report(&platform);
    log::info!("boot: done");
    exit_qemu(ExitCode::Success)
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    kernel::panic_report(info)
}
