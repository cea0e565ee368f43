//! HTTP and WebSocket handling: the viewer page, `/box` for boxes speaking PROTOCOL.md and
//! `/viewer` for viewer pages. Each socket is one task that turns frames into [`HubEvent`]s
//! and hub commands into frames; whatever a peer sends wrong is logged here and stays with
//! that one connection.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::extract::connect_info::Connected;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, Query, State};
use axum::http::header;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::serve::IncomingStream;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn, Instrument};

use super::hub::{BoxCommand, HubEvent, SOCKET_QUEUE};
use super::tls::TlsListener;
use super::viewer_protocol;
use super::ServeStatus;
use crate::protocol;

const VIEWER_PAGE: &str = include_str!("viewer.html");

/// Malformed messages tolerated on one connection before it is closed: a real peer sends
/// none, so this only bounds how much log a broken or hostile client can cause.
const MAX_BAD_MESSAGES: u32 = 100;

/// WebSocket close codes (RFC 6455).
const CLOSE_NORMAL: u16 = 1000;
const CLOSE_GOING_AWAY: u16 = 1001;

#[derive(Clone)]
pub struct AppState {
    pub hub: mpsc::Sender<HubEvent>,
    pub next_id: Arc<AtomicU64>,
    pub max_message_size: usize,
    /// A connection that sends nothing for this long is closed; pinged every third of it.
    pub idle_timeout: std::time::Duration,
    pub shutdown: CancellationToken,
    pub status: Arc<ServeStatus>,
}

/// The client's address, from plain TCP or TLS connections alike.
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub SocketAddr);

impl Connected<IncomingStream<'_, TcpListener>> for PeerAddr {
    fn connect_info(stream: IncomingStream<'_, TcpListener>) -> Self {
        PeerAddr(*stream.remote_addr())
    }
}

impl Connected<IncomingStream<'_, TlsListener>> for PeerAddr {
    fn connect_info(stream: IncomingStream<'_, TlsListener>) -> Self {
        PeerAddr(*stream.remote_addr())
    }
}

pub fn app(state: AppState) -> axum::Router {
    axum::Router::new()
        .route("/", get(viewer_page))
        .route("/box", get(box_socket))
        .route("/viewer", get(viewer_socket))
        .with_state(state)
}

async fn viewer_page() -> Response {
    ([(header::CACHE_CONTROL, "no-store")], Html(VIEWER_PAGE)).into_response()
}

async fn box_socket(
    ws: WebSocketUpgrade,
    State(state): State<AppState>,
    ConnectInfo(PeerAddr(addr)): ConnectInfo<PeerAddr>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let id = state.next_id.fetch_add(1, Ordering::Relaxed);
    // A box is known across reconnects by the `name` it puts in its URL, else by its address.
    let key = query
        .get("name")
        .filter(|n| !n.is_empty() && n.len() <= 64)
        .cloned()
        .unwrap_or_else(|| addr.ip().to_string());
    let span = tracing::info_span!("box", box_id = id, %addr);
    limits(ws, state.max_message_size)
        .on_upgrade(move |socket| run_box(socket, id, key, state).instrument(span))
}

async fn viewer_socket(
    ws: WebSocketUpgrade,
    State(state): State<AppState>,
    ConnectInfo(PeerAddr(addr)): ConnectInfo<PeerAddr>,
) -> Response {
    let id = state.next_id.fetch_add(1, Ordering::Relaxed);
    let span = tracing::info_span!("viewer", viewer_id = id, %addr);
    limits(ws, state.max_message_size)
        .on_upgrade(move |socket| run_viewer(socket, id, state).instrument(span))
}

/// Frames and messages above the limit end that connection (tungstenite refuses to buffer them).
fn limits(ws: WebSocketUpgrade, max: usize) -> WebSocketUpgrade {
    ws.max_message_size(max).max_frame_size(max)
}

/// What ended a socket's loop.
enum End {
    Closed(String),
    /// A protocol or I/O error ended the connection (e.g. a frame over the size limit).
    Failed(String),
    Shutdown,
    ByHub(&'static str),
}

/// What a text frame from the peer turned out to be.
enum Decoded {
    Event(HubEvent),
    /// Well-formed but of no use here (e.g. a message type from a newer protocol).
    Ignored(String),
    Malformed(String),
}

/// One kind of connection: who is on the other end, and how its frames and the hub's
/// commands translate.
struct Peer<O, E, D> {
    /// "box" or "viewer", for the log.
    who: &'static str,
    /// What the hub sends this connection.
    commands: mpsc::Receiver<O>,
    /// A hub command as a text frame, or the reason to close.
    encode: E,
    decode: D,
}

async fn run_box(socket: WebSocket, id: u64, key: String, state: AppState) {
    let (tx, commands) = mpsc::channel(SOCKET_QUEUE);
    let _ = state.hub.send(HubEvent::BoxConnected { id, key, tx }).await;
    let peer = Peer {
        who: "box",
        commands,
        encode: |command| match command {
            BoxCommand::Send(envelope) => Ok(protocol::encode(&envelope)),
            BoxCommand::Close(reason) => Err(reason),
        },
        decode: |text: &str| match protocol::decode(text) {
            Ok(inbound) => {
                if !inbound.unknown_fields.is_empty() {
                    debug!(fields = ?inbound.unknown_fields, "unknown fields ignored");
                }
                Decoded::Event(HubEvent::BoxMessage {
                    id,
                    envelope: inbound.envelope,
                })
            }
            Err(e) if e.is_ignorable() => Decoded::Ignored(e.to_string()),
            Err(e) => Decoded::Malformed(e.to_string()),
        },
    };
    run_connection(socket, &state, peer).await;
    let _ = state.hub.send(HubEvent::BoxGone { id }).await;
}

async fn run_viewer(socket: WebSocket, id: u64, state: AppState) {
    let (tx, commands) = mpsc::channel::<String>(SOCKET_QUEUE);
    let _ = state.hub.send(HubEvent::ViewerConnected { id, tx }).await;
    let peer = Peer {
        who: "viewer",
        commands,
        encode: Ok,
        decode: |text: &str| match viewer_protocol::decode(text) {
            Ok(message) => Decoded::Event(HubEvent::ViewerMessage { id, message }),
            Err(e) => Decoded::Malformed(e.to_string()),
        },
    };
    run_connection(socket, &state, peer).await;
    let _ = state.hub.send(HubEvent::ViewerGone { id }).await;
}

/// The one reader and writer of a connection, until the peer, the hub, an error, silence or
/// the server's shutdown ends it. The server pings every third of `idle_timeout`; a peer that
/// sends nothing, not even the pong every WebSocket client answers with, for `idle_timeout`
/// is gone (a laptop closed, a network lost without a TCP reset).
async fn run_connection<O, E, D>(mut socket: WebSocket, state: &AppState, mut peer: Peer<O, E, D>)
where
    E: Fn(O) -> Result<String, &'static str>,
    D: Fn(&str) -> Decoded,
{
    let who = peer.who;
    let mut bad = 0;
    let mut heard = tokio::time::Instant::now();
    let mut ping = tokio::time::interval(state.idle_timeout / 3);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ping.tick().await;
    let end = loop {
        if bad > MAX_BAD_MESSAGES {
            break End::Failed(format!("more than {MAX_BAD_MESSAGES} malformed messages"));
        }
        tokio::select! {
            _ = state.shutdown.cancelled() => break End::Shutdown,
            _ = ping.tick() => {
                if heard.elapsed() >= state.idle_timeout {
                    break End::Failed(format!(
                        "nothing heard from the {who} for {:?}",
                        state.idle_timeout
                    ));
                }
                if let Err(e) = socket.send(Message::Ping(Default::default())).await {
                    break End::Closed(format!("send failed: {e}"));
                }
            }
            command = peer.commands.recv() => match command.map(&peer.encode) {
                Some(Ok(text)) => {
                    if let Err(e) = socket.send(Message::Text(text.into())).await {
                        break End::Closed(format!("send failed: {e}"));
                    }
                }
                Some(Err(reason)) => break End::ByHub(reason),
                None => break End::Closed("hub gone".into()),
            },
            frame = socket.recv() => {
                heard = tokio::time::Instant::now();
                match frame {
                    Some(Ok(Message::Text(text))) => match (peer.decode)(text.as_str()) {
                        Decoded::Event(event) => {
                            let _ = state.hub.send(event).await;
                        }
                        Decoded::Ignored(why) => info!(error = %why, "message ignored"),
                        Decoded::Malformed(why) => {
                            bad += 1;
                            state.status.bump_dropped();
                            warn!(error = %why, len = text.len(), "malformed message from the {who} dropped");
                        }
                    },
                    Some(Ok(Message::Binary(b))) => {
                        bad += 1;
                        state.status.bump_dropped();
                        warn!(len = b.len(), "binary frame from the {who} dropped: the protocol is text frames only");
                    }
                    Some(Ok(Message::Close(frame))) => {
                        break End::Closed(format!(
                            "closed by the {who} ({:?})",
                            frame.map(|f| f.code)
                        ))
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => break End::Failed(format!("socket error: {e}")),
                    None => break End::Closed("connection dropped".into()),
                }
            },
        }
    };
    finish(&mut socket, &end).await;
}

async fn finish(socket: &mut WebSocket, end: &End) {
    let (code, reason) = match end {
        End::Closed(why) => {
            info!(reason = %why, "connection ended");
            return;
        }
        End::Failed(why) => {
            warn!(reason = %why, "connection ended by an error");
            return;
        }
        End::Shutdown => (CLOSE_GOING_AWAY, "server shutting down"),
        End::ByHub(reason) => {
            info!(reason, "closing the connection");
            (CLOSE_NORMAL, *reason)
        }
    };
    let frame = CloseFrame {
        code,
        reason: reason.into(),
    };
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(2),
        socket.send(Message::Close(Some(frame))),
    )
    .await;
}
