//! The box streams through a UDP impairment relay to a receiving webrtcbin that sends TWCC
//! feedback: congestion control must bring the sent rate under a bottleneck and back up when
//! it lifts, and the picture must keep decoding under loss. Behaviour is asserted; the figures
//! (time to settle, queue delay, loss) are printed.

mod common;

use std::sync::Arc;
use std::time::Duration;

use airsync_streamer::config::{StreamArgs, VideoConfig};
use airsync_streamer::media::{congestion, retransmission};
use airsync_streamer::metrics::Counters;
use airsync_streamer::server::answerer::ReceivedMedia;
use tokio::time::Instant;

use common::relay::{Impairment, Relay};
use common::*;

const LIMIT_BPS: u64 = 500_000;
/// The test pipeline's Opus payload type: "sent video" is everything else (video, its
/// retransmissions, RTCP).
const OPUS_PT: u8 = 111;
/// The test pipeline's H.264 payload type: RTP of any other type than these two is RTX.
const VIDEO_PT: u8 = 106;
/// The test pipeline's Opus bitrate, bit/s.
const TEST_AUDIO_BPS: u32 = 64_000;
/// The test description's video source.
const TEST_SOURCE_LIVE: &str = "videotestsrc is-live=true";
const TEST_SOURCE: &str = "videotestsrc is-live=true pattern=ball";

struct Streaming {
    relay: Arc<Relay>,
    received: Arc<ReceivedMedia>,
    streamer: RunningBox,
    _server: ProtocolServer,
    _dir: tempfile::TempDir,
}

impl Streaming {
    /// Streams the test description with its video pattern set to `pattern` through a relay
    /// with `impairment`.
    async fn start(impairment: Impairment, pattern: &str) -> Streaming {
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
    async fn start_with(
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
        assert!(flowing, "no video through the relay");
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
    async fn watch(&self, period: Duration) -> (Duration, u64) {
        let end = Instant::now() + period;
        let mut last_count = self.received.video_frames();
        let mut last_change = Instant::now();
        let mut longest = Duration::ZERO;
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
            longest = longest.max(now - last_change);
            loss_percent = loss_percent.max(Counters::get(
                &self.streamer.status.counters.audio_expected_loss_percent,
            ));
        }
        (longest, loss_percent)
    }

    fn receiver_reports(&self) -> u64 {
        Counters::get(&self.streamer.status.counters.receiver_reports)
    }

    fn print_estimate(&self) {
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

    async fn stop(self) {
        self.streamer.stop().await;
    }
}

/// The sent video rate (kbit/s) in consecutive one-second windows from `from` to `to`.
fn rates(relay: &Relay, from: Instant, to: Instant) -> Vec<u64> {
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

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settles_under_a_bottleneck_keeps_decoding_and_climbs_back() {
    // Noise, like a camera in low light: the encoder always has more to send than the link
    // takes, so only congestion control keeps the rate down.
    let s = Streaming::start(
        Impairment::bottleneck(LIMIT_BPS, Duration::from_millis(200)),
        "snow",
    )
    .await;
    let t0 = Instant::now();

    // Phase 1: 500 kbit/s with a 200 ms queue. Watch 15 s: settle within 10 s, then hold.
    let settle_window = Duration::from_secs(10);
    let observe = Duration::from_secs(15);
    tokio::time::sleep_until(t0 + settle_window).await;
    let (freeze, _) = s.watch(observe - settle_window).await;
    let per_second = rates(&s.relay, t0, t0 + observe);
    let stats = s.relay.stats();
    // Settled: the first second from which every later one-second window is under the limit.
    let settled_at = per_second
        .iter()
        .rposition(|r| *r * 1000 > LIMIT_BPS)
        .map(|i| i + 1)
        .unwrap_or(0);
    let delays = stats.queue_delays_between(t0 + settle_window, t0 + observe);
    println!("bottleneck {} kbit/s, 200 ms queue:", LIMIT_BPS / 1000);
    println!("  sent video kbit/s per second: {per_second:?}");
    println!("  time to settle under the limit: {settled_at} s (from the first decoded frame)");
    println!(
        "  queue delay once settled: median {:?}, p95 {:?}, max {:?}",
        percentile(&delays, 0.5),
        percentile(&delays, 0.95),
        delays.last().copied().unwrap_or_default()
    );
    let settled = t0 + Duration::from_secs(settled_at as u64);
    println!(
        "  packets from the box {}, dropped at the queue {} ({} after settling), longest freeze once settled {:?}",
        stats.packets_in,
        stats.dropped_queue,
        stats.queue_drops.iter().filter(|t| **t >= settled).count(),
        freeze
    );
    s.print_estimate();
    assert!(
        Counters::get(&s.streamer.status.counters.bandwidth_estimates) > 0,
        "no bandwidth estimate: TWCC feedback does not reach rtpgccbwe"
    );
    assert!(
        settled_at <= settle_window.as_secs() as usize,
        "the sent rate did not settle under {} kbit/s within {settle_window:?}: {per_second:?}",
        LIMIT_BPS / 1000
    );
    assert!(
        freeze <= Duration::from_secs(1),
        "the picture froze for {freeze:?} once settled"
    );

    // Phase 2: the limit lifts; the rate must climb back well above it. It takes 16-20 s
    // here; the window is three times that, as a loaded CI machine slows the estimator's
    // feedback and the climb is behaviour, not a timing.
    s.relay.set_impairment(Impairment::default());
    let lifted = Instant::now();
    let target = LIMIT_BPS * 8 / 5;
    let mut climbed = None;
    while lifted.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = Instant::now();
        let rate = s
            .relay
            .stats()
            .rate_without(now - Duration::from_secs(1), now, Some(OPUS_PT));
        if rate as u64 > target {
            climbed = Some(lifted.elapsed());
            break;
        }
    }
    println!(
        "  limit lifted: sent video kbit/s per second {:?}",
        rates(&s.relay, lifted, Instant::now())
    );
    println!("  time to climb over {} kbit/s: {climbed:?}", target / 1000);
    s.print_estimate();
    let frames = s.received.video_frames();
    s.stop().await;
    assert!(
        climbed.is_some(),
        "the bitrate did not climb back over {} kbit/s",
        target / 1000
    );
    assert!(frames > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keeps_decoding_at_five_percent_loss() {
    let s = Streaming::start(
        Impairment {
            loss: 0.05,
            delay: Duration::from_millis(20),
            jitter: Duration::from_millis(5),
            ..Default::default()
        },
        "snow",
    )
    .await;
    let before = s.received.video_frames();
    let reports_before = s.receiver_reports();
    let watched = Duration::from_secs(10);
    let (freeze, loss_percent) = s.watch(watched).await;
    let decoded = s.received.video_frames() - before;
    let reports = s.receiver_reports() - reports_before;
    let stats = s.relay.stats();
    println!("5 % random loss, 20 ms delay, 5 ms jitter:");
    println!(
        "  packets from the box {}, lost {}, by payload type {:?}; packets back {}",
        stats.packets_in, stats.lost_random, stats.packets_by_pt, stats.packets_back
    );
    println!(
        "  frames decoded in {watched:?}: {decoded}, longest freeze {freeze:?}, highest opus packet-loss-percentage {loss_percent}, receiver reports {reports}"
    );
    s.print_estimate();
    s.stop().await;
    assert!(stats.lost_random > 0, "the relay lost nothing");
    assert!(
        decoded >= 150,
        "only {decoded} frames decoded in {watched:?} at 5 % loss"
    );
    assert!(freeze <= Duration::from_secs(1), "froze for {freeze:?}");
    // Retransmissions: RTP with a payload type other than Opus (111) and H.264 (106).
    let rtx: u64 = stats
        .packets_by_pt
        .iter()
        .filter(|(pt, _)| **pt != 106 && **pt != 111)
        .map(|(_, n)| n)
        .sum();
    assert!(
        rtx > 0,
        "no retransmission under loss: {:?}",
        stats.packets_by_pt
    );
    // Opus FEC follows the loss the receiver reports about the audio stream. The server's
    // answerer reports about once a second; a handful tells its scheduling apart from FEC.
    assert!(
        reports >= 6,
        "the receiver sent {reports} RTCP receiver reports in {watched:?}, not about one a second"
    );
    assert!(
        loss_percent > 0,
        "opus packet-loss-percentage never followed the reported loss"
    );
}

/// A simple scene (the test description's moving ball) encodes at full size in a fraction of
/// the link: the estimate of a sender that sends that little sinks with what it sends, but
/// the picture must not shrink for it (it did before the encoder's quantiser was read).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_simple_scene_keeps_its_size_under_a_bottleneck() {
    let s = Streaming::start(
        Impairment::bottleneck(LIMIT_BPS, Duration::from_millis(200)),
        "ball",
    )
    .await;
    let t0 = Instant::now();
    let watched = Duration::from_secs(20);
    let (freeze, _) = s.watch(watched).await;
    let per_second = rates(&s.relay, t0, t0 + watched);
    let c = &s.streamer.status.counters;
    let highest_level = Counters::get(&c.video_picture_level_max);
    println!(
        "simple scene, bottleneck {} kbit/s, 200 ms queue:",
        LIMIT_BPS / 1000
    );
    println!("  sent video kbit/s per second: {per_second:?}, longest freeze {freeze:?}");
    s.print_estimate();
    let estimates = Counters::get(&c.bandwidth_estimates);
    s.stop().await;
    assert!(estimates > 0, "no bandwidth estimate");
    assert_eq!(
        highest_level, 0,
        "the picture shrank though the scene needs a fraction of the link"
    );
    assert!(freeze <= Duration::from_secs(1), "froze for {freeze:?}");
}

/// A camera whose scene turns simple (noise, then a still room with a moving ball) while the
/// link stays narrow: the noise squeezes the encoder and the picture steps down; once the
/// scene needs few bits the encoder's quantiser falls and the picture must return to full
/// size. The video bitrate is capped under what steps the picture up on the estimate's rule
/// (1.5 times the step-down threshold): only the quantiser's rule can bring it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scene_turning_simple_returns_to_full_size_under_a_bottleneck() {
    // 15 s: the noise starts with the pipeline, and on a loaded machine the first picture
    // through the bottleneck can take seconds; the step down needs estimates while it lasts.
    const NOISE_FRAMES: u32 = 450;
    const MAX_KBPS: u32 = 400;
    let floor = airsync_streamer::config::VideoConfig::default().step_down_below;
    assert!(
        MAX_KBPS * 2 < floor * 3 && MAX_KBPS > floor,
        "the cap must step the picture down under the bottleneck but never up on its own"
    );
    const CAPS: &str = "video/x-raw,format=I420,width=640,height=480,framerate=30/1";
    // The noise lies over the ball until it ends; the compositor then shows the ball alone.
    let source = format!(
        "{TEST_SOURCE} ! {CAPS} ! mix.sink_0\n\
         {TEST_SOURCE_LIVE} pattern=snow num-buffers={NOISE_FRAMES} ! {CAPS} ! mix.sink_1\n\
         compositor name=mix sink_0::zorder=0 sink_1::zorder=1"
    );
    let s = Streaming::start_with(
        Impairment::bottleneck(LIMIT_BPS, Duration::from_millis(200)),
        TEST_SOURCE,
        &source,
        |a| a.video_max_bitrate = Some(MAX_KBPS),
    )
    .await;
    let t0 = Instant::now();
    let c = &s.streamer.status.counters;
    // The noise runs for NOISE_FRAMES from the pipeline's start, which is before the first
    // decoded frame (t0): the step down comes within that time, and the step up after it.
    let noise = Duration::from_secs((NOISE_FRAMES / 30).into());
    let stepped_down = wait_for(noise, || Counters::get(&c.video_picture_level) > 0).await;
    let stepped_down_at = t0.elapsed();
    println!(
        "scene turning simple, bottleneck {} kbit/s, 200 ms queue:",
        LIMIT_BPS / 1000
    );
    s.print_estimate();
    assert!(
        stepped_down,
        "the noise behind the bottleneck never stepped the picture down"
    );
    let back = wait_for(noise + Duration::from_secs(20), || {
        Counters::get(&c.video_picture_level) == 0
    })
    .await;
    let back_at = t0.elapsed();
    println!(
        "  from the first decoded frame: picture stepped down by {stepped_down_at:?}, back to full size at {back_at:?}"
    );
    s.print_estimate();
    // The receiver decodes the full-size picture, and keeps decoding.
    let frames = s.received.video_frames();
    let (freeze, _) = s.watch(Duration::from_secs(3)).await;
    let size = s.received.video_size();
    let decoded = s.received.video_frames() - frames;
    let per_second = rates(&s.relay, t0, Instant::now());
    println!("  sent video kbit/s per second: {per_second:?}");
    println!("  then: {decoded} frames decoded in 3 s at {size:?}, longest freeze {freeze:?}");
    let estimate_kbps = Counters::get(&c.bandwidth_estimate_bps) / 1000;
    s.stop().await;
    assert!(
        back,
        "the picture stayed small after the scene turned simple (estimate {estimate_kbps} kbit/s)"
    );
    assert!(decoded > 0, "no frame decoded after the step up");
    assert_eq!(
        size,
        Some((640, 480)),
        "the receiver does not decode the full size"
    );
    assert!(freeze <= Duration::from_secs(1), "froze for {freeze:?}");
}

/// The box starts above what the link carries, so the link drops hundreds of packets and the
/// receiver NACKs them all: the retransmissions must stay within the send estimate over each
/// window (the estimate only falls from its start value here), where answering every request
/// sent several times the video itself and kept the link overflowing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retransmissions_stay_within_the_estimate_when_the_start_overflows_the_link() {
    let criticals = criticals::gstreamer_criticals();
    let began = Instant::now();
    let s = Streaming::start(
        Impairment::bottleneck(LIMIT_BPS, Duration::from_millis(200)),
        "snow",
    )
    .await;
    let t0 = Instant::now();
    let frames = s.received.video_frames();
    let (freeze, _) = s.watch(Duration::from_secs(5)).await;
    let decoded = s.received.video_frames() - frames;
    let stats = s.relay.stats();
    let refused = Counters::get(&s.streamer.status.counters.retransmissions_refused);
    s.stop().await;
    let criticals = criticals::gstreamer_criticals() - criticals;

    let is_rtx = |pt: Option<u8>| pt.is_some_and(|pt| pt != VIDEO_PT && pt != OPUS_PT);
    let rtx: Vec<(Instant, u64)> = stats
        .arrivals
        .iter()
        .filter(|(_, _, pt)| is_rtx(*pt))
        .map(|(t, n, _)| (*t, u64::from(*n) * 8))
        .collect();
    let video_bits: u64 = stats
        .arrivals
        .iter()
        .filter(|(_, _, pt)| *pt == Some(VIDEO_PT))
        .map(|(_, n, _)| u64::from(*n) * 8)
        .sum();
    // The most retransmitted in any window, sliding over every arrival.
    let (mut peak, mut sum, mut first) = (0u64, 0u64, 0usize);
    for (t, bits) in &rtx {
        sum += bits;
        while *t - rtx[first].0 >= retransmission::WINDOW {
            sum -= rtx[first].1;
            first += 1;
        }
        peak = peak.max(sum);
    }
    let start_bps = congestion::estimate_for(VideoConfig::default().start_bitrate, TEST_AUDIO_BPS);
    let window_allowance = u64::from(start_bps) * retransmission::WINDOW.as_millis() as u64 / 1000;
    // The pacer may hold a window's retransmissions back into the next one; once the link has
    // pushed back it drains at 1.5x the estimate (vendor/README.md), and the estimate only falls
    // from its start here. Half as much again, and a few packets for the SRTP tag and the
    // transport-wide sequence number each packet carries on the wire, cover both.
    let bound = window_allowance * 3 / 2 + 4 * 1500 * 8;
    println!("start above a 500 kbit/s bottleneck, 200 ms queue:");
    println!(
        "  first decoded frame after {:?}; from the start to 5 s after it: retransmitted {} kbit beside {} kbit of video, refused {refused} requests, dropped at the queue {}",
        t0 - began,
        rtx.iter().map(|(_, b)| b).sum::<u64>() / 1000,
        video_bits / 1000,
        stats.dropped_queue
    );
    println!(
        "  most retransmitted in {:?}: {} kbit (the start estimate allows {} kbit); {decoded} frames decoded in the 5 s after the first, longest freeze {freeze:?}",
        retransmission::WINDOW,
        peak / 1000,
        window_allowance / 1000
    );
    assert!(refused > 0, "no retransmission request refused: the start overflowed the link, so the receiver asked for more than the estimate allows");
    assert!(
        peak <= bound,
        "retransmitted {} kbit within {:?}, over the {} kbit the estimate allows",
        peak / 1000,
        retransmission::WINDOW,
        window_allowance / 1000
    );
    assert!(decoded > 0, "no frame decoded in the 5 s after the first");
    // A refused request is an upstream event the box swallows; GStreamer 1.22 logs a CRITICAL
    // for each one swallowed the wrong way (media/retransmission.rs).
    assert_eq!(
        criticals, 0,
        "GStreamer logged {criticals} CRITICAL warnings while {refused} requests were refused (printed above)"
    );
}
