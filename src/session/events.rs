//! What a session hears from its media: webrtcbin's signals, the pipeline's bus, and the
//! peer's silence.

use gst::prelude::*;
use gst_webrtc::{WebRTCICEConnectionState, WebRTCPeerConnectionState};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::{Phase, Session, SessionError};
use crate::media::{self, candidate, sdp, MediaError, MediaEvent};
use crate::metrics::Counters;
use crate::protocol::{self, Signal};

impl Session<'_> {
    pub(super) async fn on_media_event(&mut self, event: MediaEvent) -> Result<(), SessionError> {
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
                                // GStreamer's convention: a graph of the running pipeline
                                // when GST_DEBUG_DUMP_DOT_DIR is set, nothing otherwise.
                                guard.pipeline().debug_to_dot_file_with_ts(
                                    gst::DebugGraphDetails::all(),
                                    "airsync-connected",
                                );
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
                    Counters::raise(&counters.video_picture_level_max, rate.level() as u64);
                    if let Some(qp) = rate.quantiser() {
                        Counters::set(&counters.video_quantiser, qp.round() as u64);
                    }
                }
            }
            MediaEvent::EstimatorMissing(e) => {
                warn!(error = %e, "no rtpgccbwe: the video bitrate stays fixed");
            }
            MediaEvent::ReportBlocks(blocks) => self.on_report_blocks(&blocks),
            MediaEvent::KeyFrameAnswered(answer) => {
                debug!(?answer, "key frame out of the encoder after the request");
                let counters = &self.status.counters;
                let us = |d: std::time::Duration| d.as_micros() as u64;
                Counters::bump(&counters.key_frames_answered);
                Counters::set(&counters.key_frame_answer_last_us, us(answer.after));
                Counters::raise(&counters.key_frame_answer_max_us, us(answer.after));
                Counters::raise(
                    &counters.key_frame_answer_frames_max,
                    answer.frames_before.into(),
                );
            }
            MediaEvent::RetransmissionRefused => {
                Counters::bump(&self.status.counters.retransmissions_refused);
            }
            MediaEvent::HeldBack {
                buffers,
                key_frame_requested,
            } => {
                debug!(
                    buffers,
                    key_frame_requested,
                    "peer connected: the media captured before was dropped, a key frame asked for"
                );
                Counters::add(
                    &self.status.counters.buffers_dropped_before_connected,
                    buffers,
                );
            }
        }
        Ok(())
    }

    /// Opus FEC follows the loss the receiver's RTCP reports show about the audio.
    pub(super) fn on_report_blocks(&mut self, blocks: &[(u32, f64)]) {
        tracing::trace!(?blocks, "receiver report blocks");
        Counters::bump(&self.status.counters.receiver_reports);
        let now = std::time::Instant::now();
        if let Some(percent) = self.audio_loss.on_report_blocks(blocks, now) {
            Counters::set(
                &self.status.counters.audio_expected_loss_percent,
                percent as u64,
            );
        }
    }

    /// A connected peer that sends no RTCP for `ice.silence_timeout` counts as disconnected
    /// (see `media::liveness`); hearing from it again ends that.
    pub(super) fn check_peer_silence(&mut self) {
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

    pub(super) fn on_bus_message(&mut self, msg: &gst::Message) -> Result<(), SessionError> {
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
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

fn candidate_kind(c: &str) -> String {
    candidate::parse(c)
        .map(|p| p.kind.to_string())
        .unwrap_or_else(|_| "?".into())
}
