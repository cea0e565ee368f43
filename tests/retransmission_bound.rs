//! Retransmissions when the start bitrate overflows a bottleneck. A binary of its own because
//! the test counts GStreamer's CRITICAL warnings, which GLib counts per process: beside another
//! test they could be that test's.

mod common;

use std::time::Duration;

use airsync_streamer::config::{AudioConfig, VideoConfig};
use airsync_streamer::media::{congestion, pipeline, retransmission};
use airsync_streamer::metrics::Counters;
use tokio::time::Instant;

use common::impaired::*;
use common::relay::Impairment;
use common::*;

/// The box starts above what the link carries, so the link drops hundreds of packets and the
/// receiver NACKs them all: the retransmissions must stay within the send estimate over each
/// window (the estimate only falls from its start value here), where answering every request
/// sent several times the video itself and kept the link overflowing; and refusing them must
/// not upset GStreamer.
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
    // The start estimate as the box computes it, from the Opus bitrate the description sets.
    let description = pipeline::load(&repo_path("pipelines/test.pipeline")).unwrap();
    let audio_bps = congestion::audio_bitrate(&description, &AudioConfig::default());
    let start_bps = congestion::estimate_for(VideoConfig::default().start_bitrate, audio_bps);
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
