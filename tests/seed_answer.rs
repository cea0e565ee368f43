//! The seed's real server answer is accepted by webrtcbin as the answer to our offer.

mod common;

use std::time::Duration;

use airsync_streamer::media::{sdp, MediaEvent};
use airsync_streamer::session::build_media;
use gst::prelude::*;
use gst_webrtc::{WebRTCRTPTransceiverDirection, WebRTCSDPType};
use tokio::sync::mpsc;

use common::*;

const SEED_ANSWER: &str = include_str!("data/seed_answer.sdp");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webrtcbin_accepts_the_seed_answer() {
    init_tracing();
    // The URL is never dialled: only the media half of a session is built here.
    let cfg = box_config("ws://127.0.0.1:9/unused");
    let (tx, mut events) = mpsc::unbounded_channel();
    let (guard, webrtc, _channel) = build_media(&cfg, &tx).unwrap();
    guard.pipeline().set_state(gst::State::Playing).unwrap();

    let negotiate = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(e) = events.recv().await {
            if matches!(e, MediaEvent::NegotiationNeeded) {
                return;
            }
        }
    });
    negotiate.await.expect("on-negotiation-needed fires");
    let mut offer = webrtc.create_offer().await.unwrap();
    sdp::shape_offer(&mut offer).unwrap();
    webrtc
        .set_local(WebRTCSDPType::Offer, offer.clone())
        .await
        .unwrap();

    // What must differ between the seed's session and ours: the mids. The box names its
    // m-lines 0, 1, 2 like the seed's browser did, so the seed answer applies verbatim; its ICE
    // credentials and fingerprint are only used once connectivity checks start, which this test
    // does not need.
    for i in 0..3 {
        assert_eq!(sdp::mid_of(&offer, i), Some(i.to_string()));
    }
    let answer = sdp::parse(SEED_ANSWER).unwrap();
    sdp::check_answer(&offer, &answer).unwrap();
    webrtc
        .set_remote(WebRTCSDPType::Answer, answer)
        .await
        .expect("webrtcbin accepts the seed answer");

    let remote = webrtc.remote_description().expect("remote description set");
    assert_eq!(
        sdp::codecs(&remote),
        [
            ("audio".to_owned(), vec!["opus".to_owned()]),
            ("video".to_owned(), vec!["H264".to_owned()]),
            ("application".to_owned(), vec![]),
        ]
    );
    let video = remote.media(1).unwrap();
    assert!(video.attributes().any(|a| a.key() == "fmtp"
        && a.value() == Some(sdp::H264_FMTP).map(|f| format!("106 {f}")).as_deref()));

    // Each transceiver now sends only, with the codec the seed's server picked.
    for (mline, encoding) in [(0u32, "OPUS"), (1, "H264")] {
        let t: gst_webrtc::WebRTCRTPTransceiver = webrtc
            .element()
            .emit_by_name("get-transceiver", &[&(mline as i32)]);
        assert_eq!(
            t.property::<WebRTCRTPTransceiverDirection>("current-direction"),
            WebRTCRTPTransceiverDirection::Sendonly,
            "m-line {mline}"
        );
        let caps = remote
            .media(mline)
            .unwrap()
            .caps_from_media(if mline == 0 { 111 } else { 106 });
        let s = caps
            .as_ref()
            .and_then(|c| c.structure(0).map(|s| s.to_owned()))
            .unwrap();
        assert!(s
            .get::<String>("encoding-name")
            .unwrap()
            .eq_ignore_ascii_case(encoding));
    }

    // No error was posted while applying it.
    let bus = guard.pipeline().bus().unwrap();
    assert!(bus.pop_filtered(&[gst::MessageType::Error]).is_none());
}
