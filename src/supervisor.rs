//! Starts sessions, restarts them with back-off, owns shutdown.

use std::time::Duration;

use rand::Rng;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn, Instrument};

use crate::config::{Config, ReconnectConfig};
use crate::metrics::{Counters, Status};
use crate::session::{self, Phase, SessionError};

/// Capped exponential back-off with jitter, reset after a session that streamed long enough.
#[derive(Debug)]
pub struct Backoff {
    cfg: ReconnectConfig,
    next: Duration,
}

impl Backoff {
    pub fn new(cfg: ReconnectConfig) -> Self {
        Backoff {
            cfg,
            next: cfg.initial,
        }
    }

    /// The delay before the next attempt, given how long the last session streamed.
    pub fn next_delay(&mut self, streamed: Option<Duration>) -> Duration {
        if streamed.is_some_and(|s| s >= self.cfg.reset_after) {
            self.next = self.cfg.initial;
        }
        let base = self.next;
        self.next = (self.next * 2).min(self.cfg.max);
        // ±25 % jitter so a fleet of boxes does not reconnect in lock-step.
        let factor = rand::thread_rng().gen_range(0.75..=1.25);
        base.mul_f64(factor).min(self.cfg.max)
    }
}

/// Runs sessions until `shutdown` is cancelled. Returns only then.
pub async fn run(cfg: &Config, shutdown: CancellationToken, status: Arc<Status>) {
    // `main` starts it sooner; this is for the box run as a library (the tests).
    crate::media::dtls::prepare_certificate();
    let mut backoff = Backoff::new(cfg.reconnect);
    let mut attempt: u64 = 0;
    while !shutdown.is_cancelled() {
        attempt += 1;
        let session_id = cfg
            .signalling
            .session_id
            .clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let span = tracing::info_span!("session", session_id = %session_id, attempt);
        let result = session::run(cfg, session_id, shutdown.clone(), &status)
            .instrument(span.clone())
            .await;
        let streamed = match result {
            Ok(summary) => {
                span.in_scope(|| info!(streamed = ?summary.streamed, "session stopped"));
                break;
            }
            Err(failure) => {
                Counters::bump(&status.counters.sessions_failed);
                if let Ok(mut last) = status.last_error.lock() {
                    *last = Some(failure.error.to_string());
                }
                span.in_scope(|| match &failure.error {
                    SessionError::Media(e) => error!(reason = %e, "session failed"),
                    e => warn!(reason = %e, streamed = ?failure.streamed, "session ended"),
                });
                failure.streamed
            }
        };
        let delay = backoff.next_delay(streamed);
        info!(delay = ?delay, "starting a new session after back-off");
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(delay) => {}
        }
    }
    status.set_phase(Phase::Stopped);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_caps_and_resets() {
        let cfg = ReconnectConfig {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(30),
            reset_after: Duration::from_secs(60),
        };
        let mut b = Backoff::new(cfg);
        let mut bases = Vec::new();
        for _ in 0..10 {
            let d = b.next_delay(None);
            assert!(d <= cfg.max);
            bases.push(d);
        }
        assert!(bases[0] >= Duration::from_millis(375) && bases[0] <= Duration::from_millis(625));
        assert!(bases[3] >= Duration::from_secs(3) && bases[3] <= Duration::from_secs(5));
        assert!(bases[9] >= Duration::from_millis(22_500));
        // A session that streamed long enough resets the delay.
        let d = b.next_delay(Some(Duration::from_secs(61)));
        assert!(d <= Duration::from_millis(625), "{d:?}");
        // A short one does not.
        let d = b.next_delay(Some(Duration::from_secs(1)));
        assert!(d >= Duration::from_millis(750), "{d:?}");
    }
}
