//! Secrets and transport security: the token reaches the server (header or query), TURN
//! credentials and tokens come from files or systemd credentials, none of them nor the ICE
//! passwords appear in the box's debug log; wss:// verifies certificates against an optional
//! CA file.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use airsync_streamer::metrics::{Counters, Status};
use airsync_streamer::{signalling, supervisor};
use tokio_util::sync::CancellationToken;

use common::fault_server::{ConnState, FaultServer};
use common::process::BoxProcess;
use common::*;

/// The `a=ice-pwd:` values of an SDP.
fn ice_passwords(sdp: &str) -> Vec<String> {
    sdp.lines()
        .filter_map(|l| l.trim_end().strip_prefix("a=ice-pwd:"))
        .map(str::to_owned)
        .collect()
}

fn sdps(frames: &[String]) -> Vec<String> {
    frames
        .iter()
        .filter_map(|t| serde_json::from_str::<serde_json::Value>(t).ok())
        .filter_map(|v| v["sdp"].as_str().map(str::to_owned))
        .collect()
}

struct Secrets {
    token: String,
    turn: String,
}

/// Writes the config and credential files; `token_in` is "header" or "query".
fn write_config(dir: &Path, url: &str, token_in: &str, secrets: &Secrets) -> std::path::PathBuf {
    let creds = dir.join("credentials");
    std::fs::create_dir_all(&creds).unwrap();
    // The token from a file, the TURN credential from systemd's credentials directory.
    std::fs::write(dir.join("token"), format!("{}\n", secrets.token)).unwrap();
    std::fs::write(creds.join("turn-credential"), &secrets.turn).unwrap();
    let config = format!(
        r#"
[signalling]
url = "{url}"
token = {{ file = "token" }}
token_in = "{token_in}"

[pipeline]
file = "{pipeline}"

[ice]
local_addresses = ["127.0.0.1"]

[[ice.servers]]
urls = "turn:127.0.0.1:3478?transport=udp"
username = "airsync"
credential = {{ systemd = "turn-credential" }}

[log]
level = "debug"
"#,
        pipeline = repo_path("pipelines/test.pipeline").display()
    );
    let path = dir.join("config.toml");
    std::fs::write(&path, config).unwrap();
    path
}

/// Runs the binary at debug level until media flows, stops it, and checks its whole output
/// for every secret. Returns what the server saw of the connection.
async fn run_and_check_logs(token_in: &str) -> (String, Option<String>) {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let secrets = Secrets {
        token: format!("tok-{}", uuid::Uuid::new_v4().simple()),
        turn: format!("turnpw-{}", uuid::Uuid::new_v4().simple()),
    };
    let mut server = FaultServer::start().await;
    let config = write_config(dir.path(), &server.url(), token_in, &secrets);
    let creds = dir.path().join("credentials");
    // The pipeline graph a developer may ask for is checked like the log.
    let dot_dir = dir.path().join("dot");
    std::fs::create_dir_all(&dot_dir).unwrap();
    let mut process = BoxProcess::spawn(
        &["--config", config.to_str().unwrap()],
        &[
            ("CREDENTIALS_DIRECTORY", creds.to_str().unwrap()),
            ("GST_DEBUG_DUMP_DOT_DIR", dot_dir.to_str().unwrap()),
        ],
    );
    let (_, bridge) = server.next_bridged(Duration::from_secs(20)).await;
    let flowing = bridge.decodes(10, Duration::from_secs(30)).await;
    assert!(flowing, "no media:\n{}", process.output());
    process.signal(libc::SIGTERM);
    let status = process.wait_exit(Duration::from_secs(5)).await;
    assert_eq!(status.and_then(|s| s.code()), Some(0));
    let state: Arc<ConnState> = bridge.state.clone();
    let (uri, auth) = (bridge.request_uri.clone(), bridge.authorization.clone());
    bridge.finish().await;

    let output = process.output();
    assert!(
        output.contains("DEBUG"),
        "the log was not at debug level:\n{output}"
    );
    assert!(
        output.contains("a=ice-pwd:***"),
        "SDPs were not logged (masked) at debug level"
    );
    let mut passwords = Vec::new();
    for sdp in sdps(&state.log.lock().unwrap()) {
        passwords.extend(ice_passwords(&sdp));
    }
    let answers = sdps(&state.sent.lock().unwrap());
    assert!(!answers.is_empty(), "no answer went to the box");
    for sdp in answers {
        passwords.extend(ice_passwords(&sdp));
    }
    assert!(
        passwords.len() >= 2,
        "offer and answer ICE passwords: {passwords:?}"
    );
    let mut secrets_list = vec![
        ("token", secrets.token.clone()),
        ("TURN credential", secrets.turn.clone()),
    ];
    secrets_list.extend(passwords.into_iter().map(|p| ("ICE password", p)));
    let graphs: Vec<String> = std::fs::read_dir(&dot_dir)
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    assert_eq!(graphs.len(), 1, "no pipeline graph was written");
    assert!(
        graphs[0].contains("GstWebRTCBin"),
        "not a graph of the box's pipeline"
    );
    for (what, value) in &secrets_list {
        assert!(
            !output.contains(value.as_str()),
            "the {what} appears in the log"
        );
        assert!(
            !graphs[0].contains(value.as_str()),
            "the {what} appears in the pipeline graph"
        );
    }
    println!(
        "{} log lines checked for {} secrets",
        output.lines().count(),
        secrets_list.len()
    );
    let token = secrets.token;
    match token_in {
        "header" => assert_eq!(auth.as_deref(), Some(format!("Bearer {token}").as_str())),
        _ => {
            assert!(uri.contains(&format!("token={token}")), "{uri}");
            assert_eq!(auth, None);
        }
    }
    if token_in == "header" {
        assert!(!uri.contains(&token), "{uri}");
    }
    (uri, auth)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_in_header_and_no_secret_in_logs() {
    run_and_check_logs("header").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_in_query_and_no_secret_in_logs() {
    run_and_check_logs("query").await;
}

/// A CA and a server certificate for 127.0.0.1 signed by it; returns the CA's PEM and a
/// TLS acceptor serving the leaf.
fn test_pki() -> (String, tokio_rustls::TlsAcceptor) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "airsync test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &ca, &ca_key)
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![leaf.der().clone(), ca.der().clone()], key)
        .unwrap();
    (ca.pem(), tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

async fn tls_server() -> (FaultServer, tempfile::TempDir, std::path::PathBuf) {
    let (ca_pem, acceptor) = test_pki();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca_pem).unwrap();
    let server = FaultServer::start_on("127.0.0.1:0".parse().unwrap(), Some(acceptor)).await;
    (server, dir, ca_file)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_with_ca_file_connects_and_offers() {
    init_tracing();
    let (mut server, _dir, ca_file) = tls_server().await;
    assert!(server.url().starts_with("wss://"));
    let cfg = box_config_with(&server.url(), |a| a.ca_file = Some(ca_file.clone()));
    let status = Arc::new(Status::default());
    let shutdown = CancellationToken::new();
    let task = {
        let (status, shutdown) = (status.clone(), shutdown.clone());
        tokio::spawn(async move { supervisor::run(&cfg, shutdown, status).await })
    };
    let mut conn = server.next_conn(Duration::from_secs(20)).await;
    let offer = conn.offer(Duration::from_secs(20)).await;
    println!("offer over wss for session {}", offer.session_id);
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("stops")
        .unwrap();
    assert!(
        wait_for(Duration::from_secs(2), || conn.state.saw_close_frame()).await,
        "no close frame over wss"
    );
    assert_eq!(
        server
            .tls_failures
            .load(std::sync::atomic::Ordering::SeqCst),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_without_the_ca_is_a_certificate_error_and_retried() {
    init_tracing();
    let (mut server, _dir, _ca_file) = tls_server().await;
    let cfg = box_config(&server.url());
    // The error the supervisor logs for each attempt.
    let err = match signalling::connect(&cfg.signalling).await {
        Ok(_) => panic!("connected to a server whose certificate nobody trusts"),
        Err(e) => e.to_string(),
    };
    println!("without the CA: {err}");
    assert!(err.to_lowercase().contains("certificate"), "{err}");
    assert!(err.contains(&server.addr.to_string()), "{err}");

    let status = Arc::new(Status::default());
    let shutdown = CancellationToken::new();
    let started = Instant::now();
    let task = {
        let (status, shutdown) = (status.clone(), shutdown.clone());
        tokio::spawn(async move { supervisor::run(&cfg, shutdown, status).await })
    };
    let retried = wait_for(Duration::from_secs(20), || {
        Counters::get(&status.counters.sessions_failed) >= 3
    })
    .await;
    println!(
        "{} failed attempts in {:?}, last error: {:?}",
        Counters::get(&status.counters.sessions_failed),
        started.elapsed(),
        status.last_error.lock().unwrap()
    );
    assert!(retried, "the box stopped retrying");
    assert!(server
        .try_next_conn(Duration::from_millis(10))
        .await
        .is_none());
    assert!(
        server
            .tls_failures
            .load(std::sync::atomic::Ordering::SeqCst)
            >= 3
    );
    let last = status.last_error.lock().unwrap().clone().unwrap();
    assert!(last.to_lowercase().contains("certificate"), "{last}");
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("stops")
        .unwrap();
}
