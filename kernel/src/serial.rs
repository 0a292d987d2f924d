//! COM1 serial console and the `log` backend.
//!
//! Everything the device prints goes through here: one line per record, formatted
//! `[LEVEL] message`. The level is set at run time from QEMU's fw_cfg (see
//! [`crate::fwcfg`]); the default is `info`.

use core::fmt::{self, Write};
use log::{LevelFilter, Metadata, Record};
use spin::Mutex;
use uart_16550::backend::PioBackend;
use uart_16550::{Config, Uart16550Tty};

static COM1: Mutex<Option<Uart16550Tty<PioBackend>>> = Mutex::new(None);

/// Initialise COM1 (I/O port 0x3f8). Safe to call more than once.
pub fn init() {
    let mut port = COM1.lock();
    if port.is_none() {
        // SAFETY: 0x3f8 is the architectural COM1 base on the PC platform QEMU
        // emulates; nothing else in the kernel touches these ports.
        let tty = unsafe { Uart16550Tty::new_port(0x3f8, Config::default()) };
        *port = tty.ok();
    }
}

/// Write formatted text to COM1 with interrupts masked (no interleaving).
pub fn write_fmt(args: fmt::Arguments) {
    x86_64::instructions::interrupts::without_interrupts(|| {
        if let Some(port) = COM1.lock().as_mut() {
            let _ = port.write_fmt(args);
        }
    });
}

/// Write to COM1 even if the lock is held (used by fault and panic paths,
/// which may interrupt a holder of the lock).
pub fn force_write_fmt(args: fmt::Arguments) {
    // SAFETY: on the fatal path the kernel never returns to the interrupted
    // code, so breaking the lock cannot corrupt a later user of the port.
    unsafe { COM1.force_unlock() };
    write_fmt(args);
}

/// A byte typed on the console, if any (non-blocking).
pub fn try_read_byte() -> Option<u8> {
    x86_64::instructions::interrupts::without_interrupts(|| {
        COM1.lock().as_mut()?.inner_mut().try_receive_byte().ok()
    })
}

/// Accumulates console input into lines (the device's tiny command console).
#[derive(Default)]
pub struct LineReader {
    buf: heapless::String<64>,
}

impl LineReader {
    /// Poll the UART; returns a complete line (without the newline) when one arrived.
    pub fn poll(&mut self) -> Option<heapless::String<64>> {
        while let Some(b) = try_read_byte() {
            match b {
                b'\r' | b'\n' if !self.buf.is_empty() => {
                    return Some(core::mem::take(&mut self.buf));
                }
                b if b.is_ascii_graphic() || b == b' ' => {
                    let _ = self.buf.push(b as char);
                }
                _ => {}
            }
        }
        None
    }
}

#[macro_export]
macro_rules! serial_print {
    ($($arg:tt)*) => { $crate::serial::write_fmt(format_args!($($arg)*)) };
}

#[macro_export]
macro_rules! serial_println {
    () => { $crate::serial_print!("\n") };
    ($($arg:tt)*) => { $crate::serial::write_fmt(format_args!("{}\n", format_args!($($arg)*))) };
}

struct SerialLogger;

impl log::Log for SerialLogger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record) {
        if self.enabled(record.metadata()) {
            let lvl = match record.level() {
                log::Level::Error => "ERROR",
                log::Level::Warn => " WARN",
                log::Level::Info => " INFO",
                log::Level::Debug => "DEBUG",
                log::Level::Trace => "TRACE",
            };
            write_fmt(format_args!("[{lvl}] {}\n", record.args()));
        }
    }

    fn flush(&self) {}
}

static LOGGER: SerialLogger = SerialLogger;

/// Install the serial logger with the given maximum level.
pub fn init_logger(level: LevelFilter) {
    init();
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(level);
}

/// Parse a level name (`off`, `error`, `warn`, `info`, `debug`, `trace`).
pub fn parse_level(s: &str) -> Option<LevelFilter> {
    let s = s.trim();
    [
        ("off", LevelFilter::Off),
        ("error", LevelFilter::Error),
        ("warn", LevelFilter::Warn),
        ("info", LevelFilter::Info),
        ("debug", LevelFilter::Debug),
        ("trace", LevelFilter::Trace),
    ]
    .into_iter()
    .find(|(n, _)| n.eq_ignore_ascii_case(s))
    .map(|(_, l)| l)
}
