//! A receiving webrtcbin peer that answers a box's offer recvonly, like the seed's server: it
//! decodes what arrives and counts it. `serve` uses it when no browser is watching; the tests
//! use it as the far end of a real stream.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use gst::prelude::*;
use gst_webrtc::{WebRTCDataChannel, WebRTCDataChannelState, WebRTCSDPType};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::config::IceConfig;
use crate::media::{self, candidate, sdp, MediaError, MediaEvent, PipelineGuard, WebRtc};
use crate::protocol::{Envelope, Signal};

/// What the answerer has received, updated from streaming threads.
#[derive(Debug, Default)]
pub struct ReceivedMedia {
    pub video_frames: AtomicU64,
    pub audio_buffers: AtomicU64,
    pub video_size: Mutex<Option<(i32, i32)>>,
    pub first_video_frame: OnceLock<Instant>,
    pub data_channel_open: AtomicBool,
    pub data_channel_messages: Mutex<Vec<String>>,
    pub remote_candidates: AtomicU64,
    pub local_candidates: AtomicU64,
    /// RTCP sender reports received from the box, by their sender SSRC (one per stream).
    pub sender_reports: Mutex<HashMap<u32, u64>>,
    /// When each H.264 key frame (IDR) left the depayloader.
    pub key_frames: Mutex<Vec<Instant>>,
    /// The H.264 depayloader, to ask the box for a key frame through it.
    video_depayloader: Mutex<Option<glib::WeakRef<gst::Element>>>,
    /// Called with every decoded video frame (measurements; runs on a streaming thread).
    pub on_video_frame: OnceLock<FrameHook>,
}

/// A callback on decoded video frames.
pub struct FrameHook(pub Box<dyn Fn(&gst::Sample) + Send + Sync>);

impl std::fmt::Debug for FrameHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FrameHook")
    }
}

impl ReceivedMedia {
    pub fn video_frames(&self) -> u64 {
        self.video_frames.load(Ordering::Relaxed)
    }
    pub fn audio_buffers(&self) -> u64 {
        self.audio_buffers.load(Ordering::Relaxed)
    }
    pub fn video_size(&self) -> Option<(i32, i32)> {
        *self.video_size.lock().unwrap()
    }

    pub fn sender_reports(&self) -> HashMap<u32, u64> {
        self.sender_reports.lock().unwrap().clone()
    }

    pub fn key_frames(&self) -> Vec<Instant> {
        self.key_frames.lock().unwrap().clone()
    }

    /// Sends a force-key-unit event upstream from the depayloader, as a decoder that lost
    /// its reference would: the RTP session turns it into a PLI (or FIR) to the box.
    /// Returns false when no video has arrived yet.
    pub fn request_key_frame(&self) -> bool {
        let depay = self
            .video_depayloader
            .lock()
            .unwrap()
            .as_ref()
            .and_then(|w| w.upgrade());
        let Some(depay) = depay else { return false };
        let event = gst_video::UpstreamForceKeyUnitEvent::builder()
            .all_headers(true)
            .build();
        depay.send_event(event)
    }
}

/// The answering webrtcbin's name, which its log lines carry (see `logging.rs`).
pub const WEBRTCBIN_NAME: &str = "answerer-webrtc";

/// The text the answerer sends back on the box's data channel.
pub const ANSWERER_GREETING: &str = "welcome from the airsync answerer";

pub struct Answerer {
    _guard: PipelineGuard,
    webrtc: WebRtc,
    events: mpsc::UnboundedReceiver<MediaEvent>,
    channel: Option<WebRTCDataChannel>,
    answered: bool,
    pending: Vec<(u32, String)>,
    pub received: Arc<ReceivedMedia>,
}

impl Answerer {
    pub fn new(ice: &IceConfig) -> Result<Self, MediaError> {
        media::init()?;
        let pipeline = gst::Pipeline::with_name("answerer");
        let bin = gst::ElementFactory::make("webrtcbin")
            .name(WEBRTCBIN_NAME)
            .build()
            .map_err(|_| MediaError::MissingElement {
                element: "webrtcbin".into(),
                package: media::pipeline::package_for("webrtcbin"),
                path: "(answerer)".into(),
            })?;
        pipeline
            .add(&bin)
            .map_err(|e| MediaError::webrtc("add", e))?;
        let webrtc = WebRtc::new(bin.clone());
        webrtc.configure_ice(ice)?;
        let (tx, events) = mpsc::unbounded_channel();
        webrtc.connect_signals(&tx);
        // Asking for retransmissions is the receiver's choice: with do-nack its jitter buffer
        // sends NACKs and its answer accepts the offer's RTX.
        bin.connect("on-new-transceiver", false, |args| {
            if let Ok(t) = args[1].get::<gst_webrtc::WebRTCRTPTransceiver>() {
                t.set_property("do-nack", true);
            }
            None
        });
        let received = Arc::new(ReceivedMedia::default());
        let r = received.clone();
        bin.connect_pad_added(move |bin, pad| on_incoming_stream(bin, pad, &r));
        let guard = PipelineGuard::new(pipeline);
        guard
            .pipeline()
            .set_state(gst::State::Playing)
            .map_err(|e| MediaError::StateChange(e.to_string()))?;
        Ok(Answerer {
            _guard: guard,
            webrtc,
            events,
            channel: None,
            answered: false,
            pending: Vec::new(),
            received,
        })
    }

    pub fn webrtc(&self) -> &WebRtc {
        &self.webrtc
    }

    /// Applies the box's offer and returns the recvonly answer's SDP text.
    pub async fn answer(&mut self, offer: &str) -> Result<String, MediaError> {
        let offer = sdp::parse(offer).map_err(|e| MediaError::webrtc("offer", e))?;
        self.webrtc
            .set_remote(WebRTCSDPType::Offer, offer.clone())
            .await?;
        let mut answer = self.webrtc.create_answer().await?;
        accept_twcc(&offer, &mut answer);
        self.webrtc
            .set_local(WebRTCSDPType::Answer, answer.clone())
            .await?;
        self.answered = true;
        rtcp_as_browsers_send_it(self.webrtc.element());
        count_sender_reports(self.webrtc.element(), &self.received);
        for (mline, c) in std::mem::take(&mut self.pending) {
            self.webrtc.add_ice_candidate(mline, &c);
        }
        answer
            .as_text()
            .map_err(|e| MediaError::webrtc("answer", e))
    }

    pub fn add_candidate(&mut self, mline: u32, c: &str) {
        if candidate::parse(c).is_err() {
            warn!(candidate = c, "answerer dropped an unparsable candidate");
            return;
        }
        self.received
            .remote_candidates
            .fetch_add(1, Ordering::Relaxed);
        if self.answered {
            self.webrtc.add_ice_candidate(mline, c);
        } else {
            self.pending.push((mline, c.to_owned()));
        }
    }

    /// The next event worth the caller's attention; data-channel chatter is handled here.
    pub async fn next_event(&mut self) -> Option<MediaEvent> {
        loop {
            let event = self.events.recv().await?;
            match event {
                MediaEvent::RemoteDataChannel(channel) => {
                    if channel.ready_state() == WebRTCDataChannelState::Open {
                        self.on_channel_open(&channel);
                    }
                    self.channel = Some(channel);
                }
                MediaEvent::DataChannelOpen => {
                    if let Some(channel) = self.channel.clone() {
                        self.on_channel_open(&channel);
                    }
                }
                MediaEvent::DataChannelMessage(text) => {
                    debug!(message = %text, "answerer: data channel message");
                    self.received
                        .data_channel_messages
                        .lock()
                        .unwrap()
                        .push(text);
                }
                MediaEvent::LocalCandidate { .. } => {
                    self.received
                        .local_candidates
                        .fetch_add(1, Ordering::Relaxed);
                    return Some(event);
                }
                other => return Some(other),
            }
        }
    }

    fn on_channel_open(&self, channel: &WebRTCDataChannel) {
        if !self
            .received
            .data_channel_open
            .swap(true, Ordering::Relaxed)
        {
            if let Err(e) = channel.send_string_full(Some(ANSWERER_GREETING)) {
                warn!(error = %e, "answerer: data channel send failed");
            }
        }
    }
}

/// Runs the answering side of one session: offers and candidates in, answer and candidates out.
/// Returns when `inbound` closes or the peer connection fails.
pub async fn run(
    mut answerer: Answerer,
    mut inbound: mpsc::Receiver<Envelope>,
    outbound: mpsc::Sender<Envelope>,
) -> Result<(), MediaError> {
    let mut session_id: Option<String> = None;
    loop {
        tokio::select! {
            msg = inbound.recv() => {
                let Some(envelope) = msg else { return Ok(()) };
                if session_id.as_deref().is_some_and(|s| s != envelope.session_id) {
                    warn!(got = %envelope.session_id, "answerer: message for another session dropped");
                    continue;
                }
                match envelope.signal {
                    Signal::Offer { sdp } => {
                        if session_id.is_some() {
                            warn!("answerer: second offer ignored");
                            continue;
                        }
                        session_id = Some(envelope.session_id.clone());
                        let answer = answerer.answer(&sdp).await?;
                        let _ = outbound.send(Envelope {
                            session_id: envelope.session_id,
                            signal: Signal::Answer { sdp: answer },
                        }).await;
                    }
                    Signal::Candidate { candidate, sdp_mline_index, .. } => {
                        answerer.add_candidate(sdp_mline_index.unwrap_or(0), &candidate);
                    }
                    Signal::EndOfCandidates => {}
                    Signal::Answer { .. } => warn!("answerer: unexpected answer ignored"),
                }
            }
            event = answerer.next_event() => match event {
                None => return Ok(()),
                Some(MediaEvent::LocalCandidate { mline, candidate }) => {
                    let Some(id) = session_id.clone() else { continue };
                    let sdp_mid = answerer.webrtc().local_description().and_then(|d| sdp::mid_of(&d, mline));
                    let _ = outbound.send(Envelope {
                        session_id: id,
                        signal: Signal::Candidate { candidate, sdp_mid, sdp_mline_index: Some(mline) },
                    }).await;
                }
                Some(MediaEvent::ConnectionState(state)) => {
                    info!(?state, "answerer: peer connection");
                    if state == gst_webrtc::WebRTCPeerConnectionState::Failed {
                        return Err(MediaError::webrtc("connection", "peer connection failed"));
                    }
                }
                Some(_) => {}
            }
        }
    }
}

/// webrtcbin 1.22 leaves the offer's header extensions out of its answer, and then its RTP
/// session ignores the TWCC sequence numbers and sends no transport-cc feedback. A browser
/// answers with the extension; so does this peer, echoing the offer's TWCC `extmap`.
fn accept_twcc(offer: &gst_sdp::SDPMessage, answer: &mut gst_sdp::SDPMessage) {
    for i in 0..answer.medias_len() {
        let Some(twcc) = offer.media(i).and_then(|m| {
            m.attributes()
                .filter(|a| a.key() == "extmap")
                .filter_map(|a| a.value())
                .find(|v| v.ends_with(sdp::TWCC_URI))
                .map(str::to_owned)
        }) else {
            continue;
        };
        let Some(media) = answer.media_mut(i) else {
            continue;
        };
        if media.attributes().any(|a| a.key() == "extmap") {
            continue;
        }
        media.add_attribute("extmap", Some(&twcc));
    }
}

/// Decodes one incoming RTP stream into an appsink that counts what arrives.
fn on_incoming_stream(bin: &gst::Element, pad: &gst::Pad, received: &Arc<ReceivedMedia>) {
    if pad.direction() != gst::PadDirection::Src {
        return;
    }
    let Some(pipeline) = bin.parent().and_then(|p| p.downcast::<gst::Bin>().ok()) else {
        return;
    };
    let Ok(decodebin) = gst::ElementFactory::make("decodebin").build() else {
        warn!("answerer: decodebin missing (gstreamer1.0-plugins-base)");
        return;
    };
    if let Some(bin) = decodebin.downcast_ref::<gst::Bin>() {
        let r = received.clone();
        bin.connect_element_added(move |_, element| {
            if element
                .factory()
                .is_some_and(|f| f.name() == "rtph264depay")
            {
                watch_key_frames(element, &r);
            }
        });
    }
    let received = received.clone();
    decodebin.connect_pad_added(move |decodebin, pad| {
        let Some(bin) = decodebin
            .parent()
            .and_then(|p| p.downcast::<gst::Bin>().ok())
        else {
            return;
        };
        let caps = pad.current_caps().unwrap_or_else(|| pad.query_caps(None));
        let is_video = caps
            .structure(0)
            .is_some_and(|s| s.name().starts_with("video/"));
        if let Err(e) = add_counting_sink(&bin, pad, is_video, &received) {
            warn!(error = %e, "answerer: cannot attach a sink");
        }
    });
    if pipeline.add(&decodebin).is_err() {
        return;
    }
    let _ = decodebin.sync_state_with_parent();
    if let Some(sink) = decodebin.static_pad("sink") {
        if let Err(e) = pad.link(&sink) {
            warn!(error = ?e, "answerer: cannot link incoming stream");
        }
    }
}

/// Notes every IDR the depayloader outputs (a buffer without the DELTA_UNIT flag).
fn watch_key_frames(depay: &gst::Element, received: &Arc<ReceivedMedia>) {
    *received.video_depayloader.lock().unwrap() = Some(depay.downgrade());
    let Some(src) = depay.static_pad("src") else {
        return;
    };
    let received = received.clone();
    src.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
        if let Some(buffer) = info.buffer() {
            if !buffer.flags().contains(gst::BufferFlags::DELTA_UNIT) {
                received.key_frames.lock().unwrap().push(Instant::now());
            }
        }
        gst::PadProbeReturn::Ok
    });
}

fn add_counting_sink(
    bin: &gst::Bin,
    pad: &gst::Pad,
    is_video: bool,
    received: &Arc<ReceivedMedia>,
) -> Result<(), glib::BoolError> {
    let convert = gst::ElementFactory::make(if is_video {
        "videoconvert"
    } else {
        "audioconvert"
    })
    .build()?;
    let received = received.clone();
    let callbacks = gst_app::AppSinkCallbacks::builder()
        .new_sample(move |sink| {
            let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
            if is_video {
                if let Some(hook) = received.on_video_frame.get() {
                    (hook.0)(&sample);
                }
                if received.video_frames.fetch_add(1, Ordering::Relaxed) == 0 {
                    let _ = received.first_video_frame.set(Instant::now());
                    if let Some(info) = sample
                        .caps()
                        .and_then(|c| gst_video::VideoInfo::from_caps(c).ok())
                    {
                        *received.video_size.lock().unwrap() =
                            Some((info.width() as i32, info.height() as i32));
                    }
                }
            } else {
                received.audio_buffers.fetch_add(1, Ordering::Relaxed);
            }
            Ok(gst::FlowSuccess::Ok)
        })
        .build();
    let sink = gst_app::AppSink::builder()
        .sync(false)
        .callbacks(callbacks)
        .build();
    bin.add_many([&convert, sink.upcast_ref()])?;
    convert.link(&sink)?;
    convert.sync_state_with_parent()?;
    sink.sync_state_with_parent()?;
    let sinkpad = convert
        .static_pad("sink")
        .expect("converters have a sink pad");
    pad.link(&sinkpad)
        .map_err(|e| glib::bool_error!("link failed: {e:?}"))?;
    Ok(())
}

fn count_sender_reports(webrtcbin: &gst::Element, received: &Arc<ReceivedMedia>) {
    let Some(session) = media::recovery::rtp_session(webrtcbin) else {
        return;
    };
    let received = received.clone();
    session.connect("on-receiving-rtcp", false, move |args| {
        if let Some(map) = args[1]
            .get::<gst::Buffer>()
            .ok()
            .and_then(|b| b.into_mapped_buffer_readable().ok())
        {
            let mut counts = received.sender_reports.lock().unwrap();
            for ssrc in media::reports::sender_reports_in(&map) {
                *counts.entry(ssrc).or_default() += 1;
            }
        }
        None
    });
}

/// RTCP bandwidth (bit/s, despite the property's blurb) far above what a report a second and
/// feedback every 50 ms use; see [`rtcp_as_browsers_send_it`].
const UNBOUNDED_RTCP_BANDWIDTH: f64 = 1_000_000.0;

/// Chrome's transport-cc feedback interval at the bitrates here: 5 % of the bitrate for its
/// 68-byte feedback packets, but never more often than every 50 ms.
const TWCC_FEEDBACK_INTERVAL: gst::ClockTime = gst::ClockTime::from_mseconds(50);

/// Receiver reports once a second, as browsers send them, rather than rtpsession's default
/// minimum of 5 s: the box tunes Opus FEC from them. Transport-cc feedback as Chrome paces it.
///
/// The minimum alone is not enough. Under AVPF, rtpsession reschedules a regular report to
/// one RTCP-bandwidth interval after the last RTCP packet of any kind, and the TWCC feedback
/// (plus NACKs under loss) goes out as early packets about every frame. With the default 5 %
/// of the stream's bitrate for RTCP, that interval (~0.1 s at 500 kbit/s) is longer than the gaps between
/// them, so regular reports only slipped through every 2–3 s, and some sessions sent none for
/// 10 s. With an RTCP bandwidth no stream here reaches, that interval is a few milliseconds
/// and `rtcp-min-interval` alone spaces the reports.
///
/// That bandwidth would let the transport-cc feedback leave with every video frame (30 a
/// second, 50 % more RTCP for the box to take in than from a browser); it leaves every
/// [`TWCC_FEEDBACK_INTERVAL`] instead.
fn rtcp_as_browsers_send_it(webrtcbin: &gst::Element) {
    let Some(rtpbin) = webrtcbin
        .downcast_ref::<gst::Bin>()
        .and_then(|b| b.by_name("rtpbin"))
    else {
        return;
    };
    if let Some(session) = rtpbin.emit_by_name::<Option<gst::Element>>("get-session", &[&0u32]) {
        session.set_property("rtcp-min-interval", gst::ClockTime::SECOND.nseconds());
        session.set_property("rtcp-fraction", UNBOUNDED_RTCP_BANDWIDTH);
        session
            .property::<glib::Object>("internal-session")
            .set_property("twcc-feedback-interval", TWCC_FEEDBACK_INTERVAL.nseconds());
    }
}
