//! Fault tests on loopback (issue 4): bad input from the server, sockets that drop, a server
//! that dies and comes back, an answer that never comes, a missing camera, a broken pipeline
//! description, SIGTERM. Each one checks the box survives, restarts with a new sessionId when
//! it must, and leaves no pipeline behind.

mod common;

use std::time::{Duration, Instant};

use airsync_streamer::config::Config;
use serde_json::json;

use common::fault_server::{Bridge, Conn, FaultServer, Offer, ToBox};
use common::process::BoxProcess;
use common::*;

const CONNECT: Duration = Duration::from_secs(20);
const STREAM: Duration = Duration::from_secs(30);

fn cfg_for(server: &FaultServer) -> Config {
    box_config(&server.url())
}

/// Waits until media from session `offer` flows: the box says Streaming and the answerer
/// decoded `frames` more video frames than it had.
async fn wait_streaming(running: &RunningBox, bridge: &Bridge, offer: &Offer, frames: u64) {
    let base = bridge.received.video_frames();
    let ok = wait_for(STREAM, || {
        running.is_streaming(&offer.session_id) && bridge.received.video_frames() >= base + frames
    })
    .await;
    running.report("waiting for media");
    assert!(
        ok,
        "session {} did not stream ({} video frames)",
        offer.session_id,
        bridge.received.video_frames()
    );
}

/// Bad input that must have no effect: sent once during negotiation and once while
/// streaming; the same session goes on streaming, nothing restarts, nothing leaks.
async fn survives(case: &str, junk: impl Fn(&Offer) -> Vec<ToBox>) {
    let mut server = FaultServer::start().await;
    let running = RunningBox::start(cfg_for(&server));
    let mut conn = server.next_conn(CONNECT).await;
    let offer = conn.offer(CONNECT).await;
    for frame in junk(&offer) {
        let _ = conn.sender().send(frame);
    }
    let bridge = conn.bridge(&loopback_ice());
    wait_streaming(&running, &bridge, &offer, 10).await;
    for frame in junk(&offer) {
        let _ = bridge.to_box.send(frame);
    }
    wait_streaming(&running, &bridge, &offer, 30).await;
    running.report(case);
    assert_eq!(
        running.counter(|c| &c.sessions_started),
        1,
        "{case}: restarted"
    );
    assert_eq!(
        running.counter(|c| &c.sessions_failed),
        0,
        "{case}: a session failed"
    );
    assert!(!bridge.state.is_gone(), "{case}: the socket closed");
    running.stop().await;
    let state = bridge.state.clone();
    bridge.finish().await;
    assert!(
        wait_for(Duration::from_secs(2), || state.is_gone()).await,
        "socket left open"
    );
    assert!(state.saw_close_frame(), "{case}: no close frame on stop");
}

fn text(v: serde_json::Value) -> ToBox {
    ToBox::Text(v.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_json_is_dropped() {
    survives("not JSON", |_| {
        vec![
            ToBox::Text("this is not json".into()),
            ToBox::Text("{\"sessionId\": ".into()),
            ToBox::Text(String::new()),
            ToBox::Text("[1,2,3]".into()),
        ]
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_frames_are_dropped() {
    survives("binary", |o| {
        vec![
            ToBox::Binary(vec![0, 159, 146, 150]),
            ToBox::Binary(
                json!({"sessionId": o.session_id, "type": "answer", "sdp": "x"})
                    .to_string()
                    .into_bytes(),
            ),
        ]
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_or_wrong_typed_fields_are_dropped() {
    survives("missing / wrong-typed fields", |o| {
        let id = o.session_id.as_str();
        vec![
            text(json!({"type": "candidate", "candidate": "candidate:1 1 udp 1 127.0.0.1 9 typ host"})),
            text(json!({"sessionId": id})),
            text(json!({"sessionId": 42, "type": "answer", "sdp": null, "candidate": null, "sdpMid": null, "sdpMLineIndex": null})),
            text(json!({"sessionId": id, "type": 7, "sdp": null, "candidate": null, "sdpMid": null, "sdpMLineIndex": null})),
            text(json!({"sessionId": id, "type": "candidate", "sdp": null, "candidate": 12, "sdpMid": null, "sdpMLineIndex": "zero"})),
            text(json!({"sessionId": id, "type": "candidate", "sdp": null, "candidate": "candidate:1 1 udp 1 127.0.0.1 9 typ host", "sdpMid": [1], "sdpMLineIndex": -1})),
            text(json!({"sessionId": id, "type": "answer", "sdp": {"v": 0}, "candidate": null, "sdpMid": null, "sdpMLineIndex": null})),
        ]
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_type_is_ignored() {
    survives("unknown type", |o| {
        vec![
            text(json!({"sessionId": o.session_id, "type": "bye", "sdp": null, "candidate": null, "sdpMid": null, "sdpMLineIndex": null})),
            text(json!({"sessionId": o.session_id, "type": "renegotiate", "sdp": "v=0", "candidate": null, "sdpMid": null, "sdpMLineIndex": null, "extra": true})),
        ]
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_session_id_is_dropped() {
    survives("wrong sessionId", |o| {
        let other = uuid::Uuid::new_v4().to_string();
        vec![
            text(json!({"sessionId": other, "type": "answer", "sdp": "v=0\r\n", "candidate": null, "sdpMid": null, "sdpMLineIndex": null})),
            text(json!({"sessionId": other, "type": "candidate", "sdp": null, "candidate": "candidate:1 1 udp 2130706431 127.0.0.1 9 typ host", "sdpMid": "0", "sdpMLineIndex": 0})),
            // An offer from the server, for the right session: the box is always the offerer.
            text(json!({"sessionId": o.session_id, "type": "offer", "sdp": o.sdp, "candidate": null, "sdpMid": null, "sdpMLineIndex": null})),
        ]
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unparseable_candidates_are_dropped() {
    survives("bad candidates", |o| {
        let cand = |c: &str, mid: serde_json::Value, index: serde_json::Value| {
            text(json!({"sessionId": o.session_id, "type": "candidate", "sdp": null, "candidate": c, "sdpMid": mid, "sdpMLineIndex": index}))
        };
        vec![
            cand("not a candidate", json!("0"), json!(0)),
            cand("candidate:1 1 udp", json!("0"), json!(0)),
            cand("candidate:1 1 udp notanumber 127.0.0.1 9 typ host", json!("0"), json!(0)),
            cand("candidate:1 1 udp 1 127.0.0.1 99999999 typ host", json!("0"), json!(0)),
            cand("candidate:1 1 udp 1 127.0.0.1 9 typ host", json!("nosuchmid"), json!(null)),
            cand("candidate:1 1 udp 1 127.0.0.1 9 typ host", json!(null), json!(7)),
            // Empty or null candidate: end of candidates, accepted quietly.
            cand("", json!(null), json!(null)),
        ]
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_messages_is_survived() {
    survives("flood", |o| {
        let mut frames = Vec::new();
        for i in 0..3000 {
            frames.push(text(json!({"sessionId": uuid::Uuid::new_v4().to_string(), "type": "candidate", "sdp": null, "candidate": format!("candidate:{i} 1 udp 1 127.0.0.1 9 typ host"), "sdpMid": "0", "sdpMLineIndex": 0})));
            frames.push(text(json!({"sessionId": o.session_id, "type": "flood", "sdp": null, "candidate": null, "sdpMid": null, "sdpMLineIndex": null})));
            frames.push(ToBox::Text(format!("junk {i}")));
        }
        frames
    })
    .await;
}

/// Faults that end the session: the box must come back with a new sessionId and stream.
async fn restarts(
    case: &str,
    cfg_tweak: impl FnOnce(&mut Config),
    fault: impl FnOnce(&Conn, &Offer),
) {
    let mut server = FaultServer::start().await;
    let mut cfg = cfg_for(&server);
    cfg_tweak(&mut cfg);
    let running = RunningBox::start(cfg);
    let mut first = server.next_conn(CONNECT).await;
    let offer = first.offer(CONNECT).await;
    let faulted = Instant::now();
    fault(&first, &offer);
    let mut second = server.next_conn(CONNECT).await;
    let offer2 = second.offer(CONNECT).await;
    println!(
        "{case}: new session offered {:?} after the fault",
        faulted.elapsed()
    );
    assert_ne!(
        offer.session_id, offer2.session_id,
        "{case}: sessionId reused"
    );
    assert!(
        wait_for(Duration::from_secs(5), || first.state.is_gone()).await,
        "{case}: the first socket was not closed"
    );
    let bridge = second.bridge(&loopback_ice());
    wait_streaming(&running, &bridge, &offer2, 10).await;
    running.report(case);
    assert_eq!(running.counter(|c| &c.sessions_started), 2, "{case}");
    assert_eq!(running.counter(|c| &c.sessions_failed), 1, "{case}");
    running.stop().await;
    bridge.finish().await;
}

fn answer(offer: &Offer, sdp: &str) -> serde_json::Value {
    json!({"sessionId": offer.session_id, "type": "answer", "sdp": sdp, "candidate": null, "sdpMid": null, "sdpMLineIndex": null})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answer_that_is_not_sdp_restarts() {
    restarts(
        "answer not SDP",
        |_| {},
        |conn, offer| {
            conn.send_json(&answer(offer, "this is not an SDP\r\nat all"));
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answer_with_mismatched_mlines_restarts() {
    let seed = std::fs::read_to_string(repo_path("tests/data/seed_answer.sdp")).unwrap();
    let two_mlines = seed[..seed.find("m=application").unwrap()].to_owned();
    restarts(
        "m-lines mismatch",
        |_| {},
        move |conn, offer| {
            conn.send_json(&answer(offer, &two_mlines));
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frame_over_the_size_limit_restarts() {
    restarts(
        "oversized frame",
        |_| {},
        |conn, offer| {
            let huge = "a".repeat(1024 * 1024 + 1);
            conn.send_json(&answer(offer, &huge));
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_dropped_during_negotiation_restarts() {
    restarts(
        "dropped during negotiation",
        |_| {},
        |conn, _| conn.drop_socket(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answer_that_never_comes_times_out_and_restarts() {
    restarts(
        "no answer",
        |cfg| cfg.signalling.answer_timeout = Duration::from_secs(1),
        |_, _| {},
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_killed_mid_stream_and_restarted() {
    let mut server = FaultServer::start().await;
    let running = RunningBox::start(cfg_for(&server));
    let (offer, bridge) = server.next_bridged(CONNECT).await;
    wait_streaming(&running, &bridge, &offer, 10).await;

    let killed = Instant::now();
    let addr = server.kill();
    // Down for a moment: the box's first reconnection attempts are refused.
    let refused = wait_for(Duration::from_secs(10), || {
        running.counter(|c| &c.sessions_failed) >= 2
    })
    .await;
    assert!(refused, "the box did not notice the server going away");
    let mut server = FaultServer::start_on(addr, None).await;
    let (offer2, bridge2) = server.next_bridged(CONNECT).await;
    assert_ne!(offer.session_id, offer2.session_id);
    wait_streaming(&running, &bridge2, &offer2, 10).await;
    println!(
        "streaming again {:?} after the kill (server restarted on {addr})",
        killed.elapsed()
    );
    running.report("server killed");
    running.stop().await;
    bridge.finish().await;
    bridge2.finish().await;
}

fn write_pipeline(dir: &std::path::Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

const MISSING_CAMERA: &str = "/dev/video-airsync-missing";

/// The test description plus a camera that is not there.
fn missing_camera_pipeline(dir: &std::path::Path) -> std::path::PathBuf {
    let test = std::fs::read_to_string(repo_path("pipelines/test.pipeline")).unwrap();
    let described = format!("{test}\nv4l2src device={MISSING_CAMERA} ! fakesink\n");
    write_pipeline(dir, "camera.pipeline", &described)
}

/// Waits (at most 20 s) for `count` error lines naming the missing camera.
async fn wait_camera_errors(process: &BoxProcess, count: usize) {
    let seen = wait_for(Duration::from_secs(20), || {
        process.count_lines(|l| l.contains(MISSING_CAMERA)) >= count
    })
    .await;
    assert!(
        seen,
        "not {count} errors naming {MISSING_CAMERA}:\n{}",
        process.output()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_camera_is_named_and_retried() {
    let dir = tempfile::tempdir().unwrap();
    let pipeline = missing_camera_pipeline(dir.path());
    let mut server = FaultServer::start().await;
    let mut process = BoxProcess::streaming(&server.url(), &pipeline, &[]);
    // Each attempt fails with a line naming the device; the box keeps trying.
    wait_camera_errors(&process, 2).await;
    assert!(
        server
            .try_next_conn(Duration::from_millis(10))
            .await
            .is_none(),
        "connected without a camera"
    );
    process.signal(libc::SIGTERM);
    let status = process.wait_exit(Duration::from_secs(5)).await;
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "{}",
        process.output()
    );
}

/// A stop in the first half-second lands while the DTLS certificate is still being made on
/// its own thread (the first session fails at once here, on the missing camera). The exit
/// must wait for it: OpenSSL's exit handler would free the locks under it (SIGSEGV). The
/// window is random, so the stop is tried a few times.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_while_the_certificate_is_made_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let pipeline = missing_camera_pipeline(dir.path());
    for round in 1..=8 {
        let mut process = BoxProcess::streaming("ws://127.0.0.1:9/box", &pipeline, &[]);
        wait_camera_errors(&process, 1).await;
        let stopped = Instant::now();
        process.signal(libc::SIGTERM);
        let status = process.wait_exit(Duration::from_secs(5)).await;
        println!(
            "round {round}: {status:?} {:?} after SIGTERM",
            stopped.elapsed()
        );
        assert_eq!(
            status.and_then(|s| s.code()),
            Some(0),
            "round {round}: {status:?}\n{}",
            process.output()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_pipeline_description_fails_fast_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let pipeline = write_pipeline(
        dir.path(),
        "broken.pipeline",
        "webrtcbin name=webrtc\nvideotestsrc ! x264enc ! webrtc.\naudiotestsrc ! opusenc bitrate=lots ! webrtc.\n",
    );
    let started = Instant::now();
    let mut process = BoxProcess::spawn(
        &[
            "--url",
            "ws://127.0.0.1:9/box",
            "--pipeline",
            pipeline.to_str().unwrap(),
        ],
        &[],
    );
    let status = process
        .wait_exit(Duration::from_secs(10))
        .await
        .expect("the box exits on a broken description");
    println!("exited with {status} after {:?}", started.elapsed());
    let output = process.output();
    assert!(!status.success(), "{output}");
    assert!(output.contains("broken.pipeline"), "{output}");
    assert!(output.contains("line 3"), "{output}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_cleanly_with_a_close_frame() {
    init_tracing();
    let mut server = FaultServer::start().await;
    let mut process =
        BoxProcess::streaming(&server.url(), &repo_path("pipelines/test.pipeline"), &[]);
    let (offer, bridge) = server.next_bridged(CONNECT).await;
    let flowing = bridge.decodes(10, STREAM).await;
    assert!(flowing, "no media before SIGTERM:\n{}", process.output());
    let status = process.stop_with_sigterm().await;
    assert_eq!(status.code(), Some(0), "{}", process.output());
    assert!(bridge.state.saw_close_frame(), "no close frame");
    let output = process.output();
    assert!(output.contains("SIGTERM"), "{output}");
    assert!(output.contains(&offer.session_id), "{output}");
    bridge.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_during_negotiation_is_prompt() {
    let mut server = FaultServer::start().await;
    let running = RunningBox::start(cfg_for(&server));
    let mut conn = server.next_conn(CONNECT).await;
    conn.offer(CONNECT).await;
    let asked = Instant::now();
    running.stop().await;
    println!(
        "stopped {:?} after the request, mid-negotiation",
        asked.elapsed()
    );
    assert!(
        wait_for(Duration::from_secs(2), || conn.state.saw_close_frame()).await,
        "no close frame"
    );
}

/// The receiving peer disappears without a word (its process gone, or the network): the
/// socket stays open, so only the media side can notice.
async fn peer_vanishes(case: &str, silence_timeout: Duration, expected_reason: &str) {
    let mut server = FaultServer::start().await;
    let mut cfg = cfg_for(&server);
    cfg.ice.disconnected_timeout = Duration::from_secs(2);
    cfg.ice.silence_timeout = silence_timeout;
    let running = RunningBox::start(cfg);
    let (offer, bridge) = server.next_bridged(CONNECT).await;
    wait_streaming(&running, &bridge, &offer, 10).await;
    let killed = Instant::now();
    bridge.kill_peer();
    let mut conn2 = server.next_conn(Duration::from_secs(90)).await;
    let offer2 = conn2.offer(CONNECT).await;
    let reason = running.status.last_error.lock().unwrap().clone();
    println!(
        "{case}: new session {:?} after the peer vanished; reason: {reason:?}",
        killed.elapsed()
    );
    assert!(
        reason
            .as_deref()
            .unwrap_or_default()
            .contains(expected_reason),
        "{case}: the session ended for another reason: {reason:?}"
    );
    assert_ne!(offer.session_id, offer2.session_id);
    let bridge2 = conn2.bridge(&loopback_ice());
    wait_streaming(&running, &bridge2, &offer2, 10).await;
    running.report(case);
    running.stop().await;
    bridge2.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_peer_counts_as_disconnected_and_restarts() {
    // No RTCP for 3 s → disconnected; disconnected for 2 s → a new session.
    peer_vanishes(
        "silent peer",
        Duration::from_secs(3),
        "nothing heard from the peer",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vanished_peer_fails_ice_and_restarts_without_the_silence_check() {
    // libnice's consent checks alone: the connection goes `failed` after about 50 s.
    peer_vanishes("failed peer", Duration::ZERO, "peer connection failed").await;
}
