//! What a healthy session leaves in the journal: the box streams the test description to a
//! real receiving webrtcbin and stops on SIGTERM. Nothing may be logged as an error, and the
//! RTP session must learn its send latency (before the box answered GStreamer's latency
//! message, it warned on every packet, ~85 lines a second). Asked by GStreamer's
//! `GST_DEBUG_DUMP_DOT_DIR`, it also leaves a graph of the running pipeline. The DTLS
//! certificate is made once, at start-up.

mod common;

use std::time::Duration;

use common::process::BoxProcess;
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_session_logs_no_error_and_no_per_packet_warning() {
    let mut server = start_server(loopback_ice()).await;
    let pipeline = repo_path("pipelines/test.pipeline");
    let dot_dir = tempfile::tempdir().unwrap();
    // Debug level, so that messages the box files as routine are still counted.
    let mut process = BoxProcess::streaming(
        &server.url(),
        &pipeline,
        &[
            ("AIRSYNC_LOG", "debug".into()),
            (
                "GST_DEBUG_DUMP_DOT_DIR",
                dot_dir.path().display().to_string(),
            ),
        ],
    );
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
    // The DTLS certificate was made once, on its own thread at start-up (`media::dtls`).
    assert_eq!(
        process.count_lines(|l| l.contains("DTLS certificate ready")),
        1,
        "{}",
        process.output()
    );

    let graphs: Vec<_> = std::fs::read_dir(dot_dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with("-airsync-connected.dot"))
        .collect();
    assert_eq!(
        graphs.len(),
        1,
        "one graph per connected session: {graphs:?}"
    );
    let graph = std::fs::read_to_string(&graphs[0]).unwrap();
    // The estimator is inside webrtcbin, where only the graph shows it.
    for element in ["GstWebRTCBin", "GstRtpGCCBwE", "GstX264Enc"] {
        assert!(graph.contains(element), "{element} not in the graph");
    }
}
