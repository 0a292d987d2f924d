//! The guest builder's errors: each says which package, command or file failed.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use super::MAX_DEP_DEPTH;

/// Errors of the guest image tooling; each says which package, command or file failed.
#[derive(Debug)]
pub enum GuestError {
    /// An external command could not be started or exited unsuccessfully.
    Command {
        what: String,
        cmd: String,
        detail: String,
    },
    /// A file system operation failed.
    Io { path: PathBuf, source: io::Error },
    /// A package could not be resolved, downloaded or unpacked, or lacks an expected file.
    Package { package: String, detail: String },
    /// A shared library needed by a binary was not found in its package's dependencies.
    MissingLibrary {
        binary: String,
        soname: String,
        package: String,
    },
    /// A kernel module could not be found or read.
    Module { module: String, detail: String },
    /// A file that should be ELF could not be parsed.
    Elf { path: PathBuf, detail: String },
    /// Bad input (a layer path, an input data file).
    Input { detail: String },
}

impl fmt::Display for GuestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GuestError::Command { what, cmd, detail } => {
                write!(f, "{what}: command `{cmd}` failed: {detail}")
            }
            GuestError::Io { path, source } => write!(f, "{}: {source}", path.display()),
            GuestError::Package { package, detail } => write!(f, "package {package}: {detail}"),
            GuestError::MissingLibrary {
                binary,
                soname,
                package,
            } => write!(
                f,
                "{binary} (package {package}) needs {soname}, which is in none of the packages \
                 it depends on (searched {MAX_DEP_DEPTH} levels)"
            ),
            GuestError::Module { module, detail } => write!(f, "kernel module {module}: {detail}"),
            GuestError::Elf { path, detail } => write!(f, "{}: bad ELF: {detail}", path.display()),
            GuestError::Input { detail } => write!(f, "{detail}"),
        }
    }
}

impl std::error::Error for GuestError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            GuestError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

pub type Result<T> = std::result::Result<T, GuestError>;

pub(super) fn io_err(path: &Path) -> impl FnOnce(io::Error) -> GuestError + '_ {
    move |source| GuestError::Io {
        path: path.to_path_buf(),
        source,
    }
}
