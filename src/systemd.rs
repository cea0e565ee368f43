//! The systemd notification protocol (`Type=notify`): READY once the first pipeline is built,
//! a STATUS line on each phase change, WATCHDOG while the supervisor makes progress, STOPPING
//! on shutdown. Without `$NOTIFY_SOCKET` (not run by systemd) every message is a no-op.

use std::sync::Arc;
use std::time::Duration;

use sd_notify::NotifyState;
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::config::Config;
use crate::metrics::{Counters, Status};
use crate::session::Phase;

fn notify(states: &[NotifyState]) {
    // Unsetting the variable would hide the socket from later messages; children inherit it
    // harmlessly since the box starts none.
    if let Err(e) = sd_notify::notify(false, states) {
        debug!(error = %e, "sd_notify failed");
    }
}

/// Tells systemd the service is stopping; sent as soon as a stop signal arrives.
pub fn stopping() {
    notify(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

/// The watchdog interval systemd expects (`WatchdogSec=`), if it set one for this process.
pub fn watchdog_interval() -> Option<Duration> {
    let mut usec = 0;
    if sd_notify::watchdog_enabled(false, &mut usec) {
        return Some(Duration::from_micros(usec));
    }
    // sd_watchdog_enabled(3): without WATCHDOG_PID the watchdog is meant for whoever reads it.
    if std::env::var_os("WATCHDOG_PID").is_some() {
        return None;
    }
    std::env::var("WATCHDOG_USEC")
        .ok()?
        .parse::<u64>()
        .ok()
        .filter(|&u| u > 0)
        .map(Duration::from_micros)
}

/// How long any phase but `Streaming` may last before the box counts as stuck: the longest a
/// healthy attempt can take (connect, wait for the answer, back off) plus a margin.
pub fn stall_limit(cfg: &Config) -> Duration {
    cfg.signalling.connect_timeout
        + cfg.signalling.answer_timeout
        + cfg.ice.disconnected_timeout
        + cfg.reconnect.max
        + Duration::from_secs(30)
}

/// The STATUS line for a phase: what `systemctl status` shows.
pub fn status_line(phase: &Phase, status: &Status) -> String {
    let c = &status.counters;
    let sessions = format!(
        "{} sessions, {} failed",
        Counters::get(&c.sessions_started),
        Counters::get(&c.sessions_failed)
    );
    let last_error = status
        .last_error
        .lock()
        .ok()
        .and_then(|e| e.clone())
        .map(|e| format!("; last error: {e}"))
        .unwrap_or_default();
    match phase {
        Phase::Starting => format!("starting a session ({sessions}{last_error})"),
        Phase::Connecting => {
            format!("connecting to the signalling server ({sessions}{last_error})")
        }
        Phase::Negotiating { session_id } => {
            format!("negotiating session {session_id} ({sessions})")
        }
        Phase::Streaming { session_id } => format!("streaming session {session_id} ({sessions})"),
        Phase::Stopped => "stopped".to_owned(),
    }
}

/// The watchdog is fed while the box streams, or while its current phase is younger than the
/// stall limit: a box stuck connecting or negotiating for longer lets systemd restart it.
fn feeds_watchdog(phase: &Phase, in_phase_for: Duration, stall_limit: Duration) -> bool {
    matches!(phase, Phase::Streaming { .. }) || in_phase_for < stall_limit
}

/// Follows `status.phase` until it reaches `Stopped`, notifying systemd along the way.
pub async fn run(status: Arc<Status>, stall_limit: Duration) {
    let mut phases = status.phase.subscribe();
    let watchdog = watchdog_interval();
    // systemd advises pinging at half the interval.
    let mut tick =
        tokio::time::interval(watchdog.map(|w| w / 2).unwrap_or(Duration::from_secs(3600)));
    let mut ready = false;
    let mut changed_at = Instant::now();
    let mut phase = phases.borrow_and_update().clone();
    let mut starved = false;
    loop {
        if phase == Phase::Stopped {
            return;
        }
        let line = status_line(&phase, &status);
        // The first pipeline is built once a session reaches `Connecting`.
        if !ready && !matches!(phase, Phase::Starting) {
            ready = true;
            notify(&[NotifyState::Ready, NotifyState::Status(&line)]);
        } else {
            notify(&[NotifyState::Status(&line)]);
        }
        loop {
            tokio::select! {
                changed = phases.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    phase = phases.borrow_and_update().clone();
                    changed_at = Instant::now();
                    break;
                }
                _ = tick.tick(), if watchdog.is_some() => {
                    if feeds_watchdog(&phase, changed_at.elapsed(), stall_limit) {
                        starved = false;
                        notify(&[NotifyState::Watchdog]);
                    } else if !starved {
                        starved = true;
                        warn!(?phase, stuck_for = ?changed_at.elapsed(), "no progress: no longer feeding the systemd watchdog");
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watchdog_starves_only_when_a_phase_outlives_the_stall_limit() {
        let limit = Duration::from_secs(60);
        let negotiating = Phase::Negotiating {
            session_id: "s".into(),
        };
        let streaming = Phase::Streaming {
            session_id: "s".into(),
        };
        assert!(feeds_watchdog(&negotiating, Duration::from_secs(59), limit));
        assert!(!feeds_watchdog(
            &negotiating,
            Duration::from_secs(61),
            limit
        ));
        assert!(!feeds_watchdog(
            &Phase::Connecting,
            Duration::from_secs(600),
            limit
        ));
        // Streaming for hours is health, not a stall.
        assert!(feeds_watchdog(
            &streaming,
            Duration::from_secs(36_000),
            limit
        ));
    }
}
