//! Recovery on the audio side: Opus in-band FEC is on in the descriptions (`inband-fec=true`);
//! here its `packet-loss-percentage` follows the loss the receiver's RTCP reports show, read
//! from webrtcbin's `remote-inbound-rtp` statistics by the session task.
//!
//! (Video recovery needs no code here: NACK/RTX is `do-nack` on the video transceiver, and a
//! PLI/FIR from the receiver reaches the encoder as an upstream force-key-unit event.)

use gst::prelude::*;
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

/// The largest fraction lost (0..=1) that the receiver's RTCP reports give for any of our
/// streams, read from the RTP session inside webrtcbin. (webrtcbin 1.22's `get-stats` lists a
/// `remote-inbound-rtp` entry for one SSRC of the bundle only, the video or its RTX, where
/// retransmission hides the loss; Opus needs the audio stream's own loss.)
pub fn reported_fraction_lost(webrtcbin: &gst::Element) -> Option<f64> {
    let rtpbin = webrtcbin.downcast_ref::<gst::Bin>()?.by_name("rtpbin")?;
    let session: gst::Element = rtpbin.emit_by_name("get-session", &[&0u32]);
    let stats: gst::Structure = session.property("stats");
    let sources = stats.get::<glib::ValueArray>("source-stats").ok()?;
    fraction_lost(
        sources
            .iter()
            .filter_map(|v| v.get::<gst::Structure>().ok()),
    )
}

/// The largest `rb-fractionlost` in an rtpsession's `source-stats`: each remote source keeps
/// the last report block it sent about one of our SSRCs (`rb-ssrc`) only, so the audio
/// stream's loss shows when its block came last in the receiver's report; otherwise the
/// video's (after retransmission, usually 0) shows. Known limitation.
pub fn fraction_lost(sources: impl Iterator<Item = gst::Structure>) -> Option<f64> {
    sources
        .filter(|s| !s.get::<bool>("internal").unwrap_or(true))
        .filter(|s| s.get::<bool>("have-rb").unwrap_or(false))
        .filter_map(|s| s.get::<u32>("rb-fractionlost").ok())
        .map(|f| f as f64 / 256.0)
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
    fn fraction_lost_takes_remote_sources_with_reports() {
        crate::media::init().unwrap();
        let source = |internal: bool, have_rb: bool, lost: u32| {
            gst::Structure::builder("application/x-rtp-source-stats")
                .field("internal", internal)
                .field("have-rb", have_rb)
                .field("rb-fractionlost", lost)
                .build()
        };
        let sources = vec![
            source(false, true, 13),
            source(false, true, 0),
            source(true, true, 200),
            source(false, false, 100),
        ];
        assert_eq!(fraction_lost(sources.into_iter()), Some(13.0 / 256.0));
        assert_eq!(fraction_lost([source(false, false, 9)].into_iter()), None);
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
