//! Values that must never reach a log: TURN credentials, tokens, ICE passwords.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// A secret string. `Debug` and `Display` print `***`; the value is only reachable through
/// [`Secret::expose`], so every place that reads it is easy to find.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Where a secret comes from in the configuration file:
/// `key = "value"`, `key = { file = "/path" }` or `key = { systemd = "name" }`, the last
/// read from `$CREDENTIALS_DIRECTORY/name` (systemd's `LoadCredential=`).
#[derive(Clone, Deserialize)]
#[serde(untagged, deny_unknown_fields)]
pub enum SecretSource {
    Inline(String),
    File { file: PathBuf },
    Systemd { systemd: String },
}

impl fmt::Debug for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretSource::Inline(_) => f.write_str("Inline(***)"),
            SecretSource::File { file } => write!(f, "File({})", file.display()),
            SecretSource::Systemd { systemd } => write!(f, "Systemd({systemd})"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("cannot read secret file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "systemd credential `{0}` requested but $CREDENTIALS_DIRECTORY is not set \
         (add LoadCredential={0}:/path to the unit)"
    )]
    NoCredentialsDirectory(String),
    #[error("secret file {0} is empty")]
    Empty(PathBuf),
}

impl SecretSource {
    /// A relative `file` is read from `base` (the config file's folder), like other paths
    /// in the file.
    pub fn relative_to(self, base: &Path) -> SecretSource {
        match self {
            SecretSource::File { file } => SecretSource::File {
                file: base.join(file),
            },
            other => other,
        }
    }

    pub fn resolve(&self) -> Result<Secret, SecretError> {
        match self {
            SecretSource::Inline(v) => Ok(Secret::new(v.clone())),
            SecretSource::File { file } => read_secret_file(file),
            SecretSource::Systemd { systemd } => {
                let dir = std::env::var_os("CREDENTIALS_DIRECTORY")
                    .ok_or_else(|| SecretError::NoCredentialsDirectory(systemd.clone()))?;
                read_secret_file(&Path::new(&dir).join(systemd))
            }
        }
    }
}

fn read_secret_file(path: &Path) -> Result<Secret, SecretError> {
    let text = std::fs::read_to_string(path).map_err(|source| SecretError::Read {
        path: path.to_owned(),
        source,
    })?;
    // Files written by `echo` end in a newline that is not part of the secret.
    let value = text.trim_end_matches(['\r', '\n']);
    if value.is_empty() {
        return Err(SecretError::Empty(path.to_owned()));
    }
    Ok(Secret::new(value))
}

/// Replaces the value of every `a=ice-pwd:` line so an SDP can be logged.
pub fn mask_sdp(sdp: &str) -> String {
    sdp.split_inclusive('\n')
        .map(|line| {
            if line.starts_with("a=ice-pwd:") {
                let end = &line[line.trim_end_matches(['\r', '\n']).len()..];
                format!("a=ice-pwd:***{end}")
            } else {
                line.to_owned()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_never_prints() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?} {s}"), "*** ***");
        let src = SecretSource::Inline("hunter2".into());
        assert!(!format!("{src:?}").contains("hunter2"));
    }

    #[test]
    fn ice_pwd_is_masked() {
        let sdp = "v=0\r\na=ice-ufrag:wzpp\r\na=ice-pwd:xZEDDVo5V5rc3g9GTLBwV2e4\r\na=mid:0\r\n";
        let masked = mask_sdp(sdp);
        assert!(!masked.contains("xZEDD"));
        assert!(masked.contains("a=ice-pwd:***\r\n"));
        assert!(masked.contains("a=ice-ufrag:wzpp\r\n"));
    }

    #[test]
    fn file_and_systemd_sources() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("turn"), "s3cret\n").unwrap();
        let file = SecretSource::File {
            file: dir.path().join("turn"),
        };
        assert_eq!(file.resolve().unwrap().expose(), "s3cret");
        let missing = SecretSource::File {
            file: dir.path().join("nope"),
        };
        assert!(missing.resolve().unwrap_err().to_string().contains("nope"));
    }
}
