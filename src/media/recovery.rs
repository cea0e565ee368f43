//! Recovery on the audio side: Opus in-band FEC is on in the descriptions (`inband-fec=true`);
//! here its `packet-loss-percentage` follows the loss the receiver's RTCP reports show about
//! the audio stream, read from each RTCP packet webrtcbin's RTP session receives.
//!
//! On the video side NACK/RTX is `do-nack` on the video transceiver (its sender is set up in
//! `retransmission.rs`), and a PLI/FIR from the receiver reaches the encoder as an upstream
//! force-key-unit event, which is timed here.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use gst::prelude::*;
use tracing::debug;

use super::webrtc::{EventSender, MediaEvent};
use crate::config::{AudioConfig, VideoConfig};

/// The video encoder named in `video`, if the pipeline has one.
pub fn video_encoder(pipeline: &gst::Pipeline, video: &VideoConfig) -> Option<gst::Element> {
    pipeline.by_name(&video.encoder)
}

/// Asks `encoder` for a key frame at once, as a PLI would (an upstream force-key-unit event
/// on its source pad, which GstVideoEncoder only queues for its next frame, so this never
/// waits). Called when the peer connection comes up (`gate.rs`): nothing sent before reached
/// the peer, and without this its first decodable frame would wait for the next periodic IDR
/// (up to `key-int-max`).
pub fn request_key_frame(encoder: &gst::Element) -> bool {
    let Some(src) = encoder.static_pad("src") else {
        return false;
    };
    src.send_event(
        gst_video::UpstreamForceKeyUnitEvent::builder()
            .all_headers(true)
            .build(),
    )
}

/// How the video encoder answered one key frame request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyFrameAnswer {
    /// From the request reaching the encoder to the key frame leaving it: the wait for the
    /// next captured frame, then that frame's encoding.
    pub after: Duration,
    /// Delta frames the encoder put out between the request and the key frame. 0 or 1 when
    /// the key frame is the first frame the encoder began after the request (1: a frame was
    /// already being encoded when the request came).
    pub frames_before: u32,
}

/// The request a key frame has not answered yet.
struct Pending {
    at: Instant,
    frames_before: u32,
}

/// Times the video encoder's answers to key frame requests: each force-key-unit event reaching
/// its source pad (the RTP session makes one of each PLI/FIR) is answered by the next key
/// frame leaving it. Each answer goes to `tx` as [`MediaEvent::KeyFrameAnswered`]. Returns
/// false when the description has no such encoder.
pub fn time_key_frame_answers(
    pipeline: &gst::Pipeline,
    video: &VideoConfig,
    tx: &EventSender,
) -> bool {
    let Some(src) = video_encoder(pipeline, video).and_then(|e| e.static_pad("src")) else {
        return false;
    };
    let pending: Mutex<Option<Pending>> = Default::default();
    let tx = tx.clone();
    src.add_probe(
        gst::PadProbeType::EVENT_UPSTREAM | gst::PadProbeType::BUFFER,
        move |_, info| {
            match &info.data {
                Some(gst::PadProbeData::Event(event))
                    if gst_video::ForceKeyUnitEvent::is(event) =>
                {
                    // The first request counts: later ones before the key frame share it.
                    pending.lock().unwrap().get_or_insert_with(|| Pending {
                        at: Instant::now(),
                        frames_before: 0,
                    });
                }
                Some(gst::PadProbeData::Buffer(buffer)) => {
                    let mut pending = pending.lock().unwrap();
                    if buffer.flags().contains(gst::BufferFlags::DELTA_UNIT) {
                        if let Some(request) = pending.as_mut() {
                            request.frames_before += 1;
                        }
                    } else if let Some(request) = pending.take() {
                        let _ = tx.send(MediaEvent::KeyFrameAnswered(KeyFrameAnswer {
                            after: request.at.elapsed(),
                            frames_before: request.frames_before,
                        }));
                    }
                }
                _ => {}
            }
            gst::PadProbeReturn::Ok
        },
    )
    .is_some()
}

/// Feeds every report block of the RTCP the peer sends into `tx` as
/// [`MediaEvent::ReportBlocks`], from the RTP session inside webrtcbin (`on-receiving-rtcp`).
/// Reading each packet matters: the session's own statistics keep only the last block per
/// remote source, so the audio's block is often hidden behind the video's, and webrtcbin
/// 1.22's `get-stats` lists one SSRC of the bundle only. Returns false while the session does
/// not exist yet (before the answer).
pub fn watch_report_blocks(webrtcbin: &gst::Element, tx: &EventSender) -> bool {
    let Some(session) = rtp_session(webrtcbin) else {
        return false;
    };
    let tx = tx.clone();
    session.connect("on-receiving-rtcp", false, move |args| {
        if let Ok(buffer) = args[1].get::<gst::Buffer>() {
            if let Ok(map) = buffer.map_readable() {
                let blocks = report_blocks_in(&map);
                if !blocks.is_empty() {
                    let _ = tx.send(MediaEvent::ReportBlocks(blocks));
                }
            }
        }
        None
    });
    true
}

/// The RTP session of webrtcbin's (bundled) transport, once negotiation has created it.
pub(crate) fn rtp_session(webrtcbin: &gst::Element) -> Option<glib::Object> {
    let rtpbin = webrtcbin
        .downcast_ref::<gst::Bin>()
        .and_then(|b| b.by_name("rtpbin"))?;
    rtpbin.emit_by_name::<Option<glib::Object>>("get-internal-session", &[&0u32])
}

/// `(SSRC reported on, fraction lost 0..=1)` of every report block in one (compound or
/// reduced-size) RTCP packet; nothing for a packet that does not parse.
pub fn report_blocks_in(rtcp: &[u8]) -> Vec<(u32, f64)> {
    let Ok(compound) = rtcp_types::Compound::parse(rtcp) else {
        return Vec::new();
    };
    let block = |b: rtcp_types::ReportBlock| (b.ssrc(), f64::from(b.fraction_lost()) / 256.0);
    let mut out = Vec::new();
    for packet in compound.flatten() {
        match packet {
            rtcp_types::Packet::Rr(rr) => out.extend(rr.report_blocks().map(block)),
            rtcp_types::Packet::Sr(sr) => out.extend(sr.report_blocks().map(block)),
            _ => {}
        }
    }
    out
}

/// How long a stream's last reported loss counts when no newer report about it was read.
const REPORT_FRESH: std::time::Duration = std::time::Duration::from_secs(5);

/// The time constant of the reported loss's average, Chrome's for its Opus encoder (a weight
/// of 0.9999 per millisecond on the old value). A report each second covers only some 50
/// audio packets, so at 5 % loss single reports read anything from 0 to 18 %: the encoder
/// should follow the link's loss, not each report's luck.
const LOSS_TIME_CONSTANT: std::time::Duration = std::time::Duration::from_secs(10);

/// The highest expected loss given to the encoder, Chrome's: beyond it, in-band FEC takes
/// bits from the audio itself for little more protection.
const MAX_EXPECTED_LOSS: f64 = 0.20;

/// The Opus encoder whose expected loss follows the reports.
pub struct AudioLoss {
    encoder: Option<gst::Element>,
    percent: i32,
    /// The average of the reported loss (the first report as it is), and when it last moved.
    average: Option<(f64, std::time::Instant)>,
    /// Our SSRC -> (last fraction lost reported for it, when it was read).
    reported: std::collections::HashMap<u32, (f64, std::time::Instant)>,
    /// The audio stream's SSRCs (from the offer); empty: every stream counts.
    audio_ssrcs: Vec<u32>,
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
            average: None,
            reported: Default::default(),
            audio_ssrcs: Vec::new(),
        }
    }

    /// Only reports about these SSRCs (the audio's, from our offer) count from now on.
    pub fn set_audio_ssrcs(&mut self, ssrcs: Vec<u32>) {
        self.reported.retain(|ssrc, _| ssrcs.contains(ssrc));
        self.audio_ssrcs = ssrcs;
    }

    pub fn is_active(&self) -> bool {
        self.encoder.is_some()
    }

    pub fn percent(&self) -> i32 {
        self.percent
    }

    /// Takes the report blocks of one read. A read with a block about the audio moves the
    /// average (over [`LOSS_TIME_CONSTANT`]) of the worst audio stream reported on in the
    /// last few seconds; the expected loss is that average, up to [`MAX_EXPECTED_LOSS`].
    /// Returns the new value when it changed.
    pub fn on_report_blocks(
        &mut self,
        blocks: &[(u32, f64)],
        now: std::time::Instant,
    ) -> Option<i32> {
        let ours = |ssrc: &u32| self.audio_ssrcs.is_empty() || self.audio_ssrcs.contains(ssrc);
        let mut about_audio = false;
        for &(ssrc, fraction) in blocks.iter().filter(|(ssrc, _)| ours(ssrc)) {
            self.reported.insert(ssrc, (fraction, now));
            about_audio = true;
        }
        if !about_audio {
            return None;
        }
        self.reported
            .retain(|_, (_, at)| now.duration_since(*at) <= REPORT_FRESH);
        let worst = self.reported.values().map(|(f, _)| *f).reduce(f64::max)?;
        let average = match self.average {
            None => worst,
            Some((old, at)) => {
                let elapsed = now.saturating_duration_since(at).as_secs_f64();
                let keep = (-elapsed / LOSS_TIME_CONSTANT.as_secs_f64()).exp();
                keep * old + (1.0 - keep) * worst
            }
        };
        self.average = Some((average, now));
        self.set_expected_loss(average.min(MAX_EXPECTED_LOSS))
    }

    /// Sets the encoder's expected loss; returns the new value when it changed.
    fn set_expected_loss(&mut self, fraction: f64) -> Option<i32> {
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
    fn report_blocks_of_a_compound_packet() {
        // RR from SSRC 0x11 with blocks about 0xA (fraction 13/256) and 0xB (0), then an
        // SDES-less tail: a transport-cc feedback packet, which carries no report block.
        let rr = rtcp_types::ReceiverReport::builder(0x11)
            .add_report_block(rtcp_types::ReportBlock::builder(0xA).fraction_lost(13))
            .add_report_block(rtcp_types::ReportBlock::builder(0xB));
        let mut buf = vec![0u8; 128];
        use rtcp_types::RtcpPacketWriterExt;
        let len = rtcp_types::Compound::builder()
            .add_packet(rr)
            .write_into(&mut buf)
            .unwrap();
        assert_eq!(
            report_blocks_in(&buf[..len]),
            vec![(0xA, 13.0 / 256.0), (0xB, 0.0)]
        );
        assert!(report_blocks_in(b"garbage").is_empty());
        assert!(report_blocks_in(&[]).is_empty());
    }

    #[test]
    fn opus_loss_follows_the_average_of_the_reports() {
        crate::media::init().unwrap();
        let pipeline = gst::parse::launch("audiotestsrc ! opusenc name=aenc ! fakesink")
            .unwrap()
            .downcast::<gst::Pipeline>()
            .unwrap();
        let enc = pipeline.by_name("aenc").unwrap();
        let mut loss = AudioLoss::new(&pipeline, &AudioConfig::default());
        assert!(loss.is_active());
        loss.set_audio_ssrcs(vec![7, 9]);
        let t = std::time::Instant::now();
        let at = |s: u64| t + Duration::from_secs(s);
        // The first report is taken as it is.
        assert_eq!(loss.on_report_blocks(&[(7, 0.10)], at(0)), Some(10));
        // Reports about other streams (the video) do not count.
        assert_eq!(loss.on_report_blocks(&[(42, 0.5)], at(1)), None);
        // A second of no loss: 0.10 * e^-0.1.
        assert_eq!(loss.on_report_blocks(&[(7, 0.0)], at(1)), Some(9));
        // The worst audio stream counts, while its report is fresh.
        assert_eq!(loss.on_report_blocks(&[(9, 0.30)], at(2)), Some(11));
        assert_eq!(loss.on_report_blocks(&[(7, 0.0)], at(3)), Some(13));
        // Over half a minute of no loss brings it down; one unlucky report moves it a little.
        assert_eq!(
            loss.on_report_blocks(&[(7, 0.0), (9, 0.0)], at(40)),
            Some(0)
        );
        assert_eq!(loss.on_report_blocks(&[(7, 0.18)], at(41)), Some(2));
        // Steady heavy loss: the expected loss climbs to its ceiling and stays there.
        for s in 42..90 {
            loss.on_report_blocks(&[(7, 0.5), (9, 0.5)], at(s));
        }
        assert_eq!(loss.percent(), 20);
        assert_eq!(enc.property::<i32>("packet-loss-percentage"), 20);
    }
}
