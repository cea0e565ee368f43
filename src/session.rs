//! One negotiation: one sessionId, one pipeline, one socket. A single `select!` loop owns all
//! of the session's state; it is the only caller of webrtcbin actions and the only writer to
//! the socket, so candidates keep their order.

use std::path::Path;
use std::time::Duration;

use futures::StreamExt;
use gst::prelude::*;
use gst_sdp::SDPMessage;
use gst_webrtc::{WebRTCICEConnectionState, WebRTCPeerConnectionState, WebRTCSDPType};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::Config;
use crate::media::congestion::{self, RateControl};
use crate::media::liveness::PeerActivity;
use crate::media::recovery::{self, AudioLoss};
use crate::media::{self, candidate, sdp, MediaError, MediaEvent, PipelineGuard, WebRtc};
use crate::metrics::{Counters, Status};
use crate::protocol::{self, Envelope, Signal};
use crate::secret::mask_sdp;
use crate::signalling::{self, Incoming, SignallingError, SignallingHandle};

/// Where a session is, for logs, systemd STATUS and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    Starting,
    Connecting,
    Negotiating { session_id: String },
    Streaming { session_id: String },
    Stopped,
}

/// How many remote candidates are kept while the answer has not come: past this the peer is
/// flooding, and the extra ones are dropped.
const MAX_PENDING_CANDIDATES: usize = 512;
/// How long a stopping session waits for EOS to drain before forcing the pipeline down.
const EOS_GRACE: Duration = Duration::from_millis(700);

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    Media(#[from] MediaError),
    #[error(transparent)]
    Signalling(#[from] SignallingError),
    #[error("signalling socket closed: {0}")]
    SocketClosed(String),
    #[error("no answer within {0:?}")]
    AnswerTimeout(Duration),
    #[error("the server's answer is unusable: {0}")]
    BadAnswer(String),
    #[error("peer connection failed")]
    PeerFailed,
    #[error("peer connection disconnected for over {0:?}")]
    PeerDisconnected(Duration),
    #[error("peer connection disconnected: nothing heard from the peer (RTCP) for {0:?}")]
    PeerSilent(Duration),
    #[error("the peer closed the session ({0})")]
    PeerClosed(String),
    #[error("pipeline error from `{element}`: {message}")]
    Pipeline { element: String, message: String },
    #[error("the pipeline ended (EOS)")]
    Eos,
}

/// What a session that ended cleanly (asked to stop) reports.
#[derive(Debug)]
pub struct Summary {
    pub session_id: String,
    /// How long media flowed (connection state `connected`), if it did.
    pub streamed: Option<Duration>,
}

/// A session that ended on a fault: why, and how long it had streamed before.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct Failure {
    pub error: SessionError,
    pub streamed: Option<Duration>,
}

/// Runs one session until shutdown (Ok) or a fault (Err). Everything it created is dropped,
/// and the pipeline set to `Null`, before it returns.
pub async fn run(
    cfg: &Config,
    session_id: String,
    shutdown: CancellationToken,
    status: &Status,
) -> Result<Summary, Failure> {
    // Start-up (building the pipeline, connecting) is cut short by shutdown too; dropping the
    // half-built session sets its pipeline to `Null`.
    let started = tokio::select! {
        started = Session::start(cfg, session_id.clone(), status) => started,
        _ = shutdown.cancelled() => {
            return Ok(Summary { session_id, streamed: None });
        }
    };
    let mut session = match started {
        Ok(s) => s,
        Err(error) => {
            return Err(Failure {
                error,
                streamed: None,
            })
        }
    };
    let result = session.run(&shutdown).await;
    let streamed = session.connected_at.map(|t| t.elapsed());
    // EOS can only drain through a connected peer: before DTLS is up webrtcbin holds its input
    // pads blocked, and EOS (which waits for the source's streaming thread) would wait forever.
    let drain = result.is_ok() && session.connected_now;
    session.stop(drain).await;
    match result {
        Ok(()) => Ok(Summary {
            session_id: session.session_id,
            streamed,
        }),
        Err(error) => Err(Failure { error, streamed }),
    }
}

struct Session<'a> {
    cfg: &'a Config,
    status: &'a Status,
    session_id: String,
    guard: Option<PipelineGuard>,
    webrtc: WebRtc,
    channel: gst_webrtc::WebRTCDataChannel,
    events: mpsc::UnboundedReceiver<MediaEvent>,
    /// For handlers connected after start-up (the RTP session exists only once negotiated).
    events_tx: mpsc::UnboundedSender<MediaEvent>,
    signalling: Option<SignallingHandle>,
    offer: Option<SDPMessage>,
    answered: bool,
    pending_candidates: Vec<(u32, String)>,
    offer_sent_at: Option<Instant>,
    connected_at: Option<Instant>,
    connected_now: bool,
    disconnected_since: Option<Instant>,
    /// Whether `disconnected_since` was set by the peer's silence rather than by webrtcbin.
    silent: bool,
    activity: Option<PeerActivity>,
    rate: Option<RateControl>,
    audio_loss: AudioLoss,
}

/// Builds the pipeline and webrtcbin set-up for one session, not yet playing.
pub fn build_media(
    cfg: &Config,
    tx: &mpsc::UnboundedSender<MediaEvent>,
) -> Result<(PipelineGuard, WebRtc, gst_webrtc::WebRTCDataChannel), MediaError> {
    let path: &Path = &cfg.pipeline.file;
    let pipeline = media::pipeline::load(path)?;
    let guard = PipelineGuard::new(pipeline);
    media::devices::check(guard.pipeline())?;
    let bin = media::pipeline::find_webrtcbin(guard.pipeline(), &cfg.pipeline.webrtcbin, path)?;
    let webrtc = WebRtc::new(bin);
    webrtc.configure_ice(&cfg.ice)?;
    webrtc.configure_sender()?;
    webrtc.connect_signals(tx);
    if cfg.video.congestion_control {
        let audio_bps = congestion::audio_bitrate(guard.pipeline(), &cfg.audio);
        congestion::attach_estimator(&webrtc, &cfg.video, audio_bps, tx);
    }
    // webrtcbin refuses data channels while NULL ("closed"), and they must exist before PLAYING.
    if let Err(e) = guard.pipeline().set_state(gst::State::Ready) {
        let detail = first_bus_error(guard.pipeline())
            .map(|(element, message)| format!("`{element}`: {message}"))
            .unwrap_or_else(|| e.to_string());
        return Err(MediaError::StateChange(detail));
    }
    let channel = webrtc.create_data_channel(&cfg.pipeline.data_channel, tx)?;
    Ok((guard, webrtc, channel))
}

impl<'a> Session<'a> {
    async fn start(
        cfg: &'a Config,
        session_id: String,
        status: &'a Status,
    ) -> Result<Session<'a>, SessionError> {
        Counters::bump(&status.counters.sessions_started);
        status.set_phase(Phase::Starting);
        let (tx, events) = mpsc::unbounded_channel();
        let (mut guard, webrtc, channel) = build_media(cfg, &tx)?;
        guard.track(&status.pipelines_running, &status.pipelines_alive);
        let rate = cfg.video.congestion_control.then(|| {
            let audio_bps = congestion::audio_bitrate(guard.pipeline(), &cfg.audio);
            RateControl::new(guard.pipeline(), &cfg.video, audio_bps)
        });
        let audio_loss = AudioLoss::new(guard.pipeline(), &cfg.audio);
        if !recovery::time_key_frame_answers(guard.pipeline(), &cfg.video, &tx) {
            debug!(encoder = %cfg.video.encoder, "no video encoder of that name to time key frames on");
        }
        status.set_phase(Phase::Connecting);
        let signalling = signalling::connect(&cfg.signalling).await?;
        status.set_phase(Phase::Negotiating {
            session_id: session_id.clone(),
        });
        if let Err(e) = guard.pipeline().set_state(gst::State::Playing) {
            let detail = first_bus_error(guard.pipeline())
                .map(|(element, message)| format!("`{element}`: {message}"))
                .unwrap_or_else(|| e.to_string());
            return Err(MediaError::StateChange(detail).into());
        }
        Ok(Session {
            cfg,
            status,
            session_id,
            guard: Some(guard),
            webrtc,
            channel,
            events,
            events_tx: tx,
            signalling: Some(signalling),
            offer: None,
            answered: false,
            pending_candidates: Vec::new(),
            offer_sent_at: None,
            connected_at: None,
            connected_now: false,
            disconnected_since: None,
            silent: false,
            activity: None,
            rate,
            audio_loss,
        })
    }

    async fn run(&mut self, shutdown: &CancellationToken) -> Result<(), SessionError> {
        let bus = self
            .guard
            .as_ref()
            .and_then(|g| g.pipeline().bus())
            .expect("a pipeline has a bus");
        let mut bus_messages = bus.stream();
        let mut liveness_check = tokio::time::interval(Duration::from_secs(1));
        liveness_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let silence_checked = !self.cfg.ice.silence_timeout.is_zero();
        loop {
            let answer_deadline = self
                .offer_sent_at
                .filter(|_| !self.answered)
                .map(|t| t + self.cfg.signalling.answer_timeout);
            let disconnect_deadline = self
                .disconnected_since
                .map(|t| t + self.cfg.ice.disconnected_timeout);
            let signalling = self
                .signalling
                .as_mut()
                .expect("open until the session ends");
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                Some(event) = self.events.recv() => self.on_media_event(event).await?,
                incoming = signalling.inbound.recv() => match incoming {
                    Some(Incoming::Message(envelope)) => self.handle_envelope(envelope).await?,
                    Some(Incoming::Closed(reason)) => return Err(SessionError::SocketClosed(reason)),
                    None => return Err(SessionError::SocketClosed("socket task ended".into())),
                },
                Some(msg) = bus_messages.next() => self.on_bus_message(&msg)?,
                _ = liveness_check.tick(), if silence_checked && self.connected_now => {
                    self.check_peer_silence();
                }
                _ = sleep_until(answer_deadline) => {
                    return Err(SessionError::AnswerTimeout(self.cfg.signalling.answer_timeout));
                }
                _ = sleep_until(disconnect_deadline) => {
                    let ice = &self.cfg.ice;
                    return Err(if self.silent {
                        SessionError::PeerSilent(ice.silence_timeout + ice.disconnected_timeout)
                    } else {
                        SessionError::PeerDisconnected(ice.disconnected_timeout)
                    });
                }
            }
        }
    }

    /// A connected peer that sends no RTCP for `ice.silence_timeout` counts as disconnected
    /// (see `media::liveness`); hearing from it again ends that.
    fn check_peer_silence(&mut self) {
        let (Some(activity), Some(up)) = (&self.activity, self.connected_at) else {
            return;
        };
        let silent_for = activity.silent_for(up.into_std(), std::time::Instant::now());
        let limit = self.cfg.ice.silence_timeout;
        if silent_for >= limit && self.disconnected_since.is_none() {
            warn!(
                ?silent_for,
                restart_in = ?self.cfg.ice.disconnected_timeout,
                "nothing heard from the peer: counting the connection as disconnected"
            );
            self.silent = true;
            self.disconnected_since = Some(Instant::now());
        } else if silent_for < limit && self.silent {
            info!("the peer is heard again");
            self.silent = false;
            self.disconnected_since = None;
        }
    }

    async fn send(&mut self, signal: Signal) -> Result<(), SessionError> {
        let envelope = Envelope {
            session_id: self.session_id.clone(),
            signal,
        };
        let handle = self
            .signalling
            .as_ref()
            .expect("open until the session ends");
        handle
            .outbound
            .send(envelope)
            .await
            .map_err(|_| SessionError::SocketClosed("socket task ended".into()))
    }

    async fn on_media_event(&mut self, event: MediaEvent) -> Result<(), SessionError> {
        match event {
            MediaEvent::NegotiationNeeded => self.on_negotiation_needed().await?,
            MediaEvent::LocalCandidate { mline, candidate } => {
                let sdp_mid = self.offer.as_ref().and_then(|o| sdp::mid_of(o, mline));
                debug!(mline, kind = %candidate_kind(&candidate), "local candidate");
                self.send(Signal::Candidate {
                    candidate,
                    sdp_mid,
                    sdp_mline_index: Some(mline),
                })
                .await?;
                Counters::bump(&self.status.counters.local_candidates_sent);
            }
            MediaEvent::IceGatheringState(state) => {
                info!(?state, "ICE gathering");
                if state == gst_webrtc::WebRTCICEGatheringState::Complete {
                    self.send(Signal::EndOfCandidates).await?;
                }
            }
            MediaEvent::IceConnectionState(state) => {
                info!(?state, "ICE connection");
                if state == WebRTCICEConnectionState::Failed {
                    return Err(SessionError::PeerFailed);
                }
            }
            MediaEvent::ConnectionState(state) => {
                info!(?state, "peer connection");
                self.connected_now = state == WebRTCPeerConnectionState::Connected;
                match state {
                    WebRTCPeerConnectionState::Connected => {
                        if !self.silent {
                            self.disconnected_since = None;
                        }
                        if self.connected_at.is_none() {
                            self.connected_at = Some(Instant::now());
                            if let Some(guard) = &self.guard {
                                let sent =
                                    recovery::request_key_frame(guard.pipeline(), &self.cfg.video);
                                debug!(sent, "key frame requested for the new peer");
                            }
                            Counters::bump(&self.status.counters.sessions_streamed);
                            self.status.set_phase(Phase::Streaming {
                                session_id: self.session_id.clone(),
                            });
                            match self.webrtc.selected_pair().await {
                                Some(pair) => info!(%pair, "selected candidate pair"),
                                None => info!("selected candidate pair not in stats yet"),
                            }
                        }
                    }
                    WebRTCPeerConnectionState::Disconnected => {
                        self.disconnected_since.get_or_insert_with(Instant::now);
                    }
                    WebRTCPeerConnectionState::Failed => return Err(SessionError::PeerFailed),
                    WebRTCPeerConnectionState::Closed => {
                        return Err(SessionError::PeerClosed("connection closed".into()))
                    }
                    _ => {}
                }
            }
            MediaEvent::DataChannelOpen => {
                info!(label = %self.cfg.pipeline.data_channel, "data channel open");
                let hello = protocol::data_channel_hello(&self.session_id);
                if let Err(e) = self.channel.send_string_full(Some(&hello)) {
                    warn!(error = %e, "could not send on the data channel");
                }
            }
            MediaEvent::DataChannelMessage(text) => {
                Counters::bump(&self.status.counters.data_channel_messages_received);
                info!(bytes = text.len(), message = %truncate(&text, 200), "data channel message");
            }
            MediaEvent::DataChannelClosed => info!("data channel closed"),
            MediaEvent::DataChannelError(e) => warn!(error = %e, "data channel error"),
            MediaEvent::RemoteDataChannel(_) => {
                debug!("ignoring a data channel opened by the server");
            }
            MediaEvent::EstimatedBitrate(bps) => {
                let counters = &self.status.counters;
                Counters::bump(&counters.bandwidth_estimates);
                Counters::set(&counters.bandwidth_estimate_bps, bps.into());
                if let Some(rate) = &mut self.rate {
                    rate.on_estimate(bps);
                    Counters::set(&counters.video_bitrate_kbps, rate.video_kbps().into());
                    Counters::set(&counters.video_picture_level, rate.level() as u64);
                }
            }
            MediaEvent::EstimatorMissing(e) => {
                warn!(error = %e, "no rtpgccbwe: the video bitrate stays fixed");
            }
            MediaEvent::ReportBlocks(blocks) => self.on_report_blocks(&blocks),
            MediaEvent::KeyFrameAnswered(after) => {
                debug!(?after, "key frame out of the encoder after the request");
                let counters = &self.status.counters;
                let us = after.as_micros() as u64;
                Counters::bump(&counters.key_frames_answered);
                Counters::set(&counters.key_frame_answer_last_us, us);
                counters
                    .key_frame_answer_max_us
                    .fetch_max(us, std::sync::atomic::Ordering::Relaxed);
            }
        }
        Ok(())
    }

    /// Opus FEC follows the loss the receiver's RTCP reports show about the audio.
    fn on_report_blocks(&mut self, blocks: &[(u32, f64)]) {
        tracing::trace!(?blocks, "receiver report blocks");
        let now = std::time::Instant::now();
        if let Some(percent) = self.audio_loss.on_report_blocks(blocks, now) {
            Counters::set(
                &self.status.counters.audio_expected_loss_percent,
                percent as u64,
            );
        }
    }

    async fn on_negotiation_needed(&mut self) -> Result<(), SessionError> {
        if self.offer.is_some() {
            // The protocol has no renegotiation: one offer per session.
            debug!("negotiation-needed after the offer; ignored");
            return Ok(());
        }
        let mut offer = self.webrtc.create_offer().await?;
        if let Ok(raw) = offer.as_text() {
            debug!(sdp = %mask_sdp(&raw), "webrtcbin's offer, before shaping");
        }
        sdp::shape_offer(&mut offer).map_err(MediaError::from)?;
        self.webrtc
            .set_local(WebRTCSDPType::Offer, offer.clone())
            .await?;
        let text = offer
            .as_text()
            .map_err(|e| MediaError::webrtc("offer", e))?;
        debug!(sdp = %mask_sdp(&text), "local offer");
        self.audio_loss.set_audio_ssrcs(sdp::ssrcs_of(&offer, 0));
        self.offer = Some(offer);
        self.send(Signal::Offer { sdp: text }).await?;
        self.offer_sent_at = Some(Instant::now());
        Counters::bump(&self.status.counters.offers_sent);
        info!("offer sent");
        Ok(())
    }

    /// Peer input: anything wrong with it is logged here and dropped, or ends the session.
    async fn handle_envelope(&mut self, envelope: Envelope) -> Result<(), SessionError> {
        if envelope.session_id != self.session_id {
            Counters::bump(&self.status.counters.remote_messages_dropped);
            warn!(got = %envelope.session_id, "dropped a message for another session");
            return Ok(());
        }
        match envelope.signal {
            Signal::Answer { sdp } => self.handle_answer(&sdp).await,
            Signal::Candidate {
                candidate,
                sdp_mid,
                sdp_mline_index,
            } => {
                self.handle_candidate(candidate, sdp_mid, sdp_mline_index);
                Ok(())
            }
            Signal::EndOfCandidates => {
                debug!("server: end of candidates");
                Ok(())
            }
            Signal::Offer { .. } => {
                warn!("dropped an offer from the server: the box is always the offerer");
                Ok(())
            }
        }
    }

    async fn handle_answer(&mut self, text: &str) -> Result<(), SessionError> {
        if self.answered {
            warn!("dropped a second answer: renegotiation is not part of the protocol");
            return Ok(());
        }
        let Some(offer) = &self.offer else {
            warn!("dropped an answer that came before our offer");
            return Ok(());
        };
        let answer = sdp::parse(text).map_err(|e| SessionError::BadAnswer(e.to_string()))?;
        sdp::check_answer(offer, &answer).map_err(|e| SessionError::BadAnswer(e.to_string()))?;
        debug!(sdp = %mask_sdp(text), "remote answer");
        self.webrtc
            .set_remote(WebRTCSDPType::Answer, answer)
            .await
            .map_err(|e| SessionError::BadAnswer(e.to_string()))?;
        self.answered = true;
        self.activity = PeerActivity::watch(self.webrtc.element());
        if self.activity.is_none() {
            warn!("no RTP session to hear the peer's RTCP from: a silent peer goes unnoticed");
        }
        if self.audio_loss.is_active()
            && !recovery::watch_report_blocks(self.webrtc.element(), &self.events_tx)
        {
            warn!("no RTP session to read receiver reports from: Opus expected loss stays fixed");
        }
        Counters::bump(&self.status.counters.answers_applied);
        info!(codecs = ?self.webrtc.remote_description().map(|d| sdp::codecs(&d)), "answer applied");
        for (mline, c) in std::mem::take(&mut self.pending_candidates) {
            self.webrtc.add_ice_candidate(mline, &c);
        }
        Ok(())
    }

    fn handle_candidate(&mut self, c: String, sdp_mid: Option<String>, mline: Option<u32>) {
        let kind = match candidate::parse(&c) {
            Ok(parsed) => parsed.kind,
            Err(e) => {
                warn!(reason = %e, "dropped a remote candidate");
                return;
            }
        };
        let mline = mline.or_else(|| {
            let mid = sdp_mid.as_deref()?;
            self.offer.as_ref().and_then(|o| sdp::mline_of(o, mid))
        });
        let Some(mline) = mline else {
            warn!(
                ?sdp_mid,
                "dropped a remote candidate naming no known m-line"
            );
            return;
        };
        if mline >= 3 {
            warn!(
                mline,
                "dropped a remote candidate for an m-line the offer does not have"
            );
            return;
        }
        debug!(mline, %kind, "remote candidate");
        // With max-bundle every m-line shares the first one's transport (INTEROP.md point 13).
        Counters::bump(&self.status.counters.remote_candidates_added);
        if self.answered {
            self.webrtc.add_ice_candidate(0, &c);
        } else if self.pending_candidates.len() < MAX_PENDING_CANDIDATES {
            self.pending_candidates.push((0, c));
        } else {
            warn!("dropped a remote candidate: too many before the answer");
        }
    }

    fn on_bus_message(&mut self, msg: &gst::Message) -> Result<(), SessionError> {
        use gst::MessageView;
        match msg.view() {
            MessageView::Error(err) => {
                let element = msg
                    .src()
                    .map(|s| s.path_string().to_string())
                    .unwrap_or_default();
                let message = err.error().to_string();
                // A peer that goes away shows up as an SCTP error (INTEROP.md point 10).
                if element.contains("sctp") {
                    return Err(SessionError::PeerClosed(message));
                }
                let details = err.debug().map(|d| d.to_string()).unwrap_or_default();
                debug!(%element, %details, "pipeline error details");
                // An unplugged camera or microphone (or a PulseAudio source unloaded, or its
                // server gone) is a resource error from the capture element itself; naming the
                // device says what to fix. Its other errors (not-negotiated, say) are not that.
                if err.error().is::<gst::ResourceError>() {
                    if let Some(device) = msg
                        .src()
                        .and_then(|s| s.downcast_ref::<gst::Element>())
                        .and_then(media::devices::describe)
                    {
                        return Err(MediaError::DeviceLost {
                            device: Box::new(device),
                            reason: message,
                        }
                        .into());
                    }
                }
                Err(SessionError::Pipeline { element, message })
            }
            MessageView::Warning(w) => {
                let element = msg.src().map(|s| s.name().to_string()).unwrap_or_default();
                warn!(%element, warning = %w.error(), "pipeline warning");
                Ok(())
            }
            MessageView::Eos(_) => Err(SessionError::Eos),
            MessageView::Latency(_) => {
                // webrtcbin adds its RTP session and transport elements during negotiation,
                // after the pipeline distributed its latency; without a new distribution the
                // RTP session never learns its send latency and warns on every packet.
                if let Some(guard) = &self.guard {
                    if let Err(e) = guard.pipeline().recalculate_latency() {
                        debug!(error = %e, "latency recalculation failed");
                    }
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Tears the session down: EOS first when asked to drain (a stop on request while
    /// connected), so encoders flush, then the pipeline to `Null`, then the socket closed with a
    /// close frame.
    async fn stop(&mut self, drain: bool) {
        if let Some(guard) = self.guard.take() {
            if drain {
                // Sending EOS waits for the sources' streaming threads, so it runs on a
                // blocking thread with a deadline.
                let pipeline = guard.pipeline().clone();
                let eos = tokio::task::spawn_blocking(move || {
                    pipeline.send_event(gst::event::Eos::new());
                    if let Some(bus) = pipeline.bus() {
                        bus.timed_pop_filtered(
                            gst::ClockTime::from_mseconds(EOS_GRACE.as_millis() as u64),
                            &[gst::MessageType::Eos, gst::MessageType::Error],
                        );
                    }
                });
                if tokio::time::timeout(EOS_GRACE + Duration::from_millis(100), eos)
                    .await
                    .is_err()
                {
                    debug!("EOS did not drain in time; stopping the pipeline anyway");
                }
            }
            debug!("stopping: pipeline to Null");
            // Null flushes every pad, which releases webrtcbin's blocked input pads too.
            let _ = tokio::task::spawn_blocking(move || drop(guard)).await;
        }
        if let Some(handle) = self.signalling.take() {
            debug!("stopping: closing the socket");
            handle.close(Duration::from_millis(800)).await;
        }
        debug!("stopped");
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

fn candidate_kind(c: &str) -> String {
    candidate::parse(c)
        .map(|p| p.kind.to_string())
        .unwrap_or_else(|_| "?".into())
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// The first error already posted on the bus, for a state change that failed at once.
fn first_bus_error(pipeline: &gst::Pipeline) -> Option<(String, String)> {
    let bus = pipeline.bus()?;
    let msg = bus.pop_filtered(&[gst::MessageType::Error])?;
    let gst::MessageView::Error(err) = msg.view() else {
        return None;
    };
    Some((
        msg.src().map(|s| s.name().to_string()).unwrap_or_default(),
        err.error().to_string(),
    ))
}
