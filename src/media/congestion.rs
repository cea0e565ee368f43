//! Congestion control: Google Congestion Control (`rtpgccbwe` from gst-plugins-rs) as
//! webrtcbin's aux sender, its estimate driving the video encoder's bitrate and, below
//! thresholds and while the encoder's quantiser shows the picture squeezed, the picture's size
//! and frame rate. Audio keeps its bitrate.
//!
//! rtpgccbwe sits in front of the RTP session, paces what it sends and reads the
//! `RTPTWCCPackets` events the session derives from the receiver's transport-cc feedback
//! (negotiated by `sdp.rs`, extension added to each payloader by `webrtc.rs`). Its
//! `estimated-bitrate` notifications arrive on an RTCP thread: the handler only sends
//! [`MediaEvent::EstimatedBitrate`]; the session task calls [`RateControl::on_estimate`].

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use glib::translate::ToGlibPtr;
use gst::prelude::*;
use tracing::{debug, info};

use super::quantiser::EncoderQp;
use super::webrtc::{EventSender, MediaEvent};
use super::WebRtc;
use crate::config::{AudioConfig, VideoConfig};

/// The audio bitrate assumed when the description's Opus encoder cannot be found, bit/s.
const DEFAULT_AUDIO_BPS: u32 = 64_000;
/// Share of what is left for video after audio that the encoder is asked for: the rest covers
/// RTP/SRTP/UDP headers and the encoder's overshoot.
const VIDEO_SHARE_PERCENT: u32 = 90;
/// Encoder bitrate changes smaller than this (percent) are not applied.
const MIN_CHANGE_PERCENT: u32 = 5;
/// How long a picture level is kept at least before the next step, either way.
const STEP_DWELL: Duration = Duration::from_secs(2);
/// Steps: full picture, half size, half size at half frame rate.
const LEVELS: usize = 3;
/// Average H.264 QP above which the picture is squeezed: a smaller one would look better at
/// the same bitrate. Below it the picture keeps its size, however low the estimate (a simple
/// scene needs few bits). libwebrtc's high threshold for H.264.
const QP_SQUEEZED: f64 = 37.0;
/// Average QP below which the encoder has bits to spare: the next bigger picture fits. Four
/// times the pixels at the same bitrate raise the QP by about 12, so the gap to
/// [`QP_SQUEEZED`] keeps a step up from being undone. libwebrtc's low threshold for H.264.
const QP_SPARE: f64 = 24.0;

/// Registers the gst-plugins-rs RTP plugin into this process, once: rtpgccbwe alone, through
/// the patched crate in vendor/ (its other 35 elements cost 2.1 MiB of resident memory).
pub fn register() -> Result<(), glib::BoolError> {
    gstrsrtp::plugin_register_static()
}

/// rtpgccbwe's latest estimate of what the link carries (bit/s, everything sent), for the
/// parts of the box that read it from streaming threads. Unknown (`None`) until an estimator
/// is made.
#[derive(Debug, Clone, Default)]
pub struct SendEstimate(Arc<AtomicU32>);

impl SendEstimate {
    pub fn set(&self, bps: u32) {
        self.0.store(bps, Ordering::Relaxed);
    }

    pub fn get(&self) -> Option<u32> {
        Some(self.0.load(Ordering::Relaxed)).filter(|bps| *bps > 0)
    }
}

/// Makes webrtcbin use rtpgccbwe as its aux sender, its estimate kept in `estimate` too. Must
/// be called while webrtcbin is still NULL: webrtcbin asks for aux senders when it builds its
/// transports.
pub fn attach_estimator(
    webrtc: &WebRtc,
    video: &VideoConfig,
    audio_bps: u32,
    estimate: &SendEstimate,
    tx: &EventSender,
) {
    // Bounds on the whole send rate that put the encoder itself at the configured bounds.
    let min_bps = estimate_for(video.min_bitrate, audio_bps);
    let start_bps = estimate_for(video.start_bitrate, audio_bps);
    let max_bps = estimate_for(video.max_bitrate, audio_bps);
    let tx = tx.clone();
    let estimate = estimate.clone();
    webrtc
        .element()
        .connect("request-aux-sender", false, move |_args| {
            let bwe = match gst::ElementFactory::make("rtpgccbwe")
                .property("min-bitrate", min_bps)
                .property("max-bitrate", max_bps)
                .property("estimated-bitrate", start_bps)
                .build()
            {
                Ok(e) => e,
                Err(e) => {
                    let _ = tx.send(MediaEvent::EstimatorMissing(e.to_string()));
                    return None;
                }
            };
            estimate.set(start_bps);
            let (t, e) = (tx.clone(), estimate.clone());
            bwe.connect_notify(Some("estimated-bitrate"), move |bwe, _| {
                let bps = bwe.property::<u32>("estimated-bitrate");
                e.set(bps);
                let _ = t.send(MediaEvent::EstimatedBitrate(bps));
            });
            // The signal's return is `transfer floating`: webrtcbin adds the element to its
            // bin and keeps no reference of its own. gstreamer-rs hands out non-floating
            // references, so without this the bin's add takes a second one and every
            // session's estimator (with its pacing thread) outlives its pipeline.
            // SAFETY: `bwe` is a valid GObject we own; marking it floating only changes who
            // sinks the reference.
            unsafe {
                let ptr: *mut gst::ffi::GstElement = bwe.to_glib_none().0;
                glib::gobject_ffi::g_object_force_floating(ptr as *mut glib::gobject_ffi::GObject);
            }
            Some(bwe.to_value())
        });
}

/// The estimate (bit/s, everything sent) at which [`RateController`] asks the encoder for
/// `video_kbps`: the inverse of its share. Without it the estimator's maximum would cap the
/// encoder at 90 % of the configured maximum.
pub fn estimate_for(video_kbps: u32, audio_bps: u32) -> u32 {
    let video_bps = u64::from(video_kbps) * 1000 * 100;
    let share = u64::from(VIDEO_SHARE_PERCENT);
    let bps = video_bps.div_ceil(share) + u64::from(audio_bps);
    u32::try_from(bps).unwrap_or(u32::MAX)
}

/// The Opus encoder's bitrate (bit/s) as the description sets it, for the estimate's share.
pub fn audio_bitrate(pipeline: &gst::Pipeline, audio: &AudioConfig) -> u32 {
    pipeline
        .by_name(&audio.encoder)
        .filter(|e| e.has_property_with_type("bitrate", i32::static_type()))
        .map(|e| e.property::<i32>("bitrate").max(0) as u32)
        .unwrap_or(DEFAULT_AUDIO_BPS)
}

/// What the controller wants done after an estimate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Decision {
    /// New encoder bitrate, kbit/s.
    pub video_kbps: Option<u32>,
    /// New picture level: 0 full, 1 half size, 2 half size and half frame rate.
    pub level: Option<usize>,
}

/// Pure logic: estimate in, encoder bitrate and picture level out.
#[derive(Debug, Clone)]
pub struct RateController {
    min_kbps: u32,
    max_kbps: u32,
    step_down_below: u32,
    audio_bps: u32,
    video_kbps: u32,
    level: usize,
    last_step: Option<Instant>,
}

impl RateController {
    pub fn new(video: &VideoConfig, audio_bps: u32) -> Self {
        RateController {
            min_kbps: video.min_bitrate,
            max_kbps: video.max_bitrate,
            step_down_below: video.step_down_below,
            audio_bps,
            video_kbps: video.start_bitrate,
            level: 0,
            last_step: None,
        }
    }

    pub fn video_kbps(&self) -> u32 {
        self.video_kbps
    }

    pub fn level(&self) -> usize {
        self.level
    }

    /// The threshold under which level `level` steps down, kbit/s.
    fn floor(&self, level: usize) -> u32 {
        self.step_down_below >> level
    }

    /// `qp` is the encoder's average quantiser ([`EncoderQp`]), `None` when unknown (not
    /// H.264, no frame yet): the estimate alone decides then.
    pub fn on_estimate(&mut self, estimate_bps: u32, qp: Option<f64>, now: Instant) -> Decision {
        let wanted = (estimate_bps.saturating_sub(self.audio_bps) as u64
            * VIDEO_SHARE_PERCENT as u64
            / 100
            / 1000) as u32;
        let wanted = wanted.clamp(self.min_kbps, self.max_kbps);
        let mut decision = Decision::default();
        let change = wanted.abs_diff(self.video_kbps) * 100;
        if change >= self.video_kbps.max(1) * MIN_CHANGE_PERCENT
            || (wanted != self.video_kbps && (wanted == self.min_kbps || wanted == self.max_kbps))
        {
            self.video_kbps = wanted;
            decision.video_kbps = Some(wanted);
        }
        let settled = self.last_step.is_none_or(|t| now >= t + STEP_DWELL);
        if settled {
            let level = self.level;
            let squeezed = qp.is_none_or(|qp| qp > QP_SQUEEZED);
            let spare = qp.is_some_and(|qp| qp < QP_SPARE);
            if level + 1 < LEVELS && wanted < self.floor(level) && squeezed {
                self.level += 1;
            } else if level > 0 && (wanted > self.floor(level - 1) * 3 / 2 || spare) {
                self.level -= 1;
            }
            if self.level != level {
                self.last_step = Some(now);
                decision.level = Some(self.level);
            }
        }
        decision
    }
}

/// The elements congestion control acts on: the video encoder and, if the description has
/// one, the capsfilter after videoscale/videorate.
pub struct RateControl {
    controller: RateController,
    encoder: Option<gst::Element>,
    qp: Option<EncoderQp>,
    scaler: Option<(gst::Element, Picture)>,
    last_estimate: u32,
}

/// The full picture the description asks the scaling capsfilter for.
#[derive(Debug, Clone)]
struct Picture {
    caps: gst::Caps,
    width: i32,
    height: i32,
    fps: gst::Fraction,
}

impl RateControl {
    pub fn new(pipeline: &gst::Pipeline, video: &VideoConfig, audio_bps: u32) -> Self {
        let encoder = pipeline
            .by_name(&video.encoder)
            .filter(|e| e.has_property("bitrate"));
        if encoder.is_none() {
            info!(encoder = %video.encoder, "no video encoder with a `bitrate` of that name: the bitrate stays fixed");
        }
        let scaler = pipeline.by_name(&video.scale_caps).and_then(|e| {
            let caps: gst::Caps = e.property("caps");
            let s = caps.structure(0)?;
            let picture = Picture {
                width: s.get("width").ok()?,
                height: s.get("height").ok()?,
                fps: s.get("framerate").ok()?,
                caps: caps.clone(),
            };
            Some((e, picture))
        });
        let qp = encoder.as_ref().map(EncoderQp::watch);
        let control = RateControl {
            controller: RateController::new(video, audio_bps),
            encoder,
            qp,
            scaler,
            last_estimate: 0,
        };
        control.set_encoder(video.start_bitrate);
        control
    }

    pub fn video_kbps(&self) -> u32 {
        self.controller.video_kbps()
    }

    /// The picture level in force; always 0 without a scaling capsfilter.
    pub fn level(&self) -> usize {
        if self.scaler.is_some() {
            self.controller.level()
        } else {
            0
        }
    }

    /// The encoder's average quantiser, when its output is H.264 and has begun.
    pub fn quantiser(&self) -> Option<f64> {
        self.qp.as_ref().and_then(EncoderQp::average)
    }

    pub fn on_estimate(&mut self, estimate_bps: u32) {
        if estimate_bps != self.last_estimate {
            debug!(
                estimate_kbps = estimate_bps / 1000,
                previous_kbps = self.last_estimate / 1000,
                "bandwidth estimate"
            );
            self.last_estimate = estimate_bps;
        }
        let qp = self.quantiser();
        let decision = self
            .controller
            .on_estimate(estimate_bps, qp, Instant::now());
        if let Some(kbps) = decision.video_kbps {
            debug!(video_kbps = kbps, "video encoder bitrate");
            self.set_encoder(kbps);
        }
        if let (Some(level), Some((filter, full))) = (decision.level, &self.scaler) {
            let caps = level_caps(full, level);
            info!(level, qp = qp.map(|q| q.round()), %caps, "video picture level");
            filter.set_property("caps", &caps);
        }
    }

    fn set_encoder(&self, kbps: u32) {
        let Some(encoder) = &self.encoder else { return };
        let Some(pspec) = encoder.find_property("bitrate") else {
            return;
        };
        // x264enc and most others take kbit/s as a u32; a few take bit/s or an i32.
        let per_bits = encoder
            .factory()
            .is_some_and(|f| ["vp8enc", "vp9enc", "openh264enc"].contains(&f.name().as_str()));
        let value = if per_bits { kbps * 1000 } else { kbps };
        if pspec.value_type() == u32::static_type() {
            encoder.set_property("bitrate", value);
        } else if pspec.value_type() == i32::static_type() {
            encoder.set_property("bitrate", value.min(i32::MAX as u32) as i32);
        }
    }
}

fn level_caps(full: &Picture, level: usize) -> gst::Caps {
    if level == 0 {
        return full.caps.clone();
    }
    let mut caps = full.caps.clone();
    let (w, h) = ((full.width / 2) & !1, (full.height / 2) & !1);
    let fps = if level >= 2 {
        gst::Fraction::new(full.fps.numer(), full.fps.denom() * 2)
    } else {
        full.fps
    };
    if let Some(s) = caps.make_mut().structure_mut(0) {
        s.set("width", w.max(2));
        s.set("height", h.max(2));
        s.set("framerate", fps);
    }
    caps
}

#[cfg(test)]
mod tests {
    use super::*;

    fn controller() -> RateController {
        let video = VideoConfig {
            min_bitrate: 100,
            start_bitrate: 1000,
            max_bitrate: 2000,
            step_down_below: 300,
            ..Default::default()
        };
        RateController::new(&video, 64_000)
    }

    #[test]
    fn bitrate_follows_the_estimate_within_bounds() {
        let mut c = controller();
        let t = Instant::now();
        let d = c.on_estimate(564_000, None, t);
        assert_eq!(d.video_kbps, Some(450));
        // A change under 5 % is not applied.
        assert_eq!(c.on_estimate(574_000, None, t).video_kbps, None);
        assert_eq!(c.on_estimate(50_000_000, None, t).video_kbps, Some(2000));
        assert_eq!(c.on_estimate(1_000, None, t).video_kbps, Some(100));
    }

    #[test]
    fn estimator_bounds_reach_the_encoder_bounds() {
        let mut c = controller();
        let t = Instant::now();
        assert_eq!(
            c.on_estimate(estimate_for(2000, 64_000), None, t)
                .video_kbps,
            Some(2000)
        );
        assert_eq!(
            c.on_estimate(estimate_for(1000, 64_000), None, t)
                .video_kbps,
            Some(1000)
        );
        assert_eq!(
            c.on_estimate(estimate_for(100, 64_000), None, t).video_kbps,
            Some(100)
        );
        assert_eq!(estimate_for(4_000_000, 64_000), u32::MAX);
    }

    #[test]
    fn picture_steps_down_and_up_with_hysteresis() {
        let mut c = controller();
        let t0 = Instant::now();
        assert_eq!(c.on_estimate(264_000, None, t0).level, Some(1)); // 180 kbit/s < 300
                                                                     // Too soon for another step, however low.
        assert_eq!(
            c.on_estimate(100_000, None, t0 + Duration::from_secs(1))
                .level,
            None
        );
        let t1 = t0 + Duration::from_secs(3);
        assert_eq!(c.on_estimate(150_000, None, t1).level, Some(2)); // 100 < 150
        let t2 = t1 + Duration::from_secs(3);
        // Back above level 1's floor but not by half again: stays.
        assert_eq!(c.on_estimate(300_000, None, t2).level, None);
        assert_eq!(c.on_estimate(400_000, None, t2).level, Some(1)); // 302 > 225
        let t3 = t2 + Duration::from_secs(3);
        assert_eq!(c.on_estimate(500_000, None, t3).level, None); // 392 < 450
        assert_eq!(c.on_estimate(700_000, None, t3).level, Some(0)); // 572 > 450
        assert_eq!(c.level(), 0);
    }

    #[test]
    fn the_quantiser_decides_whether_a_low_estimate_shrinks_the_picture() {
        let mut c = controller();
        let t0 = Instant::now();
        let step = |n: u64| t0 + Duration::from_secs(3 * n);
        // A simple scene at QP 12: the estimate of 180 kbit/s is under level 0's floor of 300,
        // but the picture needs no more, so it keeps its size.
        assert_eq!(c.on_estimate(264_000, Some(12.0), step(0)).level, None);
        // QP 30 is neither squeezed nor spare: it stays too.
        assert_eq!(c.on_estimate(264_000, Some(30.0), step(1)).level, None);
        // Squeezed: it steps down, and further while squeezed.
        assert_eq!(c.on_estimate(264_000, Some(45.0), step(2)).level, Some(1));
        assert_eq!(c.on_estimate(150_000, Some(45.0), step(3)).level, Some(2));
        // The scene turns simple: bits to spare, so the picture grows back one step per
        // dwell though the estimate stays low (no estimate can grow past what is sent).
        assert_eq!(c.on_estimate(150_000, Some(14.0), step(4)).level, Some(1));
        assert_eq!(
            c.on_estimate(150_000, Some(14.0), step(4) + Duration::from_secs(1))
                .level,
            None
        );
        assert_eq!(c.on_estimate(150_000, Some(20.0), step(5)).level, Some(0));
        // In between, the estimate decides the step up alone, as without a quantiser.
        assert_eq!(c.on_estimate(264_000, Some(45.0), step(6)).level, Some(1));
        assert_eq!(c.on_estimate(400_000, Some(30.0), step(7)).level, None);
        assert_eq!(c.on_estimate(700_000, Some(30.0), step(8)).level, Some(0));
    }

    #[test]
    fn only_the_estimator_is_registered() {
        crate::media::init().unwrap();
        assert!(gst::ElementFactory::find("rtpgccbwe").is_some());
        // Elements of the published crate's other modules (rtpbin2, the payloaders): present
        // if the [patch.crates-io] of vendor/gst-plugin-rtp is lost.
        for other in [
            "rtpsend",
            "rtprecv",
            "rtpav1pay",
            "rtpvp8pay2",
            "rtpopuspay2",
        ] {
            assert!(
                gst::ElementFactory::find(other).is_none(),
                "{other} is registered: the unpatched gst-plugin-rtp is linked in"
            );
        }
    }

    #[test]
    fn level_caps_halve_size_then_rate() {
        crate::media::init().unwrap();
        let caps: gst::Caps = "video/x-raw,width=640,height=480,framerate=30/1"
            .parse()
            .unwrap();
        let full = Picture {
            caps,
            width: 640,
            height: 480,
            fps: gst::Fraction::new(30, 1),
        };
        let s = level_caps(&full, 2);
        let s = s.structure(0).unwrap();
        assert_eq!(s.get::<i32>("width").unwrap(), 320);
        assert_eq!(s.get::<i32>("height").unwrap(), 240);
        assert_eq!(
            s.get::<gst::Fraction>("framerate").unwrap(),
            gst::Fraction::new(15, 1)
        );
    }
}
