//! What a healthy session leaves in the journal: the box streams the test description to a
//! real receiving webrtcbin and stops on SIGTERM. Nothing may be logged as an error, and the
//! RTP session must learn its send latency (before the box answered GStreamer's latency
//! message, it warned on every packet, ~85 lines a second).

mod common;

use std::time::Duration;

use common::process::BoxProcess;
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_session_logs_no_error_and_no_per_packet_warning() {
    let mut server = start_server(loopback_ice()).await;
    let pipeline = repo_path("pipelines/test.pipeline");
    // Debug level, so that messages the box files as routine are still counted.
    let mut process =
        BoxProcess::streaming(&server.url(), &pipeline, &[("AIRSYNC_LOG", "debug".into())]);
    let received = server.next_session().await;
    let flowing = wait_for(Duration::from_secs(30), || received.video_frames() >= 90).await;
    assert!(flowing, "no video:\n{}", process.output());
    let status = process.stop_with_sigterm().await;
    assert_eq!(status.code(), Some(0), "{}", process.output());

    let unconfigured = process.count_lines(|l| l.contains("Can't determine running time"));
    let errors = process.count_lines(|l| l.contains(" ERROR "));
    println!("lines: {unconfigured} about an unknown send latency, {errors} errors");
    // One for the first packet, before the latency is redistributed; 90 frames are ~300 packets.
    assert!(
        unconfigured <= 3,
        "the RTP session never learned its latency ({unconfigured} warnings)"
    );
    assert_eq!(errors, 0, "{}", process.output());
}
