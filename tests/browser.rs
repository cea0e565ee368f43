//! The viewer page in a real browser: Debian's Chromium, headless, driven over the DevTools
//! protocol (a WebSocket, so no extra driver crate), answers a box streaming
//! pipelines/test.pipeline through `serve`. Assertions come from the page's own getStats().

mod common;
mod serve_support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use async_tungstenite::tokio::{connect_async, ConnectStream};
use async_tungstenite::tungstenite::Message;
use async_tungstenite::WebSocketStream;
use base64::Engine;
use futures::StreamExt;
use serde_json::{json, Value};

use common::*;
use serve_support::*;

/// Flags for Chromium on these machines: root needs --no-sandbox; no network chatter of its
/// own; loopback ICE candidates only with --allow-loopback-in-peer-connection (INTEROP.md 11).
const CHROMIUM_FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--allow-loopback-in-peer-connection",
    // Chromium hides host addresses behind mDNS names, announced by multicast on every
    // interface: keep the test's traffic on loopback.
    "--disable-features=WebRtcHideLocalIpsWithMdns",
    "--autoplay-policy=no-user-gesture-required",
    "--window-size=1280,800",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
];

/// Chromium we started; killed (by its own PID) when dropped.
struct Browser {
    child: Child,
    _profile: tempfile::TempDir,
    cdp: Cdp,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn chromium_path() -> PathBuf {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("Debian's chromium is missing: run scripts/setup.sh --test")
}

async fn launch(log: &Path) -> Browser {
    let profile = tempfile::tempdir().unwrap();
    let log = std::fs::File::create(log).unwrap();
    let child = Command::new(chromium_path())
        .args(CHROMIUM_FLAGS)
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("about:blank")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("chromium starts");
    // Chromium writes its DevTools port and path here once it listens.
    let port_file = profile.path().join("DevToolsActivePort");
    let found = wait_for(Duration::from_secs(30), || {
        std::fs::read_to_string(&port_file).is_ok_and(|t| t.lines().count() >= 2)
    })
    .await;
    let mut browser = Browser {
        child,
        _profile: profile,
        cdp: Cdp::default(),
    };
    assert!(found, "chromium did not open its DevTools port");
    let text = std::fs::read_to_string(&port_file).unwrap();
    let mut lines = text.lines();
    let (port, path) = (lines.next().unwrap(), lines.next().unwrap());
    let (ws, _) = connect_async(format!("ws://127.0.0.1:{port}{path}"))
        .await
        .expect("DevTools socket");
    browser.cdp.ws = Some(ws);
    browser
}

/// A minimal DevTools protocol client: one command at a time, events skipped.
#[derive(Default)]
struct Cdp {
    ws: Option<WebSocketStream<ConnectStream>>,
    next_id: u64,
}

impl Cdp {
    async fn call(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({ "id": id, "method": method, "params": params });
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        let ws = self.ws.as_mut().unwrap();
        ws.send(Message::text(msg.to_string())).await.unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let frame = tokio::time::timeout_at(deadline, ws.next())
                .await
                .unwrap_or_else(|_| panic!("DevTools: no reply to {method}"))
                .expect("DevTools socket open")
                .unwrap();
            let Message::Text(text) = frame else { continue };
            let reply: Value = serde_json::from_str(&text).unwrap();
            if reply["id"] == id {
                assert!(reply.get("error").is_none(), "{method}: {reply}");
                return reply["result"].clone();
            }
        }
    }
}

fn artifacts() -> PathBuf {
    let dir = repo_path("artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_shows_the_box_stream_on_the_viewer_page() {
    init_tracing();
    let server = start_serve().await;
    let streaming = start_box(&server.box_url);

    let mut browser = launch(&artifacts().join("chromium.log")).await;
    let target = browser
        .cdp
        .call(
            None,
            "Target.createTarget",
            json!({ "url": server.viewer_url }),
        )
        .await;
    let attached = browser
        .cdp
        .call(
            None,
            "Target.attachToTarget",
            json!({ "targetId": target["targetId"], "flatten": true }),
        )
        .await;
    let session = attached["sessionId"].as_str().unwrap().to_owned();

    // Poll the page's own getStats() summary until enough video is decoded.
    let stats = evaluate_until(
        &mut browser.cdp,
        &session,
        json!({
            "expression": "window.airsyncStats ? window.airsyncStats() : null",
            "awaitPromise": true,
            "returnByValue": true,
        }),
        Duration::from_secs(60),
        |stats| {
            stats["video"]["framesDecoded"].as_u64().unwrap_or(0) >= 60
                && stats["audio"]["packetsReceived"].as_u64().unwrap_or(0) > 0
        },
    )
    .await;
    // What a person sees: the page's own table shows the same figures (refreshed every second).
    let shown_expr =
        "JSON.stringify(Object.fromEntries(['session','state','pair','vcodec','resolution',\
        'fps','vbitrate','vloss','apackets','aloss','dc'].map((id) => \
        [id, document.getElementById(id).textContent])))";
    let shown = evaluate_until(
        &mut browser.cdp,
        &session,
        json!({ "expression": shown_expr, "returnByValue": true }),
        Duration::from_secs(10),
        |shown| {
            let shown: Value = serde_json::from_str(shown.as_str().unwrap_or("{}")).unwrap();
            shown["resolution"] == "640×480"
                && shown["vbitrate"]
                    .as_str()
                    .is_some_and(|b| b.ends_with("kbit/s"))
        },
    )
    .await;
    let shown: Value = serde_json::from_str(shown.as_str().unwrap_or("{}")).unwrap();
    println!("page shows: {shown:#}");
    let shot = browser
        .cdp
        .call(
            Some(&session),
            "Page.captureScreenshot",
            json!({ "format": "png" }),
        )
        .await;
    let png = base64::engine::general_purpose::STANDARD
        .decode(shot["data"].as_str().unwrap())
        .unwrap();
    let shot_path = artifacts().join("viewer.png");
    std::fs::write(&shot_path, &png).unwrap();
    println!("page stats: {stats:#}");
    println!("screenshot: {}", shot_path.display());

    drop(browser);
    streaming.stop().await;
    server.stop().await;

    let video = &stats["video"];
    let audio = &stats["audio"];
    assert!(
        video["framesDecoded"].as_u64().unwrap_or(0) >= 60,
        "frames decoded: {stats}"
    );
    assert_eq!(video["frameWidth"], 640, "{stats}");
    assert_eq!(video["frameHeight"], 480, "{stats}");
    assert_eq!(video["mimeType"], "video/H264", "{stats}");
    assert!(
        audio["packetsReceived"].as_u64().unwrap_or(0) > 0,
        "{stats}"
    );
    assert_eq!(stats["connectionState"], "connected", "{stats}");
    uuid::Uuid::parse_str(stats["sessionId"].as_str().unwrap()).expect("a box session id");
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
    assert_eq!(shown["session"], stats["sessionId"], "{shown}");
    assert_eq!(shown["state"], "connected", "{shown}");
    assert_eq!(shown["resolution"], "640×480", "{shown}");
    assert_eq!(shown["vcodec"], "video/H264", "{shown}");
    assert!(
        shown["pair"]
            .as_str()
            .is_some_and(|p| p.contains("box host")),
        "{shown}"
    );
    for id in ["fps", "vbitrate", "vloss", "apackets", "aloss"] {
        assert_ne!(shown[id], "–", "{id} not shown: {shown}");
    }
}

/// Evaluates `params` in the page every 500 ms until `done` holds for its value or `within`
/// passes; returns the last value either way (the caller's assertions say what was missing).
async fn evaluate_until(
    cdp: &mut Cdp,
    session: &str,
    params: Value,
    within: Duration,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = tokio::time::Instant::now() + within;
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tick.tick().await;
        let result = cdp
            .call(Some(session), "Runtime.evaluate", params.clone())
            .await;
        let value = result["result"]["value"].clone();
        if done(&value) || tokio::time::Instant::now() >= deadline {
            return value;
        }
    }
}
