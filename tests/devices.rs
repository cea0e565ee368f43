//! Capture devices that go away and come back (issue 4, point 2), with a real microphone: the
//! monitor of a PulseAudio null sink in a private daemon, captured by `pulsesrc`, which can be
//! unloaded and loaded again while the box streams. The camera's twin is `tests/camera.rs`.

mod common;

use std::time::{Duration, Instant};

use common::process::BoxProcess;
use common::pulse;
use common::*;

const STREAM: Duration = Duration::from_secs(30);

/// `pipelines/test.pipeline` with the microphone in place of `audiotestsrc`, captured as
/// `pipelines/camera.pipeline` captures ALSA: a leaky queue so the source never waits while
/// webrtcbin holds its input before the peer connects, then conversion to the caps that
/// follow (the null sink runs at 44.1 kHz).
fn description_with_microphone(server: &str, device: &str) -> String {
    let test = std::fs::read_to_string(repo_path("pipelines/test.pipeline")).unwrap();
    let mut replaced = false;
    let lines: Vec<String> = test
        .lines()
        .map(|line| {
            if line.starts_with("audiotestsrc") {
                replaced = true;
                format!(
                    "pulsesrc server={server} device={device} \
                     ! queue max-size-time=200000000 leaky=downstream \
                     ! audioconvert ! audioresample"
                )
            } else {
                line.to_owned()
            }
        })
        .collect();
    assert!(replaced, "no audiotestsrc line in test.pipeline:\n{test}");
    lines.join("\n") + "\n"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn microphone_unplugged_while_streaming_is_named_and_resumes() {
    let Some(pulse) = pulse::start_or_skip("microphone_unplugged_while_streaming") else {
        return;
    };
    let sink = "airsync_mic";
    let device = format!("{sink}.monitor");
    let module = pulse.load_null_sink(sink);
    let dir = tempfile::tempdir().unwrap();
    let pipeline = dir.path().join("microphone.pipeline");
    std::fs::write(
        &pipeline,
        description_with_microphone(&pulse.server(), &device),
    )
    .unwrap();

    let mut server = start_server(loopback_ice()).await;
    let env = pulse.env();
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

    // Session 1 streams video and the microphone's audio.
    let first = server.next_session().await;
    let flowing = wait_for(STREAM, || {
        first.video_frames() >= 30 && first.audio_buffers() >= 20
    })
    .await;
    assert!(
        flowing,
        "session 1 did not stream (video {}, audio {}):\n{}",
        first.video_frames(),
        first.audio_buffers(),
        process.output()
    );
    let first_ids = server.offered_session_ids();
    assert_eq!(first_ids.len(), 1, "{first_ids:?}");

    // Unplug: the session ends with one line naming the device.
    pulse.unload_module(module);
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
        "the box connected while the microphone was missing"
    );
    assert!(
        process.wait_exit(Duration::ZERO).await.is_none(),
        "the box exited:\n{}",
        process.output()
    );

    // Plug back: a new session streams video and audio again.
    pulse.load_null_sink(sink);
    let replugged = Instant::now();
    let second = server.next_session().await;
    let flowing = wait_for(STREAM, || {
        second.video_frames() >= 30 && second.audio_buffers() >= 20
    })
    .await;
    assert!(
        flowing,
        "no media after the microphone came back (video {}, audio {}):\n{}",
        second.video_frames(),
        second.audio_buffers(),
        process.output()
    );
    println!(
        "streaming again {:?} after the microphone came back",
        replugged.elapsed()
    );
    let ids = server.offered_session_ids();
    assert_eq!(ids.len(), 2, "one offer per connected session: {ids:?}");
    assert_ne!(ids[0], ids[1], "the new session has a new sessionId");

    let status = process.stop_with_sigterm().await;
    assert_eq!(status.code(), Some(0), "{}", process.output());
}
