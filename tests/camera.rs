//! A camera unplugged while streaming and plugged back (issue 4, point 2): the twin of
//! `tests/devices.rs`, with the real `v4l2src` in the real binary. These machines have no
//! v4l2loopback or vivid, so the kernel driver is emulated by an LD_PRELOAD shim
//! (`tests/data/fake_v4l2.c`, see `common::fake_camera`) in the box process only; unplugged, it
//! answers as the kernel does for a USB camera that is gone, and v4l2src reports that itself.

mod common;

use std::path::Path;

use common::fake_camera::FakeCamera;
use common::process::BoxProcess;
use common::unplug::{unplug_and_replug, Device};
use common::*;

use airsync_streamer::server::answerer::ReceivedMedia;

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
    let mut process = BoxProcess::streaming(&server.url(), &pipeline, &camera.env());

    let streams = |m: &ReceivedMedia| {
        (
            m.video_frames() >= 30,
            format!("video {}", m.video_frames()),
        )
    };
    let device = Device {
        what: "camera",
        name: &device,
        streams: &streams,
    };
    unplug_and_replug(
        &mut server,
        &mut process,
        device,
        || camera.unplug(),
        || camera.plug(),
    )
    .await;
}
