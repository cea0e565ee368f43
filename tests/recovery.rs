//! A receiver that asks for a key frame gets an IDR: the request goes upstream from its
//! depayloader, its RTP session sends a PLI, the box's session turns it into a force-key-unit
//! event for x264enc. The box's encoder has no periodic key frames here, so only the request
//! can produce one.

mod common;

use std::time::Duration;

use airsync_streamer::metrics::Counters;
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_frame_on_request() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let description = std::fs::read_to_string(repo_path("pipelines/test.pipeline"))
        .unwrap()
        .replace(
            "key-int-max=60",
            "key-int-max=100000 option-string=scenecut=0",
        );
    assert!(description.contains("key-int-max=100000"));
    let pipeline = dir.path().join("no-periodic-idr.pipeline");
    std::fs::write(&pipeline, description).unwrap();

    let mut server = start_server(loopback_ice()).await;
    let cfg = box_config_with(&server.url(), |a| a.pipeline = Some(pipeline.clone()));
    let streamer = RunningBox::start(cfg);
    let received = server.next_session().await;
    let flowing = wait_for(Duration::from_secs(30), || {
        received.video_frames() >= 30 && !received.key_frames().is_empty()
    })
    .await;

    let mut latencies = Vec::new();
    let mut outcome = Ok(());
    if flowing {
        for round in 0..3 {
            // Quiet first: no key frame for a second, so the next one answers the request.
            let quiet = wait_for(Duration::from_secs(5), || {
                received
                    .key_frames()
                    .last()
                    .is_some_and(|t| t.elapsed() > Duration::from_secs(1))
            })
            .await;
            if !quiet {
                outcome = Err(format!("round {round}: key frames keep coming unasked"));
                break;
            }
            let before = received.key_frames().len();
            let asked = std::time::Instant::now();
            if !received.request_key_frame() {
                outcome = Err("the receiver has no depayloader to ask through".into());
                break;
            }
            let answered = wait_for(Duration::from_secs(2), || {
                received.key_frames().len() > before
            })
            .await;
            if !answered {
                outcome = Err(format!("round {round}: no IDR within 2 s of the request"));
                break;
            }
            latencies.push(received.key_frames()[before].duration_since(asked));
        }
    } else {
        outcome = Err("no video arrived".into());
    }
    println!(
        "key frame request -> IDR at the receiver: {latencies:?} (one frame interval at 30 fps: 33 ms)"
    );
    let counters = &streamer.status.counters;
    let answered = Counters::get(&counters.key_frames_answered);
    let frames_before = Counters::get(&counters.key_frame_answer_frames_max);
    println!(
        "request at the box's encoder -> key frame out of it: {answered} answered, longest {:.1} ms, last {:.1} ms \
         (the wait for the next captured frame, then its encoding; target: within one frame interval, 33 ms); \
         delta frames put out before the key frame: at most {frames_before} (1: a frame was being encoded)",
        Counters::get(&counters.key_frame_answer_max_us) as f64 / 1000.0,
        Counters::get(&counters.key_frame_answer_last_us) as f64 / 1000.0,
    );
    streamer.stop().await;
    outcome.unwrap();
    // The box's own request when the peer connected, and the three rounds.
    assert!(
        answered >= 4,
        "the encoder's key frame answers were not seen ({answered})"
    );
    // The key frame is the first frame the encoder began after the request: at most the one
    // frame already being encoded when the request came is put out before it.
    assert!(
        frames_before <= 1,
        "{frames_before} delta frames left the encoder between a request and its key frame"
    );
}
