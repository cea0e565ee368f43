//! Recovery on the audio side: Opus in-band FEC is on in the descriptions (`inband-fec=true`);
//! here its `packet-loss-percentage` follows the loss the receiver's RTCP reports show, read
//! from the report blocks in webrtcbin's RTP session by the session task.
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

/// The report blocks (our SSRC, fraction lost 0..=1) the receiver's RTCP gave, read from the
/// RTP session inside webrtcbin. (webrtcbin 1.22's `get-stats` lists a `remote-inbound-rtp`
/// entry for one SSRC of the bundle only, the video or its RTX, where retransmission hides
/// the loss; Opus needs the audio stream's own loss.)
pub fn report_blocks(webrtcbin: &gst::Element) -> Vec<(u32, f64)> {
    let Some(rtpbin) = webrtcbin
        .downcast_ref::<gst::Bin>()
        .and_then(|b| b.by_name("rtpbin"))
    else {
        return Vec::new();
    };
    let session: gst::Element = rtpbin.emit_by_name("get-session", &[&0u32]);
    let stats: gst::Structure = session.property("stats");
    let Ok(sources) = stats.get::<glib::ValueArray>("source-stats") else {
        return Vec::new();
    };
    blocks_of(
        sources
            .iter()
            .filter_map(|v| v.get::<gst::Structure>().ok()),
    )
}

/// The `(rb-ssrc, rb-fractionlost)` of each remote source in an rtpsession's `source-stats`.
/// A remote source keeps only the last block it sent, about one of our SSRCs, so which of our
/// streams shows changes from read to read; [`AudioLoss`] remembers them per SSRC.
pub fn blocks_of(sources: impl Iterator<Item = gst::Structure>) -> Vec<(u32, f64)> {
    sources
        .filter(|s| !s.get::<bool>("internal").unwrap_or(true))
        .filter(|s| s.get::<bool>("have-rb").unwrap_or(false))
        .filter_map(|s| {
            let ssrc = s.get::<u32>("rb-ssrc").ok()?;
            let lost = s.get::<u32>("rb-fractionlost").ok()?;
            Some((ssrc, lost as f64 / 256.0))
        })
        .collect()
}

/// How long a stream's last reported loss counts when no newer report about it was read.
const REPORT_FRESH: std::time::Duration = std::time::Duration::from_secs(5);

/// The Opus encoder whose expected loss follows the reports.
pub struct AudioLoss {
    encoder: Option<gst::Element>,
    percent: i32,
    /// Our SSRC -> (last fraction lost reported for it, when it was read).
    reported: std::collections::HashMap<u32, (f64, std::time::Instant)>,
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
        AudioLoss {
            encoder,
            percent,
            reported: Default::default(),
        }
    }

    pub fn is_active(&self) -> bool {
        self.encoder.is_some()
    }

    pub fn percent(&self) -> i32 {
        self.percent
    }

    /// Takes the report blocks of one read; the expected loss follows the worst stream
    /// reported on in the last few seconds. Returns the new value when it changed.
    pub fn on_report_blocks(
        &mut self,
        blocks: &[(u32, f64)],
        now: std::time::Instant,
    ) -> Option<i32> {
        for &(ssrc, fraction) in blocks {
            self.reported.insert(ssrc, (fraction, now));
        }
        self.reported
            .retain(|_, (_, at)| now.duration_since(*at) <= REPORT_FRESH);
        let worst = self.reported.values().map(|(f, _)| *f).reduce(f64::max)?;
        self.on_fraction_lost(worst)
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
    use std::time::Duration;

    #[test]
    fn report_blocks_of_remote_sources() {
        crate::media::init().unwrap();
        let source = |internal: bool, have_rb: bool, ssrc: u32, lost: u32| {
            gst::Structure::builder("application/x-rtp-source-stats")
                .field("internal", internal)
                .field("have-rb", have_rb)
                .field("rb-ssrc", ssrc)
                .field("rb-fractionlost", lost)
                .build()
        };
        let sources = vec![
            source(false, true, 1, 13),
            source(true, true, 2, 200),
            source(false, false, 3, 100),
        ];
        assert_eq!(blocks_of(sources.into_iter()), vec![(1, 13.0 / 256.0)]);
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
        // The audio's block is remembered while reads show the video's.
        let t = std::time::Instant::now();
        assert_eq!(loss.on_report_blocks(&[(7, 0.10)], t), Some(10));
        assert_eq!(
            loss.on_report_blocks(&[(9, 0.0)], t + Duration::from_secs(1)),
            None
        );
        assert_eq!(
            loss.on_report_blocks(&[(9, 0.0)], t + Duration::from_secs(6)),
            Some(0)
        );
        let enc = pipeline.by_name("aenc").unwrap();
        assert_eq!(enc.property::<i32>("packet-loss-percentage"), 0);
    }
}
