//! Package resolution through apt: which version of each package goes into the image.

use std::collections::HashMap;
use std::process::{Command, Stdio};

use super::command::cmd_string;
use super::error::{GuestError, Result};
use super::{KERNEL_META, KERNEL_SUITE, TOOLS};

/// One package version as apt sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pkg {
    pub name: String,
    pub version: String,
    /// Depends + Pre-Depends: first alternative of each, with its `(= version)` if exact.
    pub depends: Vec<(String, Option<String>)>,
}

impl Pkg {
    pub fn id(&self) -> String {
        format!("{}={}", self.name, self.version)
    }
}

/// Parses a Debian dependency field: first alternative of each clause, arch qualifier removed,
/// exact `(= v)` versions kept.
pub fn parse_depends(field: &str) -> Vec<(String, Option<String>)> {
    field
        .split(',')
        .filter_map(|clause| {
            let alt = clause.split('|').next()?.trim();
            if alt.is_empty() {
                return None;
            }
            let (name, rest) = match alt.find([' ', '(']) {
                Some(i) => (&alt[..i], alt[i..].trim()),
                None => (alt, ""),
            };
            let name = name.split(':').next().unwrap_or(name).to_string();
            let exact = rest
                .strip_prefix('(')
                .and_then(|r| r.strip_suffix(')'))
                .and_then(|r| r.trim().strip_prefix('='))
                .map(|v| v.trim().to_string());
            Some((name, exact))
        })
        .collect()
}

/// Parses `apt-cache show` output (RFC822-like stanzas).
pub fn parse_apt_show(text: &str) -> Vec<Pkg> {
    let mut pkgs = Vec::new();
    for stanza in text.split("\n\n") {
        let mut fields: HashMap<&str, String> = HashMap::new();
        let mut last: Option<&str> = None;
        for line in stanza.lines() {
            if line.starts_with(' ') || line.starts_with('\t') {
                if let Some(v) = last.and_then(|k| fields.get_mut(k)) {
                    v.push_str(line);
                }
                continue;
            }
            if let Some((k, v)) = line.split_once(':') {
                fields.insert(k, v.trim().to_string());
                last = Some(k);
            }
        }
        let (Some(name), Some(version)) = (fields.get("Package"), fields.get("Version")) else {
            continue;
        };
        let mut depends = Vec::new();
        for k in ["Pre-Depends", "Depends"] {
            if let Some(v) = fields.get(k) {
                depends.extend(parse_depends(v));
            }
        }
        pkgs.push(Pkg {
            name: name.clone(),
            version: version.clone(),
            depends,
        });
    }
    pkgs
}

/// Resolves each spec (`name`, `name=version` or `name/suite`) to the version apt would install.
/// Specs that apt cannot resolve (virtual packages) are missing from the result.
pub(super) fn apt_resolve(specs: &[String]) -> Result<Vec<Pkg>> {
    if specs.is_empty() {
        return Ok(Vec::new());
    }
    let mut cmd = Command::new("apt-cache");
    cmd.arg("show").arg("--no-all-versions").args(specs);
    // apt-cache exits non-zero if *any* spec is unknown; keep what it did print.
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| GuestError::Command {
            what: "resolving package versions".into(),
            cmd: cmd_string(&cmd),
            detail: e.to_string(),
        })?;
    Ok(parse_apt_show(&String::from_utf8_lossy(&out.stdout)))
}

pub(super) fn apt_resolve_one(spec: &str) -> Result<Pkg> {
    let name = spec.split(['=', '/']).next().unwrap_or(spec);
    apt_resolve(&[spec.to_string()])?
        .into_iter()
        .find(|p| p.name == name)
        .ok_or_else(|| GuestError::Package {
            package: spec.to_string(),
            detail: "apt-cache knows no such package/version (run `apt-get update`; the kernel \
                     needs bookworm-backports in the apt sources)"
                .into(),
        })
}

/// The root packages: the kernel image (from [`KERNEL_SUITE`]), [`TOOLS`], and libc6 (ld.so).
pub fn resolve_root_packages() -> Result<Vec<Pkg>> {
    let meta = apt_resolve_one(&format!("{KERNEL_META}/{KERNEL_SUITE}"))?;
    let (kname, kver) = meta
        .depends
        .iter()
        .find(|(n, _)| n.starts_with("linux-image-"))
        .ok_or_else(|| GuestError::Package {
            package: meta.id(),
            detail: "metapackage does not depend on a linux-image-* package".into(),
        })?;
    let kspec = match kver {
        Some(v) => format!("{kname}={v}"),
        None => format!("{kname}/{KERNEL_SUITE}"),
    };
    let mut roots = vec![apt_resolve_one(&kspec)?];
    for name in TOOLS
        .iter()
        .map(|(n, _)| *n)
        .chain(std::iter::once("libc6"))
    {
        roots.push(apt_resolve_one(name)?);
    }
    Ok(roots)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depends_parsing() {
        let d = parse_depends(
            "libc6 (>= 2.34), linux-image-6.12.95+deb12-amd64 (= 6.12.95-1~bpo12+1), \
             initramfs-tools (>= 0.120) | linux-initramfs-tool, python3:any",
        );
        assert_eq!(
            d,
            vec![
                ("libc6".to_string(), None),
                (
                    "linux-image-6.12.95+deb12-amd64".to_string(),
                    Some("6.12.95-1~bpo12+1".to_string())
                ),
                ("initramfs-tools".to_string(), None),
                ("python3".to_string(), None),
            ]
        );
    }

    #[test]
    fn apt_show_parsing() {
        let text = "Package: ndctl\nVersion: 76.1-1\nDepends: libc6 (>= 2.34),\n libcxl1 (>= 75)\n\
                    Pre-Depends: init-system-helpers\nDescription: x\n more\n\n\
                    Package: fio\nVersion: 3.33-3\n";
        let p = parse_apt_show(text);
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].id(), "ndctl=76.1-1");
        let names: Vec<&str> = p[0].depends.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["init-system-helpers", "libc6", "libcxl1"]);
        assert!(p[1].depends.is_empty());
    }
}
