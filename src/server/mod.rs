//! The server side of the protocol: `serve` is a signalling server for boxes with a viewer page.
//!
//! - `routing`: which peer answers which box session (pure, unit-tested).
//! - `hub`: the single task that owns routing state and carries out its decisions.
//! - `sockets`: HTTP page, `/box` and `/viewer` WebSockets.
//! - `viewer_protocol`: the page's control messages; signals use PROTOCOL.md's own messages.
//! - `answerer`: the server's own receiving webrtcbin, for boxes no browser watches.
//! - `tls`: https/wss when a certificate is given.

pub mod answerer;
mod hub;
pub mod routing;
mod sockets;
mod tls;
pub mod viewer_protocol;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::config::{IceConfig, DEFAULT_MAX_MESSAGE_SIZE};
use answerer::ReceivedMedia;

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8443";
/// Long enough for a browser tab in the background (timers throttled, pongs still answered
/// by the browser itself), short enough that a vanished viewer is noticed within a minute.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub listen: SocketAddr,
    /// PEM certificate chain and key: with both, the server speaks https/wss only.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// ICE of the fallback answerer. With `local_addresses` set, viewer candidates on other
    /// addresses are not relayed to boxes either.
    pub ice: IceConfig,
    /// Larger frames or messages end the connection that sent them.
    pub max_message_size: usize,
    /// A box or viewer connection that sends nothing (not even a pong) for this long is
    /// closed.
    pub idle_timeout: Duration,
}

impl ServeConfig {
    pub fn new(listen: SocketAddr) -> Self {
        ServeConfig {
            listen,
            tls: None,
            ice: IceConfig::default(),
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("TLS set-up with {path}: {message}")]
    Tls { path: PathBuf, message: String },
    #[error("serving failed: {0}")]
    Serve(std::io::Error),
}

/// What the server has done, for logs and tests.
#[derive(Debug, Default)]
pub struct ServeStatus {
    dropped: AtomicU64,
    answered: Mutex<Vec<(String, Arc<ReceivedMedia>)>>,
}

impl ServeStatus {
    /// Messages dropped as malformed, misaddressed or out of place.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Sessions the fallback answerer took, by `sessionId`, with what it received.
    pub fn answered(&self) -> Vec<(String, Arc<ReceivedMedia>)> {
        self.answered.lock().unwrap().clone()
    }

    fn bump_dropped(&self) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
    }

    fn record_answerer(&self, session_id: String, received: Arc<ReceivedMedia>) {
        let mut answered = self.answered.lock().unwrap();
        // Keep the record bounded on a long-running server.
        if answered.len() >= 64 {
            answered.remove(0);
        }
        answered.push((session_id, received));
    }
}

/// A bound, not yet running server: binding first lets callers learn the port (`:0` in tests)
/// and fail early on a bad address or certificate.
pub struct Server {
    tcp: TcpListener,
    addr: SocketAddr,
    tls: Option<Arc<rustls::ServerConfig>>,
    cfg: ServeConfig,
    status: Arc<ServeStatus>,
}

pub async fn bind(cfg: ServeConfig) -> Result<Server, ServeError> {
    let tls = match &cfg.tls {
        Some((cert, key)) => Some(tls::server_config(cert, key)?),
        None => None,
    };
    let tcp = TcpListener::bind(cfg.listen)
        .await
        .map_err(|source| ServeError::Bind {
            addr: cfg.listen,
            source,
        })?;
    let addr = tcp.local_addr().map_err(|source| ServeError::Bind {
        addr: cfg.listen,
        source,
    })?;
    Ok(Server {
        tcp,
        addr,
        tls,
        cfg,
        status: Arc::new(ServeStatus::default()),
    })
}

/// Serves until `shutdown` is cancelled.
pub async fn run(cfg: ServeConfig, shutdown: CancellationToken) -> Result<(), ServeError> {
    bind(cfg).await?.run(shutdown).await
}

impl Server {
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The page to open in a browser.
    pub fn viewer_url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}/", self.addr)
    }

    /// The URL boxes connect to.
    pub fn box_url(&self) -> String {
        let scheme = if self.tls.is_some() { "wss" } else { "ws" };
        format!("{scheme}://{}/box", self.addr)
    }

    pub fn status(&self) -> Arc<ServeStatus> {
        self.status.clone()
    }

    pub async fn run(self, shutdown: CancellationToken) -> Result<(), ServeError> {
        let (hub_tx, hub_rx) = mpsc::channel(hub::SOCKET_QUEUE);
        let hub = hub::Hub::new(self.cfg.ice.clone(), self.status.clone());
        let hub_task = tokio::spawn(hub.run(hub_rx, shutdown.clone()));
        let state = sockets::AppState {
            hub: hub_tx,
            next_id: Arc::new(AtomicU64::new(1)),
            max_message_size: self.cfg.max_message_size,
            idle_timeout: self.cfg.idle_timeout,
            shutdown: shutdown.clone(),
            status: self.status.clone(),
        };
        let app = sockets::app(state).into_make_service_with_connect_info::<sockets::PeerAddr>();
        info!(addr = %self.addr, tls = self.tls.is_some(), "serving");
        let served = match self.tls {
            None => {
                axum::serve(self.tcp, app)
                    .with_graceful_shutdown(shutdown.clone().cancelled_owned())
                    .await
            }
            Some(config) => {
                let listener = tls::TlsListener::new(self.tcp, config, shutdown.clone())
                    .map_err(ServeError::Serve)?;
                axum::serve(listener, app)
                    .with_graceful_shutdown(shutdown.clone().cancelled_owned())
                    .await
            }
        };
        let _ = hub_task.await;
        served.map_err(ServeError::Serve)
    }
}
