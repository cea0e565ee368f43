//! The protocol's side of a session: the offer out, the server's answer and candidates in.

use gst_webrtc::WebRTCSDPType;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::{Session, SessionError, MAX_PENDING_CANDIDATES};
use crate::media::liveness::PeerActivity;
use crate::media::{candidate, recovery, reports, sdp, MediaError};
use crate::metrics::Counters;
use crate::protocol::{Envelope, Signal};
use crate::secret::mask_sdp;

impl Session<'_> {
    pub(super) async fn on_negotiation_needed(&mut self) -> Result<(), SessionError> {
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
    pub(super) async fn handle_envelope(&mut self, envelope: Envelope) -> Result<(), SessionError> {
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

    pub(super) async fn handle_answer(&mut self, text: &str) -> Result<(), SessionError> {
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
        if !reports::send_each_second(self.webrtc.element()) {
            warn!("no RTP session to set the sender report interval on: reports every 2.5-7.5 s");
        }
        Counters::bump(&self.status.counters.answers_applied);
        info!(codecs = ?self.webrtc.remote_description().map(|d| sdp::codecs(&d)), "answer applied");
        for (mline, c) in std::mem::take(&mut self.pending_candidates) {
            self.webrtc.add_ice_candidate(mline, &c);
        }
        Ok(())
    }

    pub(super) fn handle_candidate(
        &mut self,
        c: String,
        sdp_mid: Option<String>,
        mline: Option<u32>,
    ) {
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
}
