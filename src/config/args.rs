//! The streaming job's command line.

use std::net::IpAddr;
use std::path::PathBuf;

use super::{IcePolicy, TokenPlacement};

/// Command-line options of the streaming job; each one overrides the file.
#[derive(Debug, Default, Clone, clap::Args)]
pub struct StreamArgs {
    /// TOML configuration file (see README.md for every key).
    #[arg(short, long, env = "AIRSYNC_CONFIG")]
    pub config: Option<PathBuf>,
    /// Signalling server, ws:// or wss:// [config: signalling.url].
    #[arg(long)]
    pub url: Option<String>,
    /// Pipeline description file (gst-launch syntax) [config: pipeline.file].
    #[arg(short, long)]
    pub pipeline: Option<PathBuf>,
    /// Fixed session id instead of a fresh UUID per session [config: signalling.session_id].
    #[arg(long)]
    pub session_id: Option<String>,
    /// ICE servers as JSON in the browser's RTCIceServer shape, replacing the file's list, e.g.
    /// '[{"urls":"stun:stun.example.org:3478"},{"urls":["turn:t.example.org:3478?transport=udp"],"username":"u","credential":"p"}]'
    /// [config: ice.servers]. Prefer the config file (or a credential file) for credentials.
    #[arg(long, value_name = "JSON")]
    pub ice_servers: Option<String>,
    /// ICE transport policy: all candidates, or relay (TURN) only [config: ice.transport_policy].
    #[arg(long, value_enum)]
    pub ice_transport_policy: Option<IcePolicy>,
    /// Local address ICE may gather on; repeat for several. Pins ICE to these addresses only;
    /// needed on loopback-only hosts [config: ice.local_addresses].
    #[arg(long = "ice-address", value_name = "IP")]
    pub ice_addresses: Vec<IpAddr>,
    /// CA certificate (PEM) trusted for wss:// besides the system roots [config: signalling.ca_file].
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
    /// File holding the signalling auth token [config: signalling.token].
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// Where the token goes: an Authorization header or a `token` query parameter [config: signalling.token_in].
    #[arg(long, value_enum)]
    pub token_in: Option<TokenPlacement>,
    /// Log level or tracing filter, e.g. `info` or `airsync_streamer=debug` [config: log.level].
    #[arg(long, env = "AIRSYNC_LOG")]
    pub log_level: Option<String>,
    /// Lowest video bitrate congestion control may choose, kbit/s [config: video.min_bitrate].
    #[arg(long, value_name = "KBPS")]
    pub video_min_bitrate: Option<u32>,
    /// Video bitrate before the first estimate, kbit/s [config: video.start_bitrate].
    #[arg(long, value_name = "KBPS")]
    pub video_start_bitrate: Option<u32>,
    /// Highest video bitrate congestion control may choose, kbit/s [config: video.max_bitrate].
    #[arg(long, value_name = "KBPS")]
    pub video_max_bitrate: Option<u32>,
}
