//! Capture devices that go away and come back (issue 4, point 2), with a real microphone: the
//! monitor of a PulseAudio null sink in a private daemon, captured by `pulsesrc`, which can be
//! unloaded and loaded again while the box streams. The camera's twin is `tests/camera.rs`.

mod common;

use common::process::BoxProcess;
use common::pulse;
use common::unplug::{unplug_and_replug, Device};
use common::*;

use airsync_streamer::server::answerer::ReceivedMedia;

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
    let mut process = BoxProcess::streaming(&server.url(), &pipeline, &pulse.env());

    let streams = |m: &ReceivedMedia| {
        (
            m.video_frames() >= 30 && m.audio_buffers() >= 20,
            format!("video {}, audio {}", m.video_frames(), m.audio_buffers()),
        )
    };
    let device = Device {
        what: "microphone",
        name: &device,
        streams: &streams,
    };
    unplug_and_replug(
        &mut server,
        &mut process,
        device,
        || pulse.unload_module(module),
        || {
            pulse.load_null_sink(sink);
        },
    )
    .await;
}
