//! Whether the peer is still there. libnice 0.1.21 never reports an ICE connection as
//! `disconnected`: a peer that vanishes is only noticed when its consent checks fail, about
//! 50 s later. Every WebRTC receiver sends RTCP (browsers about once a second, GStreamer at
//! most every 7.5 s by default, TWCC feedback far more often), so a peer unheard for longer
//! than that is as good as disconnected.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use gst::prelude::*;

/// When the peer's last RTCP packet arrived, shared with the RTP session's signal handler.
#[derive(Debug, Clone)]
pub struct PeerActivity {
    /// Milliseconds after [`epoch`] of the last packet; 0 while none came.
    last_heard_ms: Arc<AtomicU64>,
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn millis_since_epoch(t: Instant) -> u64 {
    // +1 keeps a packet heard at the epoch itself apart from "never".
    t.saturating_duration_since(epoch()).as_millis() as u64 + 1
}

impl PeerActivity {
    /// Counts RTCP from the RTP session inside `webrtcbin`; `None` while the session does not
    /// exist yet (before the answer).
    pub fn watch(webrtcbin: &gst::Element) -> Option<PeerActivity> {
        let session = super::recovery::rtp_session(webrtcbin)?;
        let activity = PeerActivity::default();
        let stamp = activity.clone();
        session.connect("on-receiving-rtcp", false, move |_| {
            stamp.heard(Instant::now());
            None
        });
        Some(activity)
    }

    pub fn heard(&self, at: Instant) {
        self.last_heard_ms
            .fetch_max(millis_since_epoch(at), Ordering::Relaxed);
    }

    /// How long the peer has been silent at `now`, counting from `since` (when the connection
    /// came up) if nothing was heard after it.
    pub fn silent_for(&self, since: Instant, now: Instant) -> Duration {
        let heard = self.last_heard_ms.load(Ordering::Relaxed);
        let last = heard.max(millis_since_epoch(since));
        Duration::from_millis(millis_since_epoch(now).saturating_sub(last))
    }
}

impl Default for PeerActivity {
    fn default() -> Self {
        epoch();
        PeerActivity {
            last_heard_ms: Arc::new(AtomicU64::new(0)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silence_counts_from_the_connection_until_the_peer_is_heard() {
        let activity = PeerActivity::default();
        let up = Instant::now();
        let s = |ms| up + Duration::from_millis(ms);
        assert_eq!(activity.silent_for(up, s(3000)), Duration::from_secs(3));
        activity.heard(s(2500));
        assert_eq!(activity.silent_for(up, s(3000)), Duration::from_millis(500));
        // A late-arriving older stamp does not move the last one back.
        activity.heard(s(1000));
        assert_eq!(activity.silent_for(up, s(3000)), Duration::from_millis(500));
    }
}
