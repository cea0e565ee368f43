//! Test support: a real WebSocket server on 127.0.0.1 speaking the server side of the
//! protocol, with a real receiving webrtcbin (the answerer) behind each connection.
#![allow(dead_code)]

pub mod criticals;
pub mod fake_camera;
pub mod fault_server;
pub mod impaired;
pub mod process;
pub mod pulse;
pub mod relay;
pub mod unplug;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_tungstenite::tungstenite::Message;
use futures::StreamExt;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use gst::prelude::*;

use airsync_streamer::config::{Config, FileConfig, IceConfig, StreamArgs};
use airsync_streamer::metrics::{Counters, Status};
use airsync_streamer::protocol::{self, Envelope};
use airsync_streamer::server::answerer::{self, Answerer, ReceivedMedia};
use airsync_streamer::session::Phase;
use airsync_streamer::supervisor;
use tokio_util::sync::CancellationToken;

pub const LOOPBACK: &str = "127.0.0.1";

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TEST_LOG")
                .unwrap_or_else(|_| "airsync_streamer=info".into()),
        )
        .with_test_writer()
        .with_ansi(false)
        .try_init();
}

pub fn repo_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// ICE pinned to loopback (INTEROP.md point 1): no packet of a test leaves 127.0.0.1.
pub fn loopback_ice() -> IceConfig {
    IceConfig {
        local_addresses: vec![LOOPBACK.parse().unwrap()],
        disconnected_timeout: Duration::from_secs(5),
        ..Default::default()
    }
}

/// The box's configuration for a test: the test pipeline, ICE on loopback.
pub fn box_config(url: &str) -> Config {
    box_config_with(url, |_| {})
}

pub fn box_config_with(url: &str, tweak: impl FnOnce(&mut StreamArgs)) -> Config {
    let mut args = StreamArgs {
        url: Some(url.to_owned()),
        pipeline: Some(repo_path("pipelines/test.pipeline")),
        ice_addresses: vec![LOOPBACK.parse().unwrap()],
        ..Default::default()
    };
    tweak(&mut args);
    let mut cfg = Config::build(FileConfig::default(), Path::new("."), &args).unwrap();
    cfg.reconnect.initial = Duration::from_millis(200);
    cfg.reconnect.max = Duration::from_secs(2);
    cfg
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dir {
    FromBox,
    ToBox,
}

/// Every text frame that crossed the socket, in order.
pub type FrameLog = Arc<Mutex<Vec<(Dir, String)>>>;

/// When each offer, answer and candidate crossed the socket: (direction, type, time).
pub type SignalTimes = Arc<Mutex<Vec<(Dir, String, std::time::Instant)>>>;

pub struct ProtocolServer {
    pub addr: SocketAddr,
    pub frames: FrameLog,
    pub signal_times: SignalTimes,
    /// One entry per connection: what its answerer decodes.
    pub sessions: mpsc::UnboundedReceiver<Arc<ReceivedMedia>>,
}

impl ProtocolServer {
    pub fn url(&self) -> String {
        format!("ws://{}/box", self.addr)
    }

    pub fn frames_from_box(&self) -> Vec<serde_json::Value> {
        self.frames_in(Dir::FromBox)
    }

    /// The sessionId of each offer the box sent, in order.
    pub fn offered_session_ids(&self) -> Vec<String> {
        self.frames_from_box()
            .iter()
            .filter(|m| m["type"] == "offer")
            .map(|m| m["sessionId"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    pub fn frames_to_box(&self) -> Vec<serde_json::Value> {
        self.frames_in(Dir::ToBox)
    }

    fn frames_in(&self, dir: Dir) -> Vec<serde_json::Value> {
        self.frames
            .lock()
            .unwrap()
            .iter()
            .filter(|(d, _)| *d == dir)
            .map(|(_, t)| serde_json::from_str(t).unwrap())
            .collect()
    }
}

/// The answerer's jitter-buffer latency (webrtcbin `latency`, default 200 ms) from
/// `AIRSYNC_RECEIVER_LATENCY_MS`, for the benchmark: webrtcbin holds the first packet that
/// long, where a browser on loopback starts playing almost at once.
fn receiver_latency_ms() -> Option<u32> {
    std::env::var("AIRSYNC_RECEIVER_LATENCY_MS")
        .ok()?
        .parse()
        .ok()
}

/// Starts the server on 127.0.0.1:0. Each connection gets its own answerer with `ice`.
pub async fn start_server(ice: IceConfig) -> ProtocolServer {
    start_server_with(ice, Vec::new(), None).await
}

/// Like [`start_server`], and when the box's offer arrives the server first sends each of
/// `before_answer` to the box (JSON text; `{sid}` is replaced by the box's sessionId), so they
/// reach the box before the answer does.
pub async fn start_server_injecting(ice: IceConfig, before_answer: Vec<String>) -> ProtocolServer {
    start_server_with(ice, before_answer, None).await
}

/// Like [`start_server`], with every media packet routed through `relay`: the answerer's UDP
/// host candidate is rewritten to the relay's address (the others are dropped) and the box's
/// candidates are withheld from the answerer, which learns the relay as peer-reflexive.
pub async fn start_server_via(ice: IceConfig, relay: Option<Arc<relay::Relay>>) -> ProtocolServer {
    start_server_with(ice, Vec::new(), relay).await
}

async fn start_server_with(
    ice: IceConfig,
    before_answer: Vec<String>,
    relay: Option<Arc<relay::Relay>>,
) -> ProtocolServer {
    let before_answer = Arc::new(before_answer);
    let listener = TcpListener::bind((LOOPBACK, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let frames = FrameLog::default();
    let signal_times = SignalTimes::default();
    let (sessions_tx, sessions) = mpsc::unbounded_channel();
    let log = frames.clone();
    let times = signal_times.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let Ok(ws) = async_tungstenite::tokio::accept_async(tcp).await else {
                continue;
            };
            let answerer = Answerer::new(&ice).expect("answerer starts");
            if let Some(ms) = receiver_latency_ms() {
                answerer.webrtc().element().set_property("latency", ms);
            }
            let _ = sessions_tx.send(answerer.received.clone());
            tokio::spawn(serve_connection(
                ws,
                answerer,
                log.clone(),
                times.clone(),
                before_answer.clone(),
                relay.clone(),
            ));
        }
    });
    ProtocolServer {
        addr,
        frames,
        signal_times,
        sessions,
    }
}

async fn serve_connection<S>(
    ws: async_tungstenite::WebSocketStream<S>,
    answerer: Answerer,
    log: FrameLog,
    times: SignalTimes,
    before_answer: Arc<Vec<String>>,
    relay: Option<Arc<relay::Relay>>,
) where
    S: futures::AsyncRead + futures::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sink, mut stream) = ws.split();
    let (in_tx, in_rx) = mpsc::channel::<Envelope>(64);
    let (out_tx, mut out_rx) = mpsc::channel::<Envelope>(64);
    let peer = tokio::spawn(answerer::run(answerer, in_rx, out_tx));
    loop {
        tokio::select! {
            frame = stream.next() => match frame {
                Some(Ok(Message::Text(text))) => {
                    log.lock().unwrap().push((Dir::FromBox, text.to_string()));
                    if let Ok(inbound) = protocol::decode(&text) {
                        times.lock().unwrap().push((Dir::FromBox, signal_kind(&inbound.envelope.signal).into(), Instant::now()));
                        if matches!(inbound.envelope.signal, protocol::Signal::Offer { .. }) {
                            for template in before_answer.iter() {
                                let text = template.replace("{sid}", &inbound.envelope.session_id);
                                log.lock().unwrap().push((Dir::ToBox, text.clone()));
                                let _ = sink.send(Message::text(text)).await;
                            }
                        }
                        let withheld = relay.is_some()
                            && matches!(inbound.envelope.signal, protocol::Signal::Candidate { .. });
                        if !withheld {
                            let _ = in_tx.send(inbound.envelope).await;
                        }
                    }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            },
            Some(mut envelope) = out_rx.recv() => {
                if let (Some(relay), protocol::Signal::Candidate { candidate, .. }) =
                    (&relay, &mut envelope.signal)
                {
                    match relay::rewrite_host_candidate(candidate, relay.addr) {
                        Some((rewritten, real)) => {
                            relay.set_receiver(real);
                            *candidate = rewritten;
                        }
                        None => continue,
                    }
                }
                times.lock().unwrap().push((Dir::ToBox, signal_kind(&envelope.signal).into(), Instant::now()));
                let text = protocol::encode(&envelope);
                log.lock().unwrap().push((Dir::ToBox, text.clone()));
                if sink.send(Message::text(text)).await.is_err() {
                    break;
                }
            }
        }
    }
    drop(in_tx);
    let _ = tokio::time::timeout(Duration::from_secs(2), peer).await;
}

/// Polls `cond` until it holds or `within` passes; returns whether it held.
pub async fn wait_for(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    loop {
        if cond() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tick.tick().await;
    }
}

fn signal_kind(signal: &protocol::Signal) -> &'static str {
    match signal {
        protocol::Signal::Offer { .. } => "offer",
        protocol::Signal::Answer { .. } => "answer",
        protocol::Signal::Candidate { .. } => "candidate",
        protocol::Signal::EndOfCandidates => "end-of-candidates",
    }
}

/// A box (the supervisor, as `main` runs it) streaming in this process.
pub struct RunningBox {
    pub status: Arc<Status>,
    pub started: Instant,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl RunningBox {
    pub fn start(cfg: Config) -> RunningBox {
        init_tracing();
        let status = Arc::new(Status::default());
        let shutdown = CancellationToken::new();
        let task = {
            let (status, shutdown) = (status.clone(), shutdown.clone());
            tokio::spawn(async move { supervisor::run(&cfg, shutdown, status).await })
        };
        RunningBox {
            status,
            started: Instant::now(),
            shutdown,
            task,
        }
    }

    pub fn counter(&self, pick: impl Fn(&Counters) -> &std::sync::atomic::AtomicU64) -> u64 {
        Counters::get(pick(&self.status.counters))
    }

    pub fn is_streaming(&self, session_id: &str) -> bool {
        matches!(&*self.status.phase.borrow(), Phase::Streaming { session_id: s } if s == session_id)
    }

    pub fn report(&self, what: &str) {
        let c = &self.status.counters;
        println!(
            "{what}: started {} failed {} streamed {} dropped {} remote candidates {} phase {:?}",
            Counters::get(&c.sessions_started),
            Counters::get(&c.sessions_failed),
            Counters::get(&c.sessions_streamed),
            Counters::get(&c.remote_messages_dropped),
            Counters::get(&c.remote_candidates_added),
            *self.status.phase.borrow()
        );
    }

    /// Stops the box (failing the test past 10 s) and checks that no pipeline is left running
    /// or alive.
    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("the box stops promptly")
            .unwrap();
        assert_eq!(*self.status.phase.borrow(), Phase::Stopped);
        assert_eq!(
            self.status.pipelines_running.get(),
            0,
            "a pipeline was left out of Null"
        );
        let alive = &self.status.pipelines_alive;
        let freed = wait_for(Duration::from_secs(5), || alive.get() == 0).await;
        assert!(freed, "{} pipeline object(s) never freed", alive.get());
    }
}

impl ProtocolServer {
    /// What the answerer of the next connection receives, once the box has connected.
    pub async fn next_session(&mut self) -> Arc<ReceivedMedia> {
        tokio::time::timeout(Duration::from_secs(20), self.sessions.recv())
            .await
            .expect("the box connects")
            .expect("server running")
    }
}

/// Prints how long the first decoded frame took, for watching, never asserting.
pub fn print_time_to_first_frame(what: &str, received: &ReceivedMedia, since: Instant) {
    if let Some(first) = received.first_video_frame.get() {
        println!(
            "{what}: time to first decoded frame {:?}",
            first.duration_since(since)
        );
    }
}
