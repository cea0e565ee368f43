//! `serve` against real boxes and real sockets on loopback: the fallback answerer, a viewer
//! taking a box over, and bad input contained to its connection.

mod common;
mod serve_support;

use std::time::Duration;

use async_tungstenite::tokio::{connect_async, ConnectStream};
use async_tungstenite::tungstenite::Message;
use async_tungstenite::WebSocketStream;
use futures::StreamExt;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use airsync_streamer::metrics::Counters;
use airsync_streamer::protocol::{self, Envelope};
use airsync_streamer::server::answerer::{self, Answerer};

use common::*;
use serve_support::*;

type Ws = WebSocketStream<ConnectStream>;

/// The next text frame, within `within`; `None` when the socket closed or nothing came.
async fn next_text(ws: &mut Ws, within: Duration) -> Option<String> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => return Some(t.to_string()),
            Ok(Some(Ok(Message::Close(_)))) | Ok(None) | Ok(Some(Err(_))) | Err(_) => return None,
            Ok(Some(Ok(_))) => {}
        }
    }
}

/// Whether the server still answers this socket: a ping gets its pong.
async fn is_alive(ws: &mut Ws) -> bool {
    if ws.send(Message::Ping(b"alive"[..].into())).await.is_err() {
        return false;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Ok(Some(Ok(Message::Pong(p)))) if &p[..] == b"alive" => return true,
            Ok(Some(Ok(Message::Close(_)))) | Ok(None) | Ok(Some(Err(_))) | Err(_) => return false,
            Ok(Some(Ok(_))) => {}
        }
    }
}

/// Whether the server closes this socket within `within` (frames before the close are skipped).
async fn is_closed_by_server(ws: &mut Ws, within: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => return false,
            Ok(Some(Ok(Message::Close(_)))) | Ok(None) | Ok(Some(Err(_))) => return true,
            Ok(Some(Ok(_))) => {}
        }
    }
}

fn viewer_url(server: &RunningServer) -> String {
    server.box_url.replace("/box", "/viewer")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fallback_answerer_receives_a_box_with_no_viewer() {
    init_tracing();
    let server = start_serve().await;
    let streaming = start_box(&server.box_url);
    let status = server.status.clone();
    let answered = wait_for(Duration::from_secs(20), || !status.answered().is_empty()).await;
    assert!(answered, "the answerer took no session");
    let (session_id, received) = server.status.answered()[0].clone();
    let flowing = wait_for(Duration::from_secs(45), || {
        received.video_frames() >= 60 && received.audio_buffers() >= 10
    })
    .await;
    println!(
        "session {session_id}: video frames {}, audio buffers {}, size {:?}, data channel open {}",
        received.video_frames(),
        received.audio_buffers(),
        received.video_size(),
        received
            .data_channel_open
            .load(std::sync::atomic::Ordering::Relaxed)
    );
    streaming.stop().await;
    server.stop().await;
    assert!(flowing, "media did not flow to the answerer");
    assert_eq!(received.video_size(), Some((640, 480)));
    uuid::Uuid::parse_str(&session_id).expect("a box session id");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_takes_one_of_two_boxes_over_and_answers_its_next_session() {
    init_tracing();
    let server = start_serve().await;
    // Two boxes, told apart by the `name` in their URLs.
    let other = start_box(&format!("{}?name=hall", server.box_url));
    let streaming = start_box(&format!("{}?name=kiosk", server.box_url));
    let status = server.status.clone();
    assert!(wait_for(Duration::from_secs(20), || status.answered().len() >= 2).await);
    let first_sessions: Vec<String> = server
        .status
        .answered()
        .into_iter()
        .map(|(s, _)| s)
        .collect();

    // A viewer (here a webrtcbin peer behind a WebSocket, as a page would be) picks "kiosk".
    let (mut viewer, _) = connect_async(viewer_url(&server)).await.unwrap();
    let (box_id, first_session) = loop {
        let text = next_text(&mut viewer, Duration::from_secs(10))
            .await
            .expect("a box listing");
        let v: Value = serde_json::from_str(&text).unwrap();
        let boxes = v["boxes"].as_array().cloned().unwrap_or_default();
        if boxes.len() == 2 && boxes.iter().all(|b| b["peer"] == "answerer") {
            let kiosk = boxes
                .iter()
                .find(|b| b["name"] == "kiosk")
                .expect("kiosk listed");
            break (
                kiosk["id"].as_u64().unwrap(),
                kiosk["sessionId"].as_str().unwrap().to_owned(),
            );
        }
    };
    let hall_session = first_sessions
        .iter()
        .find(|s| **s != first_session)
        .unwrap()
        .clone();
    viewer
        .send(Message::text(format!(
            r#"{{"type":"watch","boxId":{box_id}}}"#
        )))
        .await
        .unwrap();

    // The box is closed, reconnects, and its new session's offer comes to the viewer.
    let offer = loop {
        let text = next_text(&mut viewer, Duration::from_secs(20))
            .await
            .expect("an offer for the viewer");
        let v: Value = serde_json::from_str(&text).unwrap();
        if v["type"] == "offer" {
            break text;
        }
    };
    let offer = protocol::decode(&offer).unwrap().envelope;
    assert_ne!(
        offer.session_id, first_session,
        "a new session after the takeover"
    );

    let peer = Answerer::new(&loopback_ice()).unwrap();
    let received = peer.received.clone();
    let (in_tx, in_rx) = mpsc::channel::<Envelope>(64);
    let (out_tx, mut out_rx) = mpsc::channel::<Envelope>(64);
    let peer_task = tokio::spawn(answerer::run(peer, in_rx, out_tx));
    in_tx.send(offer.clone()).await.unwrap();
    let relay = async {
        loop {
            tokio::select! {
                frame = viewer.next() => match frame {
                    Some(Ok(Message::Text(t))) => {
                        if let Ok(inbound) = protocol::decode(&t) {
                            let _ = in_tx.send(inbound.envelope).await;
                        }
                    }
                    Some(Ok(_)) => {}
                    _ => break,
                },
                Some(envelope) = out_rx.recv() => {
                    if viewer.send(Message::text(protocol::encode(&envelope))).await.is_err() {
                        break;
                    }
                }
            }
        }
    };
    let flowing = tokio::select! {
        _ = relay => false,
        ok = wait_for(Duration::from_secs(45), || received.video_frames() >= 60) => ok,
    };
    println!(
        "viewer's session {}: video frames {}, audio buffers {}, box sessions started {}",
        offer.session_id,
        received.video_frames(),
        received.audio_buffers(),
        Counters::get(&streaming.status.counters.sessions_started)
    );
    // The other box kept its session with the server's answerer all along.
    let hall = status
        .answered()
        .into_iter()
        .find(|(s, _)| *s == hall_session)
        .unwrap()
        .1;
    let hall_frames = hall.video_frames();
    let hall_flowing = wait_for(Duration::from_secs(20), || {
        hall.video_frames() >= hall_frames + 30
    })
    .await;
    let hall_sessions = Counters::get(&other.status.counters.sessions_started);
    println!(
        "other box: session {hall_session}, {} frames, sessions started {hall_sessions}",
        hall.video_frames()
    );
    drop(in_tx);
    let _ = tokio::time::timeout(Duration::from_secs(5), peer_task).await;
    streaming.stop().await;
    other.stop().await;
    server.stop().await;
    assert!(flowing, "media did not reach the viewer's peer");
    assert!(hall_flowing, "the other box stopped streaming");
    assert_eq!(hall_sessions, 1, "the other box had to start over");
    assert_eq!(received.video_size(), Some((640, 480)));
    assert!(
        !status
            .answered()
            .iter()
            .any(|(s, _)| *s == offer.session_id),
        "the fallback answerer answered the viewer's session too"
    );
}

/// The seed's browser offer without candidates: a real offer that leads nowhere.
fn seed_offer_text() -> String {
    let sdp = std::fs::read_to_string(repo_path("tests/data/seed_offer.sdp")).unwrap();
    sdp.lines()
        .filter(|l| !l.starts_with("a=candidate"))
        .map(|l| format!("{l}\r\n"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_stays_with_its_connection() {
    init_tracing();
    let server = start_serve().await;
    let streaming = start_box(&server.box_url);
    let status = server.status.clone();
    assert!(wait_for(Duration::from_secs(20), || !status.answered().is_empty()).await);
    let (session_id, received) = server.status.answered()[0].clone();
    assert!(
        wait_for(Duration::from_secs(45), || received.video_frames() >= 30).await,
        "the good box streams"
    );

    // Garbage of every kind on one box socket: each message is dropped, the socket stays.
    let (mut garbage, _) = connect_async(&server.box_url).await.unwrap();
    let before = server.status.dropped();
    let bad = [
        "not json at all",
        "[1,2,3]",
        r#"{"sessionId":7,"type":"offer","sdp":"v=0"}"#,
        r#"{"sessionId":"a","type":"offer","sdp":null}"#,
        r#"{"sessionId":"nope","type":"candidate","sdp":null,"candidate":"candidate:1 1 UDP 1 127.0.0.1 9 typ host","sdpMid":"0","sdpMLineIndex":0}"#,
        r#"{"sessionId":"nope","type":"answer","sdp":"v=0\r\n","candidate":null,"sdpMid":null,"sdpMLineIndex":null}"#,
    ];
    for text in bad {
        garbage.send(Message::text(text)).await.unwrap();
    }
    garbage
        .send(Message::binary(vec![0xff_u8; 100]))
        .await
        .unwrap();
    assert!(is_alive(&mut garbage).await, "garbage closed the socket");
    let status = server.status.clone();
    assert!(
        wait_for(Duration::from_secs(5), || status.dropped() >= before + 7).await,
        "dropped {} of 7",
        status.dropped() - before
    );

    // A huge frame (> 1 MiB) ends that one connection.
    let (mut huge, _) = connect_async(&server.box_url).await.unwrap();
    let _ = huge.send(Message::text("x".repeat(2 << 20))).await;
    assert!(
        is_closed_by_server(&mut huge, Duration::from_secs(10)).await,
        "the huge frame's connection stays open"
    );

    // A client that only ever sends garbage is cut off once it has used up its budget.
    let (mut flood, _) = connect_async(&server.box_url).await.unwrap();
    for _ in 0..150 {
        if flood.send(Message::text("garbage")).await.is_err() {
            break;
        }
    }
    assert!(
        is_closed_by_server(&mut flood, Duration::from_secs(10)).await,
        "a garbage flood is not cut off"
    );

    // An offer whose SDP does not parse: the answerer gives up and the box is told to retry.
    let (mut unparsable, _) = connect_async(&server.box_url).await.unwrap();
    unparsable
        .send(Message::text(protocol::encode(&Envelope {
            session_id: uuid::Uuid::new_v4().to_string(),
            signal: protocol::Signal::Offer {
                sdp: "this is not SDP".into(),
            },
        })))
        .await
        .unwrap();
    assert!(
        is_closed_by_server(&mut unparsable, Duration::from_secs(10)).await,
        "an unanswerable session is not closed"
    );

    // A socket dropped in the middle of a negotiation.
    let (mut dropped, _) = connect_async(&server.box_url).await.unwrap();
    dropped
        .send(Message::text(protocol::encode(&Envelope {
            session_id: uuid::Uuid::new_v4().to_string(),
            signal: protocol::Signal::Offer {
                sdp: seed_offer_text(),
            },
        })))
        .await
        .unwrap();
    drop(dropped);

    // A viewer sending nonsense stays connected too.
    let (mut viewer, _) = connect_async(viewer_url(&server)).await.unwrap();
    assert!(next_text(&mut viewer, Duration::from_secs(5))
        .await
        .is_some());
    for text in [
        "{{{",
        r#"{"type":"watch","boxId":"one"}"#,
        r#"{"type":"watch","boxId":999999}"#,
        r#"{"sessionId":"nope","type":"answer","sdp":"v=0\r\n","candidate":null,"sdpMid":null,"sdpMLineIndex":null}"#,
    ] {
        viewer.send(Message::text(text)).await.unwrap();
    }
    assert!(
        is_alive(&mut viewer).await,
        "viewer garbage closed the socket"
    );
    drop(viewer);

    // Through all of it, the good box kept its session and kept streaming.
    let frames = received.video_frames();
    let still_flowing = wait_for(Duration::from_secs(20), || {
        received.video_frames() >= frames + 60
    })
    .await;
    let sessions = Counters::get(&streaming.status.counters.sessions_started);
    println!(
        "good session {session_id}: {} frames, box sessions started {sessions}, messages dropped {}",
        received.video_frames(),
        server.status.dropped()
    );
    assert!(still_flowing, "the good box stopped streaming");
    assert_eq!(sessions, 1, "the good box had to start over");
    assert_eq!(server.status.answered()[0].0, session_id);

    // And the server still serves new clients.
    let addr = server
        .box_url
        .trim_start_matches("ws://")
        .trim_end_matches("/box");
    let mut http = tokio::net::TcpStream::connect(addr).await.unwrap();
    http.write_all(b"GET / HTTP/1.1\r\nHost: airsync\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut page = String::new();
    tokio::time::timeout(Duration::from_secs(5), http.read_to_string(&mut page))
        .await
        .expect("the page comes")
        .unwrap();
    assert!(
        page.starts_with("HTTP/1.1 200"),
        "{}",
        &page[..page.len().min(200)]
    );
    assert!(page.contains("airsync viewer"));

    drop(garbage);
    streaming.stop().await;
    server.stop().await;
}

/// A self-signed certificate for 127.0.0.1 made with the openssl command line tool.
fn self_signed_cert(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let status = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-days", "1", "-subj", "/CN=127.0.0.1"])
        .args([
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-addext",
            "basicConstraints=critical,CA:FALSE",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl runs (scripts/setup.sh --test installs it)");
    assert!(status.success(), "openssl made no certificate");
    (cert, key)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_wss_with_a_certificate() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed_cert(dir.path());
    let server = start_serve_with(|cfg| cfg.tls = Some((cert.clone(), key.clone()))).await;
    assert!(server.box_url.starts_with("wss://127.0.0.1:"));
    assert!(server.viewer_url.starts_with("https://"));
    let streaming = RunningBox::start(box_config_with(&server.box_url, |args| {
        args.ca_file = Some(cert.clone())
    }));
    let status = server.status.clone();
    assert!(
        wait_for(Duration::from_secs(20), || !status.answered().is_empty()).await,
        "the box did not get through TLS"
    );
    let received = server.status.answered()[0].1.clone();
    let flowing = wait_for(Duration::from_secs(45), || received.video_frames() >= 60).await;
    println!("over wss: video frames {}", received.video_frames());

    // A client that speaks plain text to the TLS port only hurts itself.
    let plain = server.box_url.replace("wss://", "ws://");
    assert!(connect_async(&plain).await.is_err());

    streaming.stop().await;
    server.stop().await;
    assert!(flowing, "media did not flow over a wss-signalled session");
}

/// A peer that vanishes without closing (laptop lid shut, network gone, no TCP reset) is
/// noticed: the server pings, and a connection that sends nothing back for `idle_timeout`
/// is closed, while one that answers (as every WebSocket client does) stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_are_closed_and_answering_ones_kept() {
    init_tracing();
    let idle = Duration::from_secs(2);
    let server = start_serve_with(|cfg| cfg.idle_timeout = idle).await;
    let (mut answering, _) = connect_async(viewer_url(&server)).await.unwrap();
    let (mut silent_box, _) = connect_async(server.box_url.clone()).await.unwrap();
    let (mut silent_viewer, _) = connect_async(viewer_url(&server)).await.unwrap();

    // Reading is what answers: async-tungstenite queues a pong for each ping it reads.
    let until = tokio::time::Instant::now() + idle * 3;
    let mut pings = 0;
    loop {
        match tokio::time::timeout_at(until, answering.next()).await {
            Err(_) => break,
            Ok(Some(Ok(Message::Ping(_)))) => pings += 1,
            Ok(Some(Ok(_))) => {}
            Ok(other) => panic!("an answering viewer was dropped: {other:?}"),
        }
    }
    assert!(
        pings >= 3,
        "the server pinged {pings} times in {:?}",
        idle * 3
    );
    assert!(
        is_alive(&mut answering).await,
        "an answering viewer was dropped"
    );

    // The silent ones read nothing so far; what is queued for them ends with the close.
    assert!(
        is_closed_by_server(&mut silent_box, Duration::from_secs(1)).await,
        "a silent box connection was kept"
    );
    assert!(
        is_closed_by_server(&mut silent_viewer, Duration::from_secs(1)).await,
        "a silent viewer connection was kept"
    );
    server.stop().await;
}
