//! The box streams to a real server and a real receiving webrtcbin over loopback.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use airsync_streamer::metrics::Counters;
use gst_sdp::SDPMessage;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_end_to_end_over_loopback() {
    init_tracing();
    // Before its answer the server trickles what PROTOCOL.md says a box must take: a TCP
    // passive IPv6 candidate (the seed's), a TCP IPv4 one, one naming only its sdpMid, and
    // end-of-candidates. Their addresses are loopback: nothing leaves the machine.
    let extras = vec![
        r#"{"sessionId":"{sid}","type":"candidate","sdp":null,"candidate":"candidate:1027641139 1 tcp 1518091519 ::1 36147 typ host tcptype passive generation 0 ufrag D9lK network-id 2","sdpMid":"0","sdpMLineIndex":0}"#.to_owned(),
        r#"{"sessionId":"{sid}","type":"candidate","sdp":null,"candidate":"candidate:2 1 TCP 1015021823 127.0.0.1 9 typ host tcptype active","sdpMid":"0","sdpMLineIndex":0}"#.to_owned(),
        r#"{"sessionId":"{sid}","type":"candidate","sdp":null,"candidate":"candidate:3 1 udp 2122260223 127.0.0.1 9 typ host generation 0","sdpMid":"2","sdpMLineIndex":null}"#.to_owned(),
        r#"{"sessionId":"{sid}","type":"candidate","sdp":null,"candidate":"","sdpMid":"0","sdpMLineIndex":0}"#.to_owned(),
    ];
    let mut server = start_server_injecting(loopback_ice(), extras).await;
    let streamer = RunningBox::start(box_config(&server.url()));
    let status = streamer.status.clone();
    let received = server.next_session().await;
    let flowing = wait_for(Duration::from_secs(45), || {
        received.video_frames() >= 60
            && received.audio_buffers() >= 10
            && !received.data_channel_messages.lock().unwrap().is_empty()
            && Counters::get(&status.counters.data_channel_messages_received) >= 1
    })
    .await;
    print_time_to_first_frame("loopback", &received, streamer.started);
    println!(
        "video frames {}, audio buffers {}, size {:?}",
        received.video_frames(),
        received.audio_buffers(),
        received.video_size()
    );
    streamer.stop().await;
    assert!(flowing, "media and data did not flow");

    // Decoded media of the test pipeline's size.
    assert!(received.video_frames() >= 60);
    assert_eq!(received.video_size(), Some((640, 480)));
    assert!(received.audio_buffers() >= 10);

    // Data channel, a message each way.
    let got = received.data_channel_messages.lock().unwrap().clone();
    assert!(got[0].contains("\"hello\""), "box's greeting: {got:?}");
    assert!(Counters::get(&status.counters.data_channel_messages_received) >= 1);

    // The offer, parsed.
    let from_box = server.frames_from_box();
    let offer = from_box
        .iter()
        .find(|m| m["type"] == "offer")
        .expect("an offer was sent");
    let session_id = offer["sessionId"].as_str().unwrap();
    uuid::Uuid::parse_str(session_id).expect("sessionId is a UUID");
    for field in ["candidate", "sdpMid", "sdpMLineIndex"] {
        assert!(offer[field].is_null(), "{field} should be null in an offer");
    }
    let sdp = SDPMessage::parse_buffer(offer["sdp"].as_str().unwrap().as_bytes()).unwrap();
    assert_offer_matches_protocol(&sdp);

    // Its DTLS fingerprint is that of the process's one certificate, which `media::dtls`
    // generates at start-up: if sessions did not share it, generating it early would be waste.
    let expected = process_certificate_fingerprint();
    for i in 0..sdp.medias_len() {
        let fingerprint = sdp
            .media(i)
            .and_then(|m| m.attribute_val("fingerprint"))
            .or_else(|| sdp.attribute_val("fingerprint"));
        assert_eq!(fingerprint, Some(expected.as_str()), "m-line {i}");
    }

    // Candidates trickled both ways, each naming its m-line in the sender's SDP.
    let box_candidates: Vec<_> = from_box
        .iter()
        .filter(|m| m["type"] == "candidate" && m["candidate"].is_string())
        .collect();
    assert!(!box_candidates.is_empty(), "the box sent no candidate");
    for c in &box_candidates {
        assert_eq!(c["sessionId"], session_id);
        assert!(c["sdp"].is_null());
        assert!(c["candidate"].as_str().unwrap().starts_with("candidate:"));
        let mline = c["sdpMLineIndex"].as_u64().unwrap() as u32;
        let mid = sdp.media(mline).unwrap().attribute_val("mid").unwrap();
        assert_eq!(c["sdpMid"], mid);
        assert!(
            c["candidate"].as_str().unwrap().contains(" 127.0.0.1 "),
            "not pinned: {c}"
        );
    }
    let to_box = server.frames_to_box();
    assert!(to_box.iter().any(|m| m["type"] == "answer"));
    assert!(
        to_box.iter().any(|m| m["type"] == "candidate"),
        "the server sent no candidate"
    );
    assert!(received.remote_candidates.load(Ordering::Relaxed) >= 1);
    // The three early candidates were taken, besides the answerer's own.
    assert!(Counters::get(&status.counters.remote_candidates_added) >= 4);
    assert_eq!(
        Counters::get(&status.counters.sessions_started),
        1,
        "the session never restarted"
    );
}

/// `sha-256 AB:CD:…` of the certificate GStreamer's DTLS elements use in this process.
fn process_certificate_fingerprint() -> String {
    use gst::prelude::*;
    let dtls = gst::ElementFactory::make("dtlsdec").build().unwrap();
    let pem: String = dtls.property("pem");
    let certs: Vec<_> = rustls_pemfile::certs(&mut pem.as_bytes())
        .collect::<Result<_, _>>()
        .expect("dtlsdec's pem is PEM");
    assert_eq!(certs.len(), 1, "one certificate");
    let digest = ring::digest::digest(&ring::digest::SHA256, &certs[0]);
    let hex: Vec<String> = digest.as_ref().iter().map(|b| format!("{b:02X}")).collect();
    format!("sha-256 {}", hex.join(":"))
}

fn attr_values<'a>(m: &'a gst_sdp::SDPMediaRef, key: &str) -> Vec<&'a str> {
    m.attributes()
        .filter(|a| a.key() == key)
        .filter_map(|a| a.value())
        .collect()
}

/// Everything PROTOCOL.md says the offer must carry.
pub fn assert_offer_matches_protocol(sdp: &SDPMessage) {
    assert_eq!(sdp.attribute_val("group"), Some("BUNDLE 0 1 2"));
    let kinds: Vec<_> = sdp
        .medias()
        .map(|m| m.media().unwrap().to_owned())
        .collect();
    assert_eq!(kinds, ["audio", "video", "application"]);

    let audio = sdp.media(0).unwrap();
    assert_eq!(audio.attribute_val("mid"), Some("0"));
    assert!(audio.formats().any(|f| f == "111"));
    assert!(attr_values(audio, "rtpmap")
        .iter()
        .any(|v| v.eq_ignore_ascii_case("111 opus/48000/2")));
    assert!(attr_values(audio, "fmtp").contains(&"111 minptime=10;useinbandfec=1"));
    assert!(
        audio.attribute_val("sendonly").is_some()
            || audio.attributes().any(|a| a.key() == "sendonly")
    );
    assert!(
        !attr_values(audio, "ssrc-group")
            .iter()
            .any(|v| v.starts_with("FID")),
        "RTX on audio"
    );
    assert!(
        !attr_values(audio, "rtpmap")
            .iter()
            .any(|v| v.contains("rtx")),
        "RTX on audio"
    );

    let video = sdp.media(1).unwrap();
    assert_eq!(video.attribute_val("mid"), Some("1"));
    assert!(video.formats().any(|f| f == "106"));
    assert!(attr_values(video, "rtpmap").contains(&"106 H264/90000"));
    assert!(attr_values(video, "fmtp")
        .contains(&"106 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f"));
    for fb in ["nack", "nack pli", "ccm fir", "transport-cc", "goog-remb"] {
        assert!(
            attr_values(video, "rtcp-fb").contains(&format!("106 {fb}").as_str()),
            "rtcp-fb {fb}"
        );
    }
    let rtx_pt = attr_values(video, "fmtp")
        .iter()
        .find(|v| v.ends_with("apt=106"))
        .map(|v| v.split(' ').next().unwrap().to_owned())
        .expect("RTX for PT 106");
    assert!(attr_values(video, "rtpmap").contains(&format!("{rtx_pt} rtx/90000").as_str()));
    assert!(video.attributes().any(|a| a.key() == "sendonly"));

    for m in [audio, video] {
        let extmaps = attr_values(m, "extmap");
        assert!(
            extmaps
                .iter()
                .any(|e| e.ends_with("draft-holmer-rmcat-transport-wide-cc-extensions-01")),
            "twcc: {extmaps:?}"
        );
        assert!(
            extmaps
                .iter()
                .any(|e| e.ends_with("urn:ietf:params:rtp-hdrext:sdes:mid")),
            "mid: {extmaps:?}"
        );
    }

    let app = sdp.media(2).unwrap();
    assert_eq!(app.attribute_val("mid"), Some("2"));
    assert_eq!(app.proto(), Some("UDP/DTLS/SCTP"));
    assert!(app.formats().any(|f| f == "webrtc-datachannel"));
    assert_eq!(app.attribute_val("sctp-port"), Some("5000"));

    for m in sdp.medias() {
        let setup = m
            .attribute_val("setup")
            .or_else(|| sdp.attribute_val("setup"));
        assert_eq!(setup, Some("actpass"));
    }
}

/// The box sends its sender reports about once a second (`media/reports.rs`), not every
/// 2.5–7.5 s as rtpsession would. rtpsession draws each gap from 0.41–1.23 times the interval
/// (RFC 3550's randomisation and compensation), so 8 s hold at least 6 reports for each
/// stream at 1 s, and at most 4 at the default; 5 are asserted, one spare for a loaded machine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_a_sender_report_about_each_second() {
    init_tracing();
    let mut server = start_server(loopback_ice()).await;
    let streamer = RunningBox::start(box_config(&server.url()));
    let received = server.next_session().await;
    let flowing = wait_for(Duration::from_secs(45), || {
        received.video_frames() >= 30 && received.audio_buffers() >= 10
    })
    .await;
    let before = received.sender_reports();
    tokio::time::sleep(Duration::from_secs(8)).await;
    let after = received.sender_reports();
    streamer.stop().await;
    assert!(flowing, "media did not flow");

    let mut per_stream: Vec<(u32, u64)> = after
        .iter()
        .map(|(ssrc, n)| (*ssrc, n - before.get(ssrc).copied().unwrap_or(0)))
        .collect();
    per_stream.sort();
    println!("sender reports in 8 s, by SSRC: {per_stream:x?}");
    assert_eq!(per_stream.len(), 2, "one stream each of audio and video");
    for (ssrc, n) in per_stream {
        assert!(
            n >= 5,
            "{n} sender reports for SSRC {ssrc:08x} in 8 s: not sent each second"
        );
    }
}
