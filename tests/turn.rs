//! Streaming through a real TURN server (Debian's coturn) with `relay` policy.

mod common;

use std::net::UdpSocket;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use airsync_streamer::config::IcePolicy;

use common::*;

const TURN_USER: &str = "airsync-box";
/// Characters that must be percent-encoded in webrtcbin's `turn://user:pass@host` URL.
const TURN_PASSWORD: &str = "p@ss/w+rd=%x";

/// A coturn process on 127.0.0.1 only, killed (by its PID) when dropped.
struct Coturn {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Coturn {
    /// Starts coturn and waits until it answers STUN. A start that does not answer is retried
    /// on a fresh port, with what coturn said printed, so a slow or lost daemon start shows up
    /// as a diagnosis rather than as a failure of the box.
    fn start() -> Coturn {
        const ATTEMPTS: usize = 3;
        let mut diagnoses = Vec::new();
        for attempt in 1..=ATTEMPTS {
            let mut coturn = Coturn::spawn();
            if coturn.answers_stun_within(Duration::from_secs(10)) {
                return coturn;
            }
            let diagnosis = coturn.diagnosis();
            eprintln!("coturn start {attempt}/{ATTEMPTS} did not answer STUN:\n{diagnosis}");
            diagnoses.push(diagnosis);
        }
        panic!(
            "coturn did not answer STUN in {ATTEMPTS} starts:\n{}",
            diagnoses.join("\n---\n")
        );
    }

    fn spawn() -> Coturn {
        let port = UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = tempfile::tempdir().unwrap();
        let stderr = std::fs::File::create(dir.path().join("stderr")).unwrap();
        let child = Command::new("turnserver")
            .args([
                "-n", // no config file
                "--listening-ip=127.0.0.1",
                "--relay-ip=127.0.0.1",
                &format!("--listening-port={port}"),
                "--min-port=40000",
                "--max-port=49999",
                "--lt-cred-mech",
                "--realm=airsync.test",
                &format!("--user={TURN_USER}:{TURN_PASSWORD}"),
                "--allow-loopback-peers",
                "--no-tls",
                "--no-dtls",
                "--no-cli",
                "--no-tcp-relay",
                "--fingerprint",
                "--simple-log",
                &format!("--log-file={}/turn.log", dir.path().display()),
                &format!("--pidfile={}/turn.pid", dir.path().display()),
                &format!("--userdb={}/turndb", dir.path().display()),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("turnserver (Debian package coturn) runs; scripts/setup.sh --test installs it");
        Coturn { child, port, dir }
    }

    /// libnice gives up on a TURN allocation after 2 s (500 ms doubling, three retries); on a
    /// loaded machine coturn may not listen yet when the box starts, so the test waits until it
    /// answers a STUN Binding request.
    fn answers_stun_within(&self, limit: Duration) -> bool {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let wait = Duration::from_millis(100);
        socket.set_read_timeout(Some(wait)).unwrap();
        // Binding request: type 0x0001, length 0, magic cookie, 12-byte transaction id.
        let mut request = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xA4, 0x42];
        request.extend_from_slice(b"airsync-test");
        let mut reply = [0u8; 512];
        let deadline = std::time::Instant::now() + limit;
        while std::time::Instant::now() < deadline {
            let _ = socket.send_to(&request, ("127.0.0.1", self.port));
            if let Ok((n, _)) = socket.recv_from(&mut reply) {
                if n >= 20 && reply[8..20] == request[8..20] {
                    return true;
                }
            }
        }
        false
    }

    /// Whether coturn is still running, and the end of its log and stderr.
    fn diagnosis(&mut self) -> String {
        let status = match self.child.try_wait() {
            Ok(Some(status)) => format!("coturn exited: {status}"),
            Ok(None) => format!("coturn is running (pid {})", self.child.id()),
            Err(e) => format!("coturn's status is unknown: {e}"),
        };
        let tail = |name: &str| {
            let text = std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(15)..].join("\n")
        };
        format!(
            "port {}, {status}\nturn.log (end):\n{}\nstderr (end):\n{}",
            self.port,
            tail("turn.log"),
            tail("stderr")
        )
    }
}

impl Drop for Coturn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_flows_through_a_turn_relay() {
    init_tracing();
    let turn = Coturn::start();
    let mut server = start_server(loopback_ice()).await;
    let ice_servers = serde_json::json!([{
        "urls": [format!("turn:127.0.0.1:{}?transport=udp", turn.port)],
        "username": TURN_USER,
        "credential": TURN_PASSWORD,
    }])
    .to_string();
    let cfg = box_config_with(&server.url(), |args| {
        args.ice_servers = Some(ice_servers);
        args.ice_transport_policy = Some(IcePolicy::Relay);
    });

    let streamer = RunningBox::start(cfg);
    let received = server.next_session().await;
    let flowing = wait_for(Duration::from_secs(45), || received.video_frames() >= 60).await;
    print_time_to_first_frame("through TURN", &received, streamer.started);
    streamer.stop().await;
    assert!(
        flowing,
        "no video through the relay ({} frames)",
        received.video_frames()
    );

    // With `relay` policy the box offers relay candidates only, allocated on our coturn with
    // the configured credentials; so every packet that arrived went through the relay.
    let candidates: Vec<String> = server
        .frames_from_box()
        .iter()
        .filter(|m| m["type"] == "candidate")
        .filter_map(|m| m["candidate"].as_str().map(str::to_owned))
        .collect();
    assert!(!candidates.is_empty(), "the box sent no candidate");
    for c in &candidates {
        assert!(
            c.contains(" typ relay "),
            "non-relay candidate offered: {c}"
        );
        assert!(c.contains(" 127.0.0.1 "), "relay not on loopback: {c}");
    }
}
