//! airsync-streamer: a GStreamer `webrtcbin` bridged to a WebSocket signalling server.

pub mod config;
pub mod media;
pub mod protocol;
pub mod secret;
pub mod session;
pub mod signalling;
pub mod supervisor;
