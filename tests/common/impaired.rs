//! A box streaming the test description through the UDP impairment relay to the test
//! server's receiving webrtcbin, which sends TWCC feedback: what the bottleneck tests share.

use std::sync::Arc;
use std::time::Duration;

use airsync_streamer::config::StreamArgs;
use airsync_streamer::metrics::Counters;
use airsync_streamer::server::answerer::ReceivedMedia;
use tokio::time::Instant;

use super::relay::{Impairment, Relay};
use super::*;

/// The bottleneck's rate, bit/s: what Chrome is measured against in the issue.
pub const LIMIT_BPS: u64 = 500_000;
/// The test pipeline's Opus payload type: "sent video" is everything else (video, its
/// retransmissions, RTCP).
pub const OPUS_PT: u8 = 111;
/// The test pipeline's H.264 payload type: RTP of any other type than these two is RTX.
pub const VIDEO_PT: u8 = 106;
/// The test description's video source.
pub const TEST_SOURCE_LIVE: &str = "videotestsrc is-live=true";
pub const TEST_SOURCE: &str = "videotestsrc is-live=true pattern=ball";

pub struct Streaming {
    pub relay: Arc<Relay>,
    pub received: Arc<ReceivedMedia>,
    pub streamer: RunningBox,
    _server: ProtocolServer,
    _dir: tempfile::TempDir,
}

impl Streaming {
    /// Streams the test description with its video pattern set to `pattern` through a relay
    /// with `impairment`.
    pub async fn start(impairment: Impairment, pattern: &str) -> Streaming {
        Self::start_with(
            impairment,
            TEST_SOURCE,
            &format!("{TEST_SOURCE_LIVE} pattern={pattern}"),
            |_| {},
        )
        .await
    }

    /// Streams the test description with its video source `from` replaced by `to`, with the
    /// box's arguments adjusted by `tweak`.
    pub async fn start_with(
        impairment: Impairment,
        from: &str,
        to: &str,
        tweak: impl FnOnce(&mut StreamArgs),
    ) -> Streaming {
        init_tracing();
        let relay = Arc::new(Relay::start(impairment).await);
        let mut server = start_server_via(loopback_ice(), Some(relay.clone())).await;
        let dir = tempfile::tempdir().unwrap();
        let description = std::fs::read_to_string(repo_path("pipelines/test.pipeline")).unwrap();
        assert!(
            description.contains(from),
            "the test description has no `{from}`"
        );
        let description = description.replace(from, to);
        let pipeline = dir.path().join("test.pipeline");
        std::fs::write(&pipeline, description).unwrap();
        let cfg = box_config_with(&server.url(), |a| {
            a.pipeline = Some(pipeline.clone());
            tweak(a);
        });
        let streamer = RunningBox::start(cfg);
        let received = server.next_session().await;
        // The first key frames may not fit the bottleneck's queue until the estimate comes
        // down, so the first picture can take a while on a loaded machine.
        let flowing = wait_for(Duration::from_secs(60), || received.video_frames() > 0).await;
        if !flowing {
            // Says which step failed: the box's sessions, what crossed the relay, its last error.
            let c = &streamer.status.counters;
            let stats = relay.stats();
            panic!(
                "no video through the relay: box sessions started {}, failed {}, offers {}, \
                 answers {}; relay packets in {}, out {}, back {}, dropped at the queue {}; \
                 audio buffers at the receiver {}; box's last error: {:?}",
                Counters::get(&c.sessions_started),
                Counters::get(&c.sessions_failed),
                Counters::get(&c.offers_sent),
                Counters::get(&c.answers_applied),
                stats.packets_in,
                stats.packets_out,
                stats.packets_back,
                stats.dropped_queue,
                received.audio_buffers(),
                streamer.status.last_error.lock().unwrap(),
            );
        }
        Streaming {
            relay,
            received,
            streamer,
            _server: server,
            _dir: dir,
        }
    }

    /// Watches for `period`, returning the longest time without a new decoded frame and the
    /// highest Opus `packet-loss-percentage` seen.
    pub async fn watch(&self, period: Duration) -> (Duration, u64) {
        let end = Instant::now() + period;
        let mut last_count = self.received.video_frames();
        let mut last_change = Instant::now();
        let mut longest = Duration::ZERO;
        let mut longest_began = Duration::ZERO;
        let began = Instant::now();
        let mut loss_percent = 0;
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        while Instant::now() < end {
            tick.tick().await;
            let count = self.received.video_frames();
            let now = Instant::now();
            if count != last_count {
                last_count = count;
                last_change = now;
            }
            if now - last_change > longest {
                longest = now - last_change;
                longest_began = last_change - began;
            }
            loss_percent = loss_percent.max(Counters::get(
                &self.streamer.status.counters.audio_expected_loss_percent,
            ));
        }
        println!("  longest freeze {longest:?}, from {longest_began:?} into the watch");
        (longest, loss_percent)
    }

    pub fn receiver_reports(&self) -> u64 {
        Counters::get(&self.streamer.status.counters.receiver_reports)
    }

    pub fn print_estimate(&self) {
        let c = &self.streamer.status.counters;
        println!(
            "  estimates received {}, last estimate {} kbit/s, video encoder {} kbit/s, quantiser {}, picture level {} (highest {}), retransmission requests refused {}",
            Counters::get(&c.bandwidth_estimates),
            Counters::get(&c.bandwidth_estimate_bps) / 1000,
            Counters::get(&c.video_bitrate_kbps),
            Counters::get(&c.video_quantiser),
            Counters::get(&c.video_picture_level),
            Counters::get(&c.video_picture_level_max),
            Counters::get(&c.retransmissions_refused)
        );
    }

    pub async fn stop(self) {
        self.streamer.stop().await;
    }
}

/// The sent video rate (kbit/s) in consecutive one-second windows from `from` to `to`.
pub fn rates(relay: &Relay, from: Instant, to: Instant) -> Vec<u64> {
    let stats = relay.stats();
    let mut out = Vec::new();
    let mut t = from;
    while t + Duration::from_secs(1) <= to {
        let rate = stats.rate_without(t, t + Duration::from_secs(1), Some(OPUS_PT));
        out.push((rate / 1000.0) as u64);
        t += Duration::from_secs(1);
    }
    out
}

pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}
