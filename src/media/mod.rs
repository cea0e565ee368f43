//! Everything that touches GStreamer on the sending side: loading the description, setting
//! webrtcbin up, turning its signals into [`MediaEvent`]s and offering awaitable actions.

pub mod candidate;
pub mod congestion;
pub mod devices;
pub mod dtls;
pub mod gate;
pub mod ice;
pub mod liveness;
pub mod pipeline;
pub mod quantiser;
pub mod recovery;
pub mod reports;
pub mod retransmission;
pub mod sdp;
pub mod webrtc;

use std::path::PathBuf;
use std::sync::OnceLock;

pub use pipeline::PipelineGuard;
pub use webrtc::{MediaEvent, WebRtc};

#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    #[error("GStreamer could not be initialised: {0}")]
    Init(String),
    #[error("cannot read pipeline description {path}: {source}")]
    ReadDescription {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "pipeline description {path}: element `{element}` does not exist on this machine; \
         install {package}"
    )]
    MissingElement {
        element: String,
        package: &'static str,
        path: PathBuf,
    },
    #[error("pipeline description {path}{}: {message}", line.map(|l| format!(", line {l}")).unwrap_or_default())]
    ParseDescription {
        path: PathBuf,
        line: Option<usize>,
        message: String,
    },
    #[error("pipeline description {0} did not produce a pipeline (it holds a single element?)")]
    NotAPipeline(PathBuf),
    #[error(
        "no webrtcbin named `{name}` in {path}: add `webrtcbin name={name}` to the description"
    )]
    NoWebrtcbin { name: String, path: PathBuf },
    #[error("{device} not found ({reason}): {}", device.hint())]
    MissingDevice {
        device: Box<devices::Device>,
        reason: String,
    },
    #[error("{device} is gone ({reason}): retrying until it is back")]
    DeviceLost {
        device: Box<devices::Device>,
        reason: String,
    },
    #[error("the pipeline must feed webrtcbin {0}")]
    Layout(String),
    #[error("the pipeline could not start: {0}")]
    StateChange(String),
    #[error("webrtcbin {action} failed: {reason}")]
    Webrtc {
        action: &'static str,
        reason: String,
    },
    #[error(transparent)]
    Offer(#[from] sdp::OfferError),
}

impl MediaError {
    pub(crate) fn webrtc(action: &'static str, reason: impl ToString) -> Self {
        MediaError::Webrtc {
            action,
            reason: reason.to_string(),
        }
    }
}

/// Initialises GStreamer once per process.
pub fn init() -> Result<(), MediaError> {
    static INIT: OnceLock<Result<(), String>> = OnceLock::new();
    INIT.get_or_init(|| {
        gst::init().map_err(|e| e.to_string())?;
        // rtpgccbwe lives in gst-plugins-rs, linked into this binary rather than installed.
        congestion::register().map_err(|e| format!("registering rtpgccbwe: {e}"))
    })
    .clone()
    .map_err(MediaError::Init)
}
