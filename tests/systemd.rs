//! The systemd side: the unit file passes `systemd-analyze verify`, its hardening exposure is
//! printed, and the binary speaks the sd_notify protocol to a real NOTIFY_SOCKET.

mod common;

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::process::{BoxProcess, BIN};
use common::*;

/// The repo's unit with ExecStart pointing at the binary under test (verify checks it exists).
fn unit_under_test(dir: &Path) -> PathBuf {
    let unit = std::fs::read_to_string(repo_path("systemd/airsync-streamer.service")).unwrap();
    assert!(unit.contains("/usr/local/bin/airsync-streamer"));
    let path = dir.join("airsync-streamer.service");
    std::fs::write(&path, unit.replace("/usr/local/bin/airsync-streamer", BIN)).unwrap();
    path
}

fn systemd_analyze(args: &[&str]) -> (bool, String) {
    let out = Command::new("systemd-analyze")
        .args(args)
        .output()
        .expect("systemd-analyze is installed (scripts/setup.sh --test)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn unit_file_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let unit = unit_under_test(dir.path());
    let (ok, text) = systemd_analyze(&["verify", unit.to_str().unwrap()]);
    println!("systemd-analyze verify:\n{text}");
    assert!(ok, "{text}");
    // Warnings (unknown keys, bad values) name the file; there must be none.
    assert!(!text.contains("airsync-streamer.service:"), "{text}");
    let unit_text = std::fs::read_to_string(&unit).unwrap();
    for key in [
        "Type=notify",
        "WatchdogSec=",
        "Restart=on-failure",
        "DynamicUser=yes",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "LoadCredential=",
    ] {
        assert!(unit_text.contains(key), "unit lacks {key}");
    }
}

#[test]
fn unit_security_exposure() {
    let dir = tempfile::tempdir().unwrap();
    let unit = unit_under_test(dir.path());
    let (_, text) = systemd_analyze(&["security", "--offline=true", unit.to_str().unwrap()]);
    let overall = text
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("no exposure level in:\n{text}"));
    println!("{overall}");
    assert!(
        overall.contains(" OK") || overall.contains(" SAFE"),
        "exposure worse than OK: {overall}\n{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn speaks_sd_notify_to_a_real_socket() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let messages: Arc<Mutex<Vec<String>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (messages, stop) = (messages.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 4096];
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                if let Ok(n) = socket.recv(&mut buf) {
                    let text = String::from_utf8_lossy(&buf[..n]).to_string();
                    println!("notify: {}", text.trim_end().replace('\n', " | "));
                    messages.lock().unwrap().push(text);
                }
            }
        })
    };
    let seen = |what: &str| {
        messages
            .lock()
            .unwrap()
            .iter()
            .any(|m| m.lines().any(|l| l.starts_with(what)))
    };

    let mut server = start_server(loopback_ice()).await;
    let mut process = BoxProcess::streaming(
        &server.url(),
        &repo_path("pipelines/test.pipeline"),
        &[
            ("NOTIFY_SOCKET", socket_path.to_str().unwrap().to_owned()),
            // No WATCHDOG_PID: sd_watchdog_enabled(3) then applies it to this process.
            ("WATCHDOG_USEC", "400000".to_owned()),
        ],
    );
    let received = tokio::time::timeout(Duration::from_secs(20), server.sessions.recv())
        .await
        .expect("the box connects")
        .unwrap();
    let streaming = wait_for(Duration::from_secs(30), || {
        received.video_frames() >= 10 && seen("STATUS=streaming") && seen("WATCHDOG=1")
    })
    .await;
    assert!(
        streaming,
        "no streaming STATUS / WATCHDOG:\n{}",
        process.output()
    );
    assert!(seen("READY=1"));
    assert!(seen("STATUS=connecting") || seen("STATUS=negotiating"));
    // READY comes before the first streaming STATUS.
    {
        let all = messages.lock().unwrap();
        let ready = all.iter().position(|m| m.contains("READY=1")).unwrap();
        let streaming = all
            .iter()
            .position(|m| m.contains("STATUS=streaming"))
            .unwrap();
        assert!(ready <= streaming, "{all:?}");
    }
    let status = process.stop_with_sigterm().await;
    assert_eq!(status.code(), Some(0));
    assert!(
        wait_for(Duration::from_secs(2), || seen("STOPPING=1")).await,
        "no STOPPING=1"
    );
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    reader.join().unwrap();
}
