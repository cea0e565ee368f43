//! One negotiation: one sessionId, one pipeline, one socket. A single `select!` loop owns all
//! of the session's state; it is the only caller of webrtcbin actions and the only writer to
//! the socket, so candidates keep their order. Its handlers live beside it: `negotiation.rs`
//! (the offer, the server's answer and candidates), `events.rs` (webrtcbin's signals, the bus,
//! the peer's liveness).

use std::path::Path;
use std::time::Duration;

use futures::StreamExt;
use gst::prelude::*;
use gst_sdp::SDPMessage;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::config::Config;
use crate::media::congestion::{self, RateControl, SendEstimate};
use crate::media::liveness::PeerActivity;
use crate::media::recovery::{self, AudioLoss};
use crate::media::{self, MediaError, MediaEvent, PipelineGuard, WebRtc};
use crate::metrics::{Counters, Status};
use crate::protocol::{Envelope, Signal};
use crate::signalling::{self, Incoming, SignallingError, SignallingHandle};

mod events;
mod negotiation;

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
    let estimate = SendEstimate::default();
    media::retransmission::configure(guard.pipeline(), &estimate, tx);
    let bin = media::pipeline::find_webrtcbin(guard.pipeline(), &cfg.pipeline.webrtcbin, path)?;
    let webrtc = WebRtc::new(bin);
    webrtc.configure_ice(&cfg.ice)?;
    webrtc.configure_sender()?;
    let encoder = media::recovery::video_encoder(guard.pipeline(), &cfg.video);
    media::gate::drop_until_connected(webrtc.element(), encoder.as_ref(), tx);
    webrtc.connect_signals(tx);
    if cfg.video.congestion_control {
        let audio_bps = congestion::audio_bitrate(guard.pipeline(), &cfg.audio);
        congestion::attach_estimator(&webrtc, &cfg.video, audio_bps, &estimate, tx);
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
