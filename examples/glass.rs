//! Glass-to-glass latency on loopback for `scripts/bench.sh`: the box's media set-up (the same
//! `build_media` the sessions use, so the same pacer and payloaders) streams to a receiving
//! webrtcbin in this process, negotiated directly. Each captured frame gets its capture time
//! written into its top luma rows; the receiver reads it back from the decoded frame.
//!
//! Usage: glass <pipeline file> [seconds]. The description's video source must be named `vsrc`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use airsync_streamer::config::{Config, FileConfig, IceConfig, StreamArgs};
use airsync_streamer::media::{sdp, MediaEvent};
use airsync_streamer::server::answerer::{Answerer, FrameHook};
use airsync_streamer::session;
use gst::prelude::*;
use gst_video::prelude::*;
use gst_webrtc::WebRTCSDPType;

const BITS: usize = 40;
const BLOCK: usize = 16;

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn now_us() -> u64 {
    epoch().elapsed().as_micros() as u64
}

fn stamp(buffer: &mut gst::BufferRef, info: &gst_video::VideoInfo) {
    let Ok(mut frame) = gst_video::VideoFrameRef::from_buffer_ref_writable(buffer, info) else {
        return;
    };
    let stride = frame.plane_stride()[0] as usize;
    let value = now_us();
    let Ok(y) = frame.plane_data_mut(0) else {
        return;
    };
    for bit in 0..BITS {
        let luma = if value >> bit & 1 == 1 { 235 } else { 16 };
        for row in 0..BLOCK {
            let start = row * stride + bit * BLOCK;
            y[start..start + BLOCK].fill(luma);
        }
    }
}

fn read_stamp(sample: &gst::Sample) -> Option<u64> {
    let info = gst_video::VideoInfo::from_caps(sample.caps()?).ok()?;
    let frame = gst_video::VideoFrameRef::from_buffer_ref_readable(sample.buffer()?, &info).ok()?;
    let stride = frame.plane_stride()[0] as usize;
    let y = frame.plane_data(0).ok()?;
    let mut value = 0u64;
    for bit in 0..BITS {
        let centre = (BLOCK / 2) * stride + bit * BLOCK + BLOCK / 2;
        if y[centre] > 128 {
            value |= 1 << bit;
        }
    }
    Some(value)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut argv = std::env::args().skip(1);
    let pipeline = PathBuf::from(argv.next().expect("usage: glass <pipeline file> [seconds]"));
    let seconds: u64 = argv.next().and_then(|s| s.parse().ok()).unwrap_or(10);
    let args = StreamArgs {
        url: Some("ws://127.0.0.1:9/unused".into()),
        pipeline: Some(pipeline),
        ice_addresses: vec!["127.0.0.1".parse().unwrap()],
        video_start_bitrate: Some(1500),
        video_max_bitrate: Some(1500),
        ..Default::default()
    };
    let cfg = Config::build(FileConfig::default(), Path::new("."), &args).unwrap();
    epoch();

    let (tx, mut events) = tokio::sync::mpsc::unbounded_channel();
    let (guard, webrtc, _channel) = session::build_media(&cfg, &tx).unwrap();
    let src = guard
        .pipeline()
        .by_name("vsrc")
        .expect("a video source named vsrc");
    src.static_pad("src")
        .unwrap()
        .add_probe(gst::PadProbeType::BUFFER, |pad, info| {
            let caps = pad.current_caps();
            let vinfo = caps.and_then(|c| gst_video::VideoInfo::from_caps(&c).ok());
            if let (Some(vinfo), Some(buffer)) = (vinfo, info.buffer_mut()) {
                stamp(buffer.make_mut(), &vinfo);
            }
            gst::PadProbeReturn::Ok
        });

    let ice = IceConfig {
        local_addresses: vec!["127.0.0.1".parse().unwrap()],
        ..Default::default()
    };
    let mut answerer = Answerer::new(&ice).unwrap();
    let latencies = Arc::new(Mutex::new(Vec::<(Instant, Duration)>::new()));
    let l = latencies.clone();
    let _ = answerer
        .received
        .on_video_frame
        .set(FrameHook(Box::new(move |sample| {
            let now = now_us();
            if let Some(stamped) = read_stamp(sample) {
                if stamped <= now && now - stamped < 10_000_000 {
                    l.lock()
                        .unwrap()
                        .push((Instant::now(), Duration::from_micros(now - stamped)));
                }
            }
        })));
    guard.pipeline().set_state(gst::State::Playing).unwrap();

    let end = tokio::time::Instant::now() + Duration::from_secs(seconds + 5);
    let mut offered = false;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(end) => break,
            Some(event) = events.recv() => match event {
                MediaEvent::NegotiationNeeded if !offered => {
                    offered = true;
                    let mut offer = webrtc.create_offer().await.unwrap();
                    sdp::shape_offer(&mut offer).unwrap();
                    webrtc.set_local(WebRTCSDPType::Offer, offer.clone()).await.unwrap();
                    let answer = answerer.answer(&offer.as_text().unwrap()).await.unwrap();
                    webrtc
                        .set_remote(WebRTCSDPType::Answer, sdp::parse(&answer).unwrap())
                        .await
                        .unwrap();
                }
                MediaEvent::LocalCandidate { mline, candidate } => {
                    answerer.add_candidate(mline, &candidate);
                }
                _ => {}
            },
            Some(event) = answerer.next_event() => {
                if let MediaEvent::LocalCandidate { candidate, .. } = event {
                    webrtc.add_ice_candidate(0, &candidate);
                }
            }
        }
    }
    let all = latencies.lock().unwrap().clone();
    // The first 2 s after the first frame are start-up; measure after.
    let start = all.first().map(|(t, _)| *t + Duration::from_secs(2));
    let mut d: Vec<Duration> = all
        .iter()
        .filter(|(t, _)| start.is_some_and(|s| *t >= s))
        .map(|(_, d)| *d)
        .collect();
    d.sort();
    let pct = |p: f64| {
        d.get(((d.len().max(1) - 1) as f64 * p).round() as usize)
            .map(|x| format!("{:.1}", x.as_secs_f64() * 1000.0))
            .unwrap_or_else(|| "?".into())
    };
    println!(
        "GLASS frames={} median_ms={} p95_ms={} max_ms={} decoded={}",
        d.len(),
        pct(0.5),
        pct(0.95),
        pct(1.0),
        answerer.received.video_frames()
    );
    drop(guard);
}
