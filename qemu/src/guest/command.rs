//! Running the external programs the builder uses (apt, dpkg-deb, depmod, xz, …).

use std::io;
use std::process::{Command, Output, Stdio};

use super::error::{GuestError, Result};

pub(super) fn cmd_string(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs `cmd`, capturing its output; a start failure or non-zero exit is an error naming `what`.
pub(super) fn run(cmd: &mut Command, what: &str) -> Result<Output> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| GuestError::Command {
            what: what.to_string(),
            cmd: cmd_string(cmd),
            detail: if e.kind() == io::ErrorKind::NotFound {
                format!("{e} (is the program installed? see docs/guest.md for the host packages)")
            } else {
                e.to_string()
            },
        })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(8).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        return Err(GuestError::Command {
            what: what.to_string(),
            cmd: cmd_string(cmd),
            detail: format!("{}; stderr: {}", out.status, tail.join(" | ")),
        });
    }
    Ok(out)
}
