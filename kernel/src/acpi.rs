//! ACPI: RSDP from the boot info, XSDT/RSDT via the `acpi` crate, MADT and MCFG
//! summaries, and the raw bytes of any table (the CEDT is parsed by `device::hw::cedt`).
//!
//! ACPI tables live in firmware-reserved RAM below 4 GiB, which the bootloader's
//! physical map covers, so the handler maps nothing: it offsets.

use acpi::sdt::{SdtHeader, Signature};
use acpi::{AcpiHandler, AcpiTable, AcpiTables, PhysicalMapping};
use core::ptr::NonNull;
use heapless::Vec;

#[derive(Clone, Copy, Debug)]
pub struct Handler;

impl AcpiHandler for Handler {
    unsafe fn map_physical_region<T>(&self, phys: usize, size: usize) -> PhysicalMapping<Self, T> {
        let virt = crate::memory::phys_offset() as usize + phys;
        // SAFETY: `virt` is inside the bootloader's physical-memory map (ACPI tables
        // are below 4 GiB) and non-null; the caller vouches that a `T` lives there.
        unsafe {
            PhysicalMapping::new(
                phys,
                NonNull::new_unchecked(virt as *mut T),
                size,
                size,
                *self,
            )
        }
    }

    fn unmap_physical_region<T>(_region: &PhysicalMapping<Self, T>) {}
}

/// A table header the CEDT can be found with through `find_table`.
#[repr(C, packed)]
struct Cedt {
    header: SdtHeader,
}

// SAFETY: `Cedt` is exactly the common header, which every CEDT starts with.
unsafe impl AcpiTable for Cedt {
    const SIGNATURE: Signature = Signature::CEDT;
    fn header(&self) -> &SdtHeader {
        &self.header
    }
}

/// One ECAM window from the MCFG.
#[derive(Clone, Copy, Debug)]
pub struct Ecam {
    pub base: u64,
    pub segment: u16,
    pub bus_start: u8,
    pub bus_end: u8,
}

/// What the kernel keeps from ACPI.
pub struct Acpi {
    tables: AcpiTables<Handler>,
    pub revision: u8,
}

/// Error opening ACPI.
#[derive(Debug)]
pub struct AcpiError(pub acpi::AcpiError);

impl core::fmt::Display for AcpiError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "ACPI tables unusable: {:?}", self.0)
    }
}

impl Acpi {
    /// Open the tables from the RSDP address the bootloader found.
    pub fn new(rsdp: u64) -> Result<Acpi, AcpiError> {
        // SAFETY: the bootloader reports the firmware's RSDP address.
        let tables = unsafe { AcpiTables::from_rsdp(Handler, rsdp as usize) }.map_err(AcpiError)?;
        Ok(Acpi {
            revision: tables.revision(),
            tables,
        })
    }

    /// Log every table: signature, length, revision, OEM.
    pub fn report(&self) {
        let mut n = 0;
        let mut line: heapless::String<160> = heapless::String::new();
        for h in self.tables.headers() {
            n += 1;
            if line.len() + 12 > line.capacity() {
                log::info!("acpi:   {line}");
                line.clear();
            }
            let len = h.length;
            let _ = core::fmt::write(
                &mut line,
                format_args!("{}({}) ", h.signature.as_str(), len),
            );
        }
        log::info!("acpi: RSDP revision {}, {n} tables:", self.revision);
        if !line.is_empty() {
            log::info!("acpi:   {line}");
        }
        if let Ok(madt) = self.tables.find_table::<acpi::madt::Madt>() {
            let (mut cpus, mut ioapics, mut overrides) = (0, 0, 0);
            for e in madt.get().entries() {
                match e {
                    acpi::madt::MadtEntry::LocalApic(_) | acpi::madt::MadtEntry::LocalX2Apic(_) => {
                        cpus += 1
                    }
                    acpi::madt::MadtEntry::IoApic(_) => ioapics += 1,
                    acpi::madt::MadtEntry::InterruptSourceOverride(_) => overrides += 1,
                    _ => {}
                }
            }
            let lapic = madt.get().local_apic_address;
            log::info!(
                "acpi: MADT local APIC {lapic:#x}, {cpus} CPU(s), {ioapics} I/O APIC(s), {overrides} IRQ override(s)"
            );
        }
        for e in self.ecams() {
            log::info!(
                "acpi: MCFG ECAM {:#x} segment {} buses {:#x}-{:#x}",
                e.base,
                e.segment,
                e.bus_start,
                e.bus_end
            );
        }
    }

    /// ECAM windows from the MCFG (empty if there is none, e.g. i440fx).
    pub fn ecams(&self) -> Vec<Ecam, 4> {
        let mut out = Vec::new();
        if let Ok(mcfg) = self.tables.find_table::<acpi::mcfg::Mcfg>() {
            for e in mcfg.get().entries() {
                let _ = out.push(Ecam {
                    base: e.base_address,
                    segment: e.pci_segment_group,
                    bus_start: e.bus_number_start,
                    bus_end: e.bus_number_end,
                });
            }
        }
        out
    }

    /// Raw bytes of the CEDT, if the firmware provides one.
    pub fn cedt_bytes(&self) -> Option<&'static [u8]> {
        let m = self.tables.find_table::<Cedt>().ok()?;
        let len = m.get().header.length as usize;
        let virt = crate::memory::phys_offset() as usize + m.physical_start();
        // SAFETY: the table lies in the physical map, is `len` bytes long (validated
        // by `find_table`), and firmware tables are never modified at run time.
        Some(unsafe { core::slice::from_raw_parts(virt as *const u8, len) })
    }
}
