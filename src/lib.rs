//! airsync-streamer: a GStreamer `webrtcbin` bridged to a WebSocket signalling server.

pub mod config;
pub mod huge_pages;
pub mod logging;
pub mod media;
pub mod metrics;
pub mod protocol;
pub mod secret;
pub mod server;
pub mod session;
pub mod signalling;
pub mod supervisor;
pub mod systemd;
