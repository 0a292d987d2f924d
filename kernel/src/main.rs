//! The cbdfw device kernel.
//!
//! What a boot does is chosen at run time (`opt/cbdfw/mode` in fw_cfg, set by
//! `cargo run -- --mode MODE`):
//! * `report` (default): platform report, exit;
//! * `region-selftest`: enable the shared region, read the host's pattern at
//!   +0x1000 (invalidate, then read), write patterns to the first and last line,
//!   write them back, exit;
//! * `backend`: serve the CBD v3 transport as a backend device (`kernel/src/serve.rs`).
#![no_std]
#![no_main]

use bootloader_api::{BootInfo, entry_point};
use device::shm::SharedMem;
use kernel::{ExitCode, exit_qemu};

entry_point!(kernel_main, config = &kernel::BOOTLOADER_CONFIG);

/// Offset where a host may leave a pattern for the self-test to read.
const HOST_PATTERN_OFF: u64 = 0x1000;

fn kernel_main(boot_info: &'static mut BootInfo) -> ! {
    let platform = kernel::init(boot_info);
    log::info!(
        "cbdfw {} — CBD backend device firmware",
        env!("CARGO_PKG_VERSION")
    );
    kernel::report(&platform);
    let mode = kernel::fwcfg::option("mode");
    match mode.as_deref().unwrap_or("report") {
        "report" => {}
        "region-selftest" => region_selftest(&platform),
        "backend" => match kernel::shared_region(&platform) {
            Ok(r) => exit_qemu(kernel::serve::serve(r)),
            Err(code) => exit_qemu(code),
        },
        other => {
            log::error!("boot: unknown mode {other:?} (report, region-selftest, backend)");
            exit_qemu(ExitCode::Failed);
        }
    }
    log::info!("boot: done");
    exit_qemu(ExitCode::Success)
}

fn region_selftest(p: &kernel::Platform) {
    let r = match kernel::shared_region(p) {
        Ok(r) => r,
        Err(code) => exit_qemu(code),
    };
    let mut line = [0u8; 64];
    r.invalidate(HOST_PATTERN_OFF, 64);
    r.read(HOST_PATTERN_OFF, &mut line);
    let n = line.iter().position(|&b| b == 0).unwrap_or(64);
    match core::str::from_utf8(&line[..n]) {
        Ok(s) if !s.is_empty() => {
            log::info!("selftest: host pattern at +{HOST_PATTERN_OFF:#x}: \"{s}\"")
        }
        _ => log::info!(
            "selftest: no host pattern at +{HOST_PATTERN_OFF:#x} (first bytes {:02x?})",
            &line[..8]
        ),
    }
    let last = r.len() - 64;
    for (off, tag) in [(0, "FIRST"), (last, "LAST")] {
        let mut pat = [0u8; 64];
        let mut s: heapless::String<64> = heapless::String::new();
        let _ = core::fmt::write(
            &mut s,
            format_args!("CBDFW-{tag}-LINE off={off:#x} src={:?}", r.source),
        );
        pat[..s.len()].copy_from_slice(s.as_bytes());
        r.write(off, &pat);
        r.write_back(off, 64);
        log::info!("selftest: wrote \"{s}\" at +{off:#x} and wrote the line back");
    }
    r.store_fence();
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    kernel::panic_report(info)
}
