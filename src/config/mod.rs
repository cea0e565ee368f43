//! TOML file plus command line to one validated [`Config`]. The command line wins. The file's
//! shape is in `file.rs`, the command line's in `args.rs`; this module merges and checks them.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use url::Url;

use crate::secret::{Secret, SecretError, SecretSource};

mod args;
mod file;

pub use args::StreamArgs;
pub use file::*;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("`{key}`: {message}")]
    Invalid { key: String, message: String },
    #[error("`{key}`: {source}")]
    Secret { key: String, source: SecretError },
}

fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        message: message.into(),
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub signalling: SignallingConfig,
    pub pipeline: PipelineConfig,
    pub ice: IceConfig,
    pub reconnect: ReconnectConfig,
    pub log_level: String,
    pub video: VideoConfig,
    pub audio: AudioConfig,
}

/// How congestion control drives the video encoder. Bitrates in kbit/s.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VideoConfig {
    /// Name of the video encoder element in the description (its `bitrate` is in kbit/s).
    pub encoder: String,
    pub min_bitrate: u32,
    pub start_bitrate: u32,
    pub max_bitrate: u32,
    /// Attach `rtpgccbwe` and follow its estimate; off keeps the description's bitrate.
    pub congestion_control: bool,
    /// Name of a capsfilter after videoscale/videorate whose caps are stepped down (half size,
    /// then half frame rate) when the bitrate is low; ignored when the element is absent.
    pub scale_caps: String,
    /// Below this video bitrate the picture is stepped down one level (and below half of it,
    /// another); it steps back up with hysteresis.
    pub step_down_below: u32,
}

impl Default for VideoConfig {
    fn default() -> Self {
        VideoConfig {
            encoder: "venc".into(),
            min_bitrate: 150,
            start_bitrate: 1500,
            max_bitrate: 4000,
            congestion_control: true,
            scale_caps: "vcaps".into(),
            step_down_below: 300,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioConfig {
    /// Name of the opusenc in the description, whose `packet-loss-percentage` follows RTCP.
    pub encoder: String,
}

impl Default for AudioConfig {
    fn default() -> Self {
        AudioConfig {
            encoder: "aenc".into(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct SignallingConfig {
    pub url: Url,
    pub session_id: Option<String>,
    pub token: Option<Secret>,
    pub token_in: TokenPlacement,
    pub ca_file: Option<PathBuf>,
    pub answer_timeout: Duration,
    pub connect_timeout: Duration,
    pub ping_interval: Duration,
    pub max_message_size: usize,
}

#[derive(Debug, Clone)]
pub struct PipelineConfig {
    pub file: PathBuf,
    pub webrtcbin: String,
    pub data_channel: String,
}

#[derive(Debug, Clone, Default)]
pub struct IceConfig {
    pub servers: Vec<IceServer>,
    pub transport_policy: IcePolicy,
    pub local_addresses: Vec<IpAddr>,
    /// How long the connection may stay `disconnected` before the session restarts.
    pub disconnected_timeout: Duration,
    /// A connected peer unheard (no RTCP) for this long counts as disconnected; zero turns
    /// the check off.
    pub silence_timeout: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IceServer {
    pub urls: Vec<Url>,
    pub username: Option<String>,
    pub credential: Option<Secret>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReconnectConfig {
    pub initial: Duration,
    pub max: Duration,
    pub reset_after: Duration,
}

impl Default for ReconnectConfig {
    fn default() -> Self {
        ReconnectConfig {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(30),
            reset_after: Duration::from_secs(60),
        }
    }
}

pub const DEFAULT_PIPELINE: &str = "pipelines/camera.pipeline";
pub const DEFAULT_WEBRTCBIN: &str = "webrtc";
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 1024 * 1024;

impl Config {
    /// Reads the file named by `--config` (if any), applies the command line, validates.
    pub fn load(args: &StreamArgs) -> Result<Config, ConfigError> {
        let (file, base) = match &args.config {
            Some(path) => (
                FileConfig::from_file(path)?,
                path.parent().map(Path::to_owned).unwrap_or_default(),
            ),
            None => (FileConfig::default(), PathBuf::new()),
        };
        Config::build(file, &base, args)
    }

    /// `base` is the config file's folder: relative paths in the file are read from there.
    pub fn build(file: FileConfig, base: &Path, args: &StreamArgs) -> Result<Config, ConfigError> {
        let url_text = args.url.clone().or(file.signalling.url).ok_or_else(|| {
            invalid(
                "signalling.url",
                "no signalling server given: set it in the config file or pass --url ws://host:port/path",
            )
        })?;
        let url = parse_signalling_url(&url_text)?;

        let token = match (&args.token_file, file.signalling.token) {
            (Some(path), _) => Some(SecretSource::File { file: path.clone() }),
            (None, t) => t.map(|t| t.relative_to(base)),
        }
        .map(|s| s.resolve())
        .transpose()
        .map_err(|source| ConfigError::Secret {
            key: "signalling.token".into(),
            source,
        })?;

        let ca_file = args
            .ca_file
            .clone()
            .or_else(|| file.signalling.ca_file.map(|p| base.join(p)));
        if let Some(ca) = &ca_file {
            if !ca.is_file() {
                return Err(invalid(
                    "signalling.ca_file",
                    format!("{} does not exist", ca.display()),
                ));
            }
        }

        let pipeline_file = match (&args.pipeline, file.pipeline.file) {
            (Some(p), _) => p.clone(),
            (None, Some(p)) => base.join(p),
            (None, None) => PathBuf::from(DEFAULT_PIPELINE),
        };
        if !pipeline_file.is_file() {
            return Err(invalid(
                "pipeline.file",
                format!(
                    "pipeline description {} does not exist",
                    pipeline_file.display()
                ),
            ));
        }

        let servers = match &args.ice_servers {
            Some(json) => serde_json::from_str::<Vec<IceServerFile>>(json).map_err(|e| {
                invalid(
                    "--ice-servers",
                    format!("not a JSON list of ICE servers: {e}"),
                )
            })?,
            None => file
                .ice
                .servers
                .into_iter()
                .map(|mut s| {
                    s.credential = s.credential.map(|c| c.relative_to(base));
                    s
                })
                .collect(),
        };
        let servers = servers
            .into_iter()
            .enumerate()
            .map(|(i, s)| validate_ice_server(i, s))
            .collect::<Result<Vec<_>, _>>()?;

        let transport_policy = args
            .ice_transport_policy
            .or(file.ice.transport_policy)
            .unwrap_or_default();
        if transport_policy == IcePolicy::Relay
            && !servers
                .iter()
                .flat_map(|s| &s.urls)
                .any(|u| u.scheme().starts_with("turn"))
        {
            return Err(invalid(
                "ice.transport_policy",
                "`relay` needs at least one turn: or turns: server in ice.servers",
            ));
        }

        let local_addresses = if args.ice_addresses.is_empty() {
            file.ice.local_addresses
        } else {
            args.ice_addresses.clone()
        };

        let defaults = ReconnectConfig::default();
        let reconnect = ReconnectConfig {
            initial: file.reconnect.initial.unwrap_or(defaults.initial),
            max: file.reconnect.max.unwrap_or(defaults.max),
            reset_after: file.reconnect.reset_after.unwrap_or(defaults.reset_after),
        };
        if reconnect.initial.is_zero() || reconnect.max < reconnect.initial {
            return Err(invalid(
                "reconnect",
                "need 0 < reconnect.initial <= reconnect.max",
            ));
        }

        let max_message_size = file
            .signalling
            .max_message_size
            .unwrap_or(DEFAULT_MAX_MESSAGE_SIZE);
        if max_message_size < 16 * 1024 {
            return Err(invalid(
                "signalling.max_message_size",
                "must be at least 16384 bytes: an SDP offer does not fit in less",
            ));
        }

        let video = build_video(file.video, args)?;

        Ok(Config {
            signalling: SignallingConfig {
                url,
                session_id: args.session_id.clone().or(file.signalling.session_id),
                token,
                token_in: args
                    .token_in
                    .or(file.signalling.token_in)
                    .unwrap_or(TokenPlacement::Header),
                ca_file,
                answer_timeout: file
                    .signalling
                    .answer_timeout
                    .unwrap_or(Duration::from_secs(15)),
                connect_timeout: file
                    .signalling
                    .connect_timeout
                    .unwrap_or(Duration::from_secs(10)),
                ping_interval: file
                    .signalling
                    .ping_interval
                    .unwrap_or(Duration::from_secs(10)),
                max_message_size,
            },
            pipeline: PipelineConfig {
                file: pipeline_file,
                webrtcbin: file
                    .pipeline
                    .webrtcbin
                    .unwrap_or_else(|| DEFAULT_WEBRTCBIN.into()),
                data_channel: file
                    .pipeline
                    .data_channel
                    .unwrap_or_else(|| "airsync".into()),
            },
            ice: IceConfig {
                servers,
                transport_policy,
                local_addresses,
                disconnected_timeout: file
                    .ice
                    .disconnected_timeout
                    .unwrap_or(Duration::from_secs(10)),
                silence_timeout: file.ice.silence_timeout.unwrap_or(Duration::from_secs(10)),
            },
            reconnect,
            log_level: args
                .log_level
                .clone()
                .or(file.log.level)
                .unwrap_or_else(|| "info".into()),
            video,
            audio: AudioConfig {
                encoder: file
                    .audio
                    .encoder
                    .unwrap_or_else(|| AudioConfig::default().encoder),
            },
        })
    }
}

fn build_video(file: VideoFile, args: &StreamArgs) -> Result<VideoConfig, ConfigError> {
    let d = VideoConfig::default();
    let min_bitrate = args
        .video_min_bitrate
        .or(file.min_bitrate)
        .unwrap_or(d.min_bitrate);
    let max_bitrate = args
        .video_max_bitrate
        .or(file.max_bitrate)
        .unwrap_or(d.max_bitrate);
    let start_bitrate = args
        .video_start_bitrate
        .or(file.start_bitrate)
        .unwrap_or(d.start_bitrate)
        .clamp(min_bitrate.min(max_bitrate), max_bitrate.max(min_bitrate));
    if min_bitrate == 0 || min_bitrate > max_bitrate {
        return Err(invalid(
            "video",
            format!(
                "need 0 < video.min_bitrate ({min_bitrate}) <= video.max_bitrate ({max_bitrate}), in kbit/s"
            ),
        ));
    }
    if max_bitrate > 100_000 {
        return Err(invalid(
            "video.max_bitrate",
            format!("{max_bitrate} kbit/s is over 100 Mbit/s: the unit is kbit/s"),
        ));
    }
    Ok(VideoConfig {
        encoder: file.encoder.unwrap_or(d.encoder),
        min_bitrate,
        start_bitrate,
        max_bitrate,
        congestion_control: file.congestion_control.unwrap_or(d.congestion_control),
        scale_caps: file.scale_caps.unwrap_or(d.scale_caps),
        step_down_below: file.step_down_below.unwrap_or(d.step_down_below),
    })
}

fn parse_signalling_url(text: &str) -> Result<Url, ConfigError> {
    let url = Url::parse(text).map_err(|e| {
        invalid(
            "signalling.url",
            format!("`{text}` is not a URL ({e}); expected ws://host:port/path or wss://…"),
        )
    })?;
    match url.scheme() {
        "ws" | "wss" if url.host().is_some() => Ok(url),
        "ws" | "wss" => Err(invalid("signalling.url", format!("`{text}` has no host"))),
        other => Err(invalid(
            "signalling.url",
            format!("scheme `{other}` is not supported; use ws:// or wss://"),
        )),
    }
}

fn validate_ice_server(index: usize, s: IceServerFile) -> Result<IceServer, ConfigError> {
    let key = format!("ice.servers[{index}]");
    let credential = s
        .credential
        .map(|c| c.resolve())
        .transpose()
        .map_err(|source| ConfigError::Secret {
            key: format!("{key}.credential"),
            source,
        })?;
    let urls = s.urls.into_vec();
    if urls.is_empty() {
        return Err(invalid(format!("{key}.urls"), "no URL given"));
    }
    let mut parsed = Vec::new();
    for u in urls {
        let url = Url::parse(&u).map_err(|e| {
            invalid(
                format!("{key}.urls"),
                format!("`{u}` is not an ICE server URL ({e})"),
            )
        })?;
        match url.scheme() {
            "stun" | "stuns" => {}
            "turn" | "turns" => {
                if s.username.is_none() || credential.is_none() {
                    return Err(invalid(
                        key.clone(),
                        format!("`{u}` is a TURN server: `username` and `credential` are required"),
                    ));
                }
            }
            other => {
                return Err(invalid(
                    format!("{key}.urls"),
                    format!("scheme `{other}` in `{u}`: expected stun:, stuns:, turn: or turns:"),
                ))
            }
        }
        // A cannot-be-a-base URL like `stun:host:3478` keeps host:port in its path.
        if url.path().is_empty() && url.host().is_none() {
            return Err(invalid(format!("{key}.urls"), format!("`{u}` has no host")));
        }
        parsed.push(url);
    }
    Ok(IceServer {
        urls: parsed,
        username: s.username,
        credential,
    })
}

#[cfg(test)]
mod tests;
