//! Recovery on the audio side: Opus in-band FEC is on in the descriptions (`inband-fec=true`);
//! here its `packet-loss-percentage` follows the loss the receiver's RTCP reports show, read
//! from webrtcbin's `remote-inbound-rtp` statistics by the session task.
//!
//! (Video recovery needs no code here: NACK/RTX is `do-nack` on the video transceiver, and a
//! PLI/FIR from the receiver reaches the encoder as an upstream force-key-unit event.)

use gst::prelude::*;
use gst_webrtc::WebRTCStatsType;
use tracing::debug;

use crate::config::{AudioConfig, VideoConfig};

/// Asks the video encoder for a key frame at once, as a PLI would. Called when the peer
/// connection comes up: the encoder has been running since PLAYING, and without this the
/// receiver's first decodable frame waits for the next periodic IDR (up to `key-int-max`).
pub fn request_key_frame(pipeline: &gst::Pipeline, video: &VideoConfig) -> bool {
    let Some(src) = pipeline
        .by_name(&video.encoder)
        .and_then(|e| e.static_pad("src"))
    else {
        return false;
    };
    src.send_event(
        gst_video::UpstreamForceKeyUnitEvent::builder()
            .all_headers(true)
            .build(),
    )
}

/// The largest fraction lost (0..=1) any `remote-inbound-rtp` entry reports.
pub fn fraction_lost(stats: &gst::StructureRef) -> Option<f64> {
    stats
        .iter()
        .filter_map(|(_, v)| v.get::<gst::Structure>().ok())
        .filter(|s| {
            s.get::<WebRTCStatsType>("type").ok() == Some(WebRTCStatsType::RemoteInboundRtp)
        })
        .filter_map(|s| s.get::<f64>("fraction-lost").ok())
        .filter(|f| f.is_finite())
        .reduce(f64::max)
}

/// The Opus encoder whose expected loss follows the reports.
pub struct AudioLoss {
    encoder: Option<gst::Element>,
    percent: i32,
}

impl AudioLoss {
    pub fn new(pipeline: &gst::Pipeline, audio: &AudioConfig) -> Self {
        let encoder = pipeline
            .by_name(&audio.encoder)
            .filter(|e| e.has_property("packet-loss-percentage"));
        let percent = encoder
            .as_ref()
            .map(|e| e.property::<i32>("packet-loss-percentage"))
            .unwrap_or_default();
        AudioLoss { encoder, percent }
    }

    pub fn is_active(&self) -> bool {
        self.encoder.is_some()
    }

    pub fn percent(&self) -> i32 {
        self.percent
    }

    /// Sets the encoder's expected loss from the reported fraction; returns the new value.
    pub fn on_fraction_lost(&mut self, fraction: f64) -> Option<i32> {
        let encoder = self.encoder.as_ref()?;
        let percent = (fraction * 100.0).round().clamp(0.0, 100.0) as i32;
        if percent == self.percent {
            return None;
        }
        debug!(
            from = self.percent,
            to = percent,
            "opus packet-loss-percentage"
        );
        encoder.set_property("packet-loss-percentage", percent);
        self.percent = percent;
        Some(percent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fraction_lost_takes_remote_inbound_entries_only() {
        crate::media::init().unwrap();
        let remote = |f: f64| {
            gst::Structure::builder("application/x-webrtc-stats")
                .field("type", WebRTCStatsType::RemoteInboundRtp)
                .field("fraction-lost", f)
                .build()
        };
        let other = gst::Structure::builder("application/x-webrtc-stats")
            .field("type", WebRTCStatsType::OutboundRtp)
            .field("fraction-lost", 0.9f64)
            .build();
        let stats = gst::Structure::builder("application/x-webrtc-stats")
            .field("a", remote(0.02))
            .field("b", remote(0.05))
            .field("c", other)
            .build();
        assert_eq!(fraction_lost(&stats), Some(0.05));
        let none = gst::Structure::new_empty("application/x-webrtc-stats");
        assert_eq!(fraction_lost(&none), None);
    }

    #[test]
    fn opus_loss_follows_the_reports() {
        crate::media::init().unwrap();
        let pipeline = gst::parse::launch("audiotestsrc ! opusenc name=aenc ! fakesink")
            .unwrap()
            .downcast::<gst::Pipeline>()
            .unwrap();
        let mut loss = AudioLoss::new(&pipeline, &AudioConfig::default());
        assert!(loss.is_active());
        assert_eq!(loss.on_fraction_lost(0.051), Some(5));
        assert_eq!(loss.on_fraction_lost(0.049), None);
        let enc = pipeline.by_name("aenc").unwrap();
        assert_eq!(enc.property::<i32>("packet-loss-percentage"), 5);
    }
}
