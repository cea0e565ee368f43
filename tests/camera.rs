//! A camera unplugged while streaming and plugged back (issue 4, point 2): the twin of
//! `tests/devices.rs`, with the real `v4l2src` in the real binary. These machines have no
//! v4l2loopback or vivid, so the kernel driver is emulated by an LD_PRELOAD shim
//! (`tests/data/fake_v4l2.c`, see `common::fake_camera`) in the box process only; unplugged, it
//! answers as the kernel does for a USB camera that is gone, and v4l2src reports that itself.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::fake_camera::FakeCamera;
use common::process::BoxProcess;
use common::*;

const STREAM: Duration = Duration::from_secs(30);

/// `pipelines/test.pipeline`'s webrtcbin and audio, and `pipelines/camera.pipeline`'s video
/// branch capturing `device`.
fn description_with_camera(device: &Path) -> String {
    let test = std::fs::read_to_string(repo_path("pipelines/test.pipeline")).unwrap();
    let camera = std::fs::read_to_string(repo_path("pipelines/camera.pipeline")).unwrap();
    let audio: Vec<&str> = test
        .lines()
        .take_while(|l| !l.starts_with("videotestsrc"))
        .collect();
    let video: Vec<&str> = camera
        .lines()
        .skip_while(|l| !l.starts_with("v4l2src"))
        .collect();
    assert!(
        audio.len() < test.lines().count(),
        "no videotestsrc line in test.pipeline:\n{test}"
    );
    let first = video.first().copied().unwrap_or_default();
    assert!(
        first.contains("device=/dev/video0"),
        "no `v4l2src device=/dev/video0` line in camera.pipeline:\n{camera}"
    );
    let first = first.replace("/dev/video0", device.to_str().unwrap());
    let mut lines = audio;
    lines.push(&first);
    lines.extend(&video[1..]);
    lines.join("\n") + "\n"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn camera_unplugged_while_streaming_is_named_and_resumes() {
    let camera = FakeCamera::build();
    camera.plug();
    let device = camera.device().to_str().unwrap().to_owned();
    let dir = tempfile::tempdir().unwrap();
    let pipeline = dir.path().join("camera.pipeline");
    std::fs::write(&pipeline, description_with_camera(&camera.device())).unwrap();

    let mut server = start_server(loopback_ice()).await;
    let env = camera.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut process = BoxProcess::spawn(
        &[
            "--url",
            &server.url(),
            "--pipeline",
            pipeline.to_str().unwrap(),
            "--ice-address",
            LOOPBACK,
        ],
        &env,
    );

    // Session 1 streams the camera's video.
    let first = server.next_session().await;
    let flowing = wait_for(STREAM, || first.video_frames() >= 30).await;
    assert!(
        flowing,
        "session 1 did not stream (video {}):\n{}",
        first.video_frames(),
        process.output()
    );
    let first_ids = server.offered_session_ids();
    assert_eq!(first_ids.len(), 1, "{first_ids:?}");

    // Unplug: the session ends with one line naming the device.
    camera.unplug();
    let unplugged = Instant::now();
    let is_gone = |l: &str| l.contains(&device) && l.contains("is gone");
    let ended = wait_for(Duration::from_secs(10), || {
        process.count_lines(is_gone) >= 1
    })
    .await;
    assert!(
        ended,
        "no error naming {device} after the unplug:\n{}",
        process.output()
    );
    println!("unplug noticed after {:?}", unplugged.elapsed());

    // While it is absent, each retry fails fast with the device named, before connecting.
    let not_found = |l: &str| l.contains(&device) && l.contains("not found");
    let retried = wait_for(Duration::from_secs(15), || {
        process.count_lines(not_found) >= 2
    })
    .await;
    assert!(
        retried,
        "retries did not name {device}:\n{}",
        process.output()
    );
    assert_eq!(process.count_lines(is_gone), 1, "{}", process.output());
    assert!(
        server.sessions.try_recv().is_err(),
        "the box connected while the camera was missing"
    );
    assert!(
        process.wait_exit(Duration::ZERO).await.is_none(),
        "the box exited:\n{}",
        process.output()
    );

    // Plug back: a new session streams the camera again.
    camera.plug();
    let replugged = Instant::now();
    let second = server.next_session().await;
    let flowing = wait_for(STREAM, || second.video_frames() >= 30).await;
    assert!(
        flowing,
        "no video after the camera came back (video {}):\n{}",
        second.video_frames(),
        process.output()
    );
    println!(
        "streaming again {:?} after the camera came back",
        replugged.elapsed()
    );
    let ids = server.offered_session_ids();
    assert_eq!(ids.len(), 2, "one offer per connected session: {ids:?}");
    assert_ne!(ids[0], ids[1], "the new session has a new sessionId");

    let status = process.stop_with_sigterm().await;
    assert_eq!(status.code(), Some(0), "{}", process.output());
}
