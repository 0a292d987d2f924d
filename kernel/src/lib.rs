//! cbdfw kernel library: platform bring-up shared by the device binary and the
//! in-QEMU test binaries.
//!
//! Boot order ([`init`]): serial + logger → GDT/TSS → IDT → memory (frames,
//! device mapping area) → CPU features → TSC/RTC → ACPI → PCI.
#![no_std]

// The kernel's platform layers: the only modules allowed `unsafe` (each says why at
// its own `unsafe` blocks). Everything else in the kernel is safe code.
#[allow(unsafe_code)] // firmware tables read through the physical-memory map
pub mod acpi;
#[allow(unsafe_code)] // CPU: descriptor tables, interrupts, APIC, TSC, cache-line instructions
pub mod arch;
pub mod cxl;
#[allow(unsafe_code)] // the isa-debug-exit port
pub mod exit;
#[allow(unsafe_code)] // the fw_cfg I/O ports
pub mod fwcfg;
#[allow(unsafe_code)] // page tables and the physical-memory map
pub mod memory;
#[allow(unsafe_code)] // memory-mapped device registers
pub mod mmio;
pub mod pci;
#[allow(unsafe_code)] // the shared region: the SharedMem implementation over CXL/ivshmem memory
pub mod region;
#[allow(unsafe_code)] // the UART I/O ports
pub mod serial;
pub mod serve;
pub mod testing;
#[allow(unsafe_code)] // DMA buffers and MMIO of the virtio-blk media
pub mod virtio;

use bootloader_api::BootInfo;
use bootloader_api::config::{BootloaderConfig, Mapping};

pub use exit::{ExitCode, exit_qemu};

/// Bootloader configuration every kernel binary (device and tests) uses.
pub const BOOTLOADER_CONFIG: BootloaderConfig = {
    let mut c = BootloaderConfig::new_default();
    c.mappings.physical_memory = Some(Mapping::Dynamic);
    c.kernel_stack_size = 256 * 1024;
    c
};

/// What bring-up found.
pub struct Platform {
    pub acpi: Option<acpi::Acpi>,
    pub memory: memory::MemorySummary,
    pub pci_functions: usize,
}

/// The log level chosen at run time (`-fw_cfg name=opt/cbdfw/log,string=debug`).
pub fn runtime_log_level() -> log::LevelFilter {
    fwcfg::option("log")
        .and_then(|s| serial::parse_level(&s))
        .unwrap_or(log::LevelFilter::Info)
}

/// Bring the platform up. Never returns an error: missing pieces are logged, and
/// callers that need them fail with their own exit status.
#[allow(unsafe_code)] // hands the bootloader's memory map to the page-table layer, once
pub fn init(boot_info: &'static mut BootInfo) -> Platform {
    serial::init_logger(runtime_log_level());
    arch::gdt::init();
    arch::idt::init();

    let Some(phys_offset) = boot_info.physical_memory_offset.into_option() else {
        log::error!("boot: bootloader gave no physical memory mapping");
        exit_qemu(ExitCode::Failed);
    };
    let regions: &'static bootloader_api::info::MemoryRegions = &boot_info.memory_regions;
    // SAFETY: the offset comes from the bootloader, which mapped all physical memory
    // there (BOOTLOADER_CONFIG asks for it); this is the only call.
    unsafe { memory::init(phys_offset, regions) };
    let mem = memory::summarize(regions);

    arch::cpu::features();
    arch::time::init();

    let acpi = match boot_info.rsdp_addr.into_option() {
        Some(rsdp) => match acpi::Acpi::new(rsdp) {
            Ok(a) => Some(a),
            Err(e) => {
                log::error!("boot: {e}");
                None
            }
        },
        None => {
            log::error!("boot: no RSDP from the bootloader");
            None
        }
    };
    let pci_functions = match &acpi {
        Some(a) => {
            let ecams = a.ecams();
            if ecams.is_empty() {
                log::warn!("pci: no MCFG table; PCIe enumeration skipped (use a q35 machine)");
            }
            pci::enumerate(&ecams)
        }
        None => 0,
    };
    Platform {
        acpi,
        memory: mem,
        pci_functions,
    }
}

/// Print the boot report: memory, CPU, time, ACPI, PCI.
pub fn report(p: &Platform) {
    let m = &p.memory;
    log::info!(
        "memory: {} regions, usable {} MiB in {} regions, bootloader {} KiB, reserved/firmware {} MiB, highest {:#x}",
        m.regions,
        m.usable_bytes >> 20,
        m.usable_regions,
        m.bootloader_bytes >> 10,
        m.firmware_bytes >> 20,
        m.highest
    );
    arch::cpu::features().report();
    let hz = arch::time::tsc_hz();
    let wall = arch::time::wall_clock_ns();
    log::info!(
        "time: TSC {}.{:03} MHz (calibrated against PIT), wall clock {}.{:09} s since epoch (RTC)",
        hz / 1_000_000,
        (hz / 1000) % 1000,
        wall / 1_000_000_000,
        wall % 1_000_000_000
    );
    match &p.acpi {
        Some(a) => a.report(),
        None => log::warn!("acpi: not available"),
    }
    pci::report();
}

/// Panic path shared by all binaries: report, then the failure exit.
pub fn panic_report(info: &core::panic::PanicInfo) -> ! {
    serial::force_write_fmt(format_args!("\n!!! PANIC: {info}\nexit: failure (panic)\n"));
    exit_qemu(ExitCode::Failed)
}

/// Which shared memory the run-time options ask for (`opt/cbdfw/region`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegionChoice {
    Auto,
    Cxl,
    Ivshmem,
}

/// Find, enable and map the shared region. On failure prints one clear line and
/// returns the distinct exit status to leave with.
pub fn shared_region(p: &Platform) -> Result<region::SharedRegion, ExitCode> {
    let choice = match fwcfg::option("region").as_deref() {
        None | Some("auto") => RegionChoice::Auto,
        Some("cxl") => RegionChoice::Cxl,
        Some("ivshmem") => RegionChoice::Ivshmem,
        Some(other) => {
            log::error!("region: unknown region option {other:?} (auto, cxl, ivshmem)");
            return Err(ExitCode::Failed);
        }
    };
    let min_mib: u64 = fwcfg::option("min-region-mib")
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let has_cedt = p.acpi.as_ref().and_then(|a| a.cedt_bytes()).is_some();
    let use_cxl = match choice {
        RegionChoice::Cxl => true,
        RegionChoice::Ivshmem => false,
        RegionChoice::Auto => has_cedt || pci::find(0x1af4, 0x1110).is_none(),
    };
    let region = if use_cxl {
        match cxl::bring_up(p.acpi.as_ref()) {
            Ok(m) => m.region,
            Err(e) => {
                log::error!("cxl: {e}");
                return Err(e.exit_code());
            }
        }
    } else {
        match cxl::ivshmem() {
            Some(Ok(r)) => r,
            Some(Err(e)) => {
                log::error!("ivshmem: cannot map BAR2: {e}");
                return Err(ExitCode::Failed);
            }
            None => {
                log::error!("ivshmem: no ivshmem-plain device (1af4:1110) with an assigned BAR2");
                return Err(ExitCode::NoCxl);
            }
        }
    };
    if region.len() < min_mib << 20 {
        log::error!(
            "region: {} MiB shared region is smaller than the {} MiB required",
            region.len() >> 20,
            min_mib
        );
        return Err(ExitCode::RegionTooSmall);
    }
    log::info!(
        "region: {:?} memory at {:#x}, {} MiB, write-back by {:?}",
        region.source,
        region.phys,
        region.len() >> 20,
        region.write_back_insn()
    );
    Ok(region)
}

/// Log `bytes` as a hex dump at trace level (captures for test fixtures).
pub fn trace_hexdump(what: &str, bytes: &[u8]) {
    if log::max_level() < log::LevelFilter::Trace {
        return;
    }
    log::trace!("hexdump {what} {} bytes", bytes.len());
    for (i, chunk) in bytes.chunks(32).enumerate() {
        let mut s: heapless::String<96> = heapless::String::new();
        for b in chunk {
            let _ = core::fmt::write(&mut s, format_args!("{b:02x}"));
        }
        log::trace!("hexdump {what} {:04x} {s}", i * 32);
    }
}
