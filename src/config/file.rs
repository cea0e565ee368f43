//! The TOML file as written: every key optional, unknown keys refused.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::ConfigError;
use crate::secret::SecretSource;

/// The configuration file as written. Every table denies unknown keys so typos fail at start.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FileConfig {
    pub signalling: SignallingFile,
    pub pipeline: PipelineFile,
    pub ice: IceFile,
    pub reconnect: ReconnectFile,
    pub log: LogFile,
    pub video: VideoFile,
    pub audio: AudioFile,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SignallingFile {
    pub url: Option<String>,
    pub session_id: Option<String>,
    pub token: Option<SecretSource>,
    /// `header` (default, `Authorization: Bearer …`) or `query` (`?token=…`).
    pub token_in: Option<TokenPlacement>,
    pub ca_file: Option<PathBuf>,
    #[serde(with = "humantime_serde")]
    pub answer_timeout: Option<Duration>,
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Option<Duration>,
    #[serde(with = "humantime_serde")]
    pub ping_interval: Option<Duration>,
    pub max_message_size: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum TokenPlacement {
    Header,
    Query,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineFile {
    pub file: Option<PathBuf>,
    pub webrtcbin: Option<String>,
    pub data_channel: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IceFile {
    pub servers: Vec<IceServerFile>,
    pub transport_policy: Option<IcePolicy>,
    pub local_addresses: Vec<IpAddr>,
    #[serde(with = "humantime_serde")]
    pub disconnected_timeout: Option<Duration>,
    #[serde(with = "humantime_serde")]
    pub silence_timeout: Option<Duration>,
}

/// One ICE server in the shape browsers use (`RTCIceServer`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IceServerFile {
    pub urls: OneOrMany,
    pub username: Option<String>,
    pub credential: Option<SecretSource>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub(super) fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum IcePolicy {
    #[default]
    All,
    Relay,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReconnectFile {
    #[serde(with = "humantime_serde")]
    pub initial: Option<Duration>,
    #[serde(with = "humantime_serde")]
    pub max: Option<Duration>,
    #[serde(with = "humantime_serde")]
    pub reset_after: Option<Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogFile {
    pub level: Option<String>,
}

/// Congestion control of the video encoder. Bitrates in kbit/s.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VideoFile {
    pub encoder: Option<String>,
    pub min_bitrate: Option<u32>,
    pub start_bitrate: Option<u32>,
    pub max_bitrate: Option<u32>,
    pub congestion_control: Option<bool>,
    pub scale_caps: Option<String>,
    pub step_down_below: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AudioFile {
    pub encoder: Option<String>,
}

impl FileConfig {
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml(&text, path)
    }

    pub fn from_toml(text: &str, path: &Path) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })
    }
}
