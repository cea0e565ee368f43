//! The signalling socket: connects, caps frame size, pings, and moves [`Envelope`]s in and out.
//! It knows no GStreamer. Malformed frames are logged here, once, and dropped.

use std::sync::Arc;
use std::time::Duration;

use async_tungstenite::tungstenite::{
    self, client::IntoClientRequest, http::HeaderValue, protocol::WebSocketConfig, Message,
};
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn, Instrument};

use crate::config::{SignallingConfig, TokenPlacement};
use crate::protocol::{self, Envelope};

#[derive(Debug, thiserror::Error)]
pub enum SignallingError {
    #[error("cannot connect to {url}: {reason}")]
    Connect { url: String, reason: String },
    #[error("connecting to {url} timed out after {after:?}")]
    ConnectTimeout { url: String, after: Duration },
    #[error("TLS set-up: {0}")]
    Tls(String),
}

/// What the socket task reports to its session.
#[derive(Debug)]
pub enum Incoming {
    Message(Envelope),
    /// The socket is gone; the text says why. Nothing follows it.
    Closed(String),
}

/// The session's end of a connected socket. Dropping it closes the socket with a close frame.
pub struct SignallingHandle {
    pub outbound: mpsc::Sender<Envelope>,
    pub inbound: mpsc::Receiver<Incoming>,
    task: JoinHandle<()>,
}

impl SignallingHandle {
    /// Closes the socket politely (close frame) and waits for the task, at most `within`.
    pub async fn close(self, within: Duration) {
        let SignallingHandle {
            outbound,
            inbound,
            task,
        } = self;
        drop(outbound);
        drop(inbound);
        if tokio::time::timeout(within, task).await.is_err() {
            warn!("signalling socket did not close within {within:?}");
        }
    }
}

/// The URL as it may be logged: no query (it may carry the token), no user info.
pub fn loggable_url(url: &url::Url) -> String {
    let mut u = url.clone();
    u.set_query(None);
    let _ = u.set_password(None);
    let _ = u.set_username("");
    u.to_string()
}

pub async fn connect(cfg: &SignallingConfig) -> Result<SignallingHandle, SignallingError> {
    let shown = loggable_url(&cfg.url);
    let mut url = cfg.url.clone();
    if let (Some(token), TokenPlacement::Query) = (&cfg.token, cfg.token_in) {
        url.query_pairs_mut().append_pair("token", token.expose());
    }
    let mut request = url
        .as_str()
        .into_client_request()
        .map_err(|e| SignallingError::Connect {
            url: shown.clone(),
            reason: e.to_string(),
        })?;
    if let (Some(token), TokenPlacement::Header) = (&cfg.token, cfg.token_in) {
        let mut value = HeaderValue::from_str(&format!("Bearer {}", token.expose()))
            .map_err(|_| SignallingError::Tls("token is not a valid header value".into()))?;
        value.set_sensitive(true);
        request.headers_mut().insert("authorization", value);
    }
    let connector = if cfg.url.scheme() == "wss" {
        Some(tls_connector(cfg.ca_file.as_deref())?)
    } else {
        None
    };
    let ws_config = WebSocketConfig::default()
        .max_message_size(Some(cfg.max_message_size))
        .max_frame_size(Some(cfg.max_message_size));
    let connecting = async_tungstenite::tokio::connect_async_with_tls_connector_and_config(
        request,
        connector,
        Some(ws_config),
    );
    let (ws, _response) = tokio::time::timeout(cfg.connect_timeout, connecting)
        .await
        .map_err(|_| SignallingError::ConnectTimeout {
            url: shown.clone(),
            after: cfg.connect_timeout,
        })?
        .map_err(|e| SignallingError::Connect {
            url: shown.clone(),
            reason: describe_ws_error(&e),
        })?;
    info!(url = %shown, "signalling connected");

    let (out_tx, out_rx) = mpsc::channel(256);
    let (in_tx, in_rx) = mpsc::channel(256);
    let task = tokio::spawn(
        run(ws, out_rx, in_tx, cfg.ping_interval, cfg.max_message_size)
            .instrument(tracing::Span::current()),
    );
    Ok(SignallingHandle {
        outbound: out_tx,
        inbound: in_rx,
        task,
    })
}

fn describe_ws_error(e: &tungstenite::Error) -> String {
    match e {
        tungstenite::Error::Http(resp) => format!("server answered HTTP {}", resp.status()),
        other => other.to_string(),
    }
}

fn tls_connector(
    ca_file: Option<&std::path::Path>,
) -> Result<tokio_rustls::TlsConnector, SignallingError> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(native.certs);
    if let Some(path) = ca_file {
        let pem = std::fs::read(path).map_err(|e| {
            SignallingError::Tls(format!("reading CA file {}: {e}", path.display()))
        })?;
        let mut added = 0;
        for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
            let cert =
                cert.map_err(|e| SignallingError::Tls(format!("CA file {}: {e}", path.display())))?;
            roots
                .add(cert)
                .map_err(|e| SignallingError::Tls(format!("CA file {}: {e}", path.display())))?;
            added += 1;
        }
        if added == 0 {
            return Err(SignallingError::Tls(format!(
                "CA file {} holds no PEM certificate",
                path.display()
            )));
        }
    }
    if roots.is_empty() {
        return Err(SignallingError::Tls(
            "no trusted root certificates: install ca-certificates or set signalling.ca_file"
                .into(),
        ));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| SignallingError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

type Socket = async_tungstenite::WebSocketStream<async_tungstenite::tokio::ConnectStream>;

/// The socket task: the only reader and writer of the socket.
async fn run(
    ws: Socket,
    mut outbound: mpsc::Receiver<Envelope>,
    inbound: mpsc::Sender<Incoming>,
    ping_interval: Duration,
    max_message_size: usize,
) {
    let (mut sink, mut stream) = ws.split();
    let mut ping = tokio::time::interval(ping_interval);
    ping.tick().await;
    let mut last_heard = tokio::time::Instant::now();
    let end = loop {
        tokio::select! {
            // A stop goes first, ahead of any backlog of incoming frames.
            biased;
            out = outbound.recv() => match out {
                Some(envelope) => {
                    if let Err(e) = sink.send(Message::text(protocol::encode(&envelope))).await {
                        break End::Lost(format!("send failed: {e}"));
                    }
                }
                None => break End::Close,
            },
            frame = stream.next() => {
                last_heard = tokio::time::Instant::now();
                match frame {
                    None => break End::Lost("server closed the connection".to_owned()),
                    Some(Err(tungstenite::Error::Capacity(e))) => {
                        break End::Lost(format!("frame over the {max_message_size}-byte limit ({e})"));
                    }
                    Some(Err(e)) => break End::Lost(format!("read failed: {e}")),
                    Some(Ok(Message::Text(text))) => {
                        if let Some(envelope) = handle_text(text.as_str()) {
                            if inbound.send(Incoming::Message(envelope)).await.is_err() {
                                // The session is stopping: close as if asked to.
                                break End::Close;
                            }
                        }
                    }
                    Some(Ok(Message::Binary(b))) => {
                        warn!(bytes = b.len(), "dropped a binary frame: the protocol uses text frames only");
                    }
                    Some(Ok(Message::Close(frame))) => {
                        break End::Lost(match frame {
                            Some(f) => format!("server closed the connection ({} {})", f.code, f.reason),
                            None => "server closed the connection".to_owned(),
                        });
                    }
                    Some(Ok(_)) => {} // ping/pong: tungstenite answers pings itself
                }
            }
            _ = ping.tick() => {
                if last_heard.elapsed() > ping_interval * 3 {
                    break End::Lost(format!("server silent for {:?} (no pong)", last_heard.elapsed()));
                }
                if let Err(e) = sink.send(Message::Ping(Default::default())).await {
                    break End::Lost(format!("ping failed: {e}"));
                }
            }
        }
    };
    let reason = match end {
        End::Lost(reason) => reason,
        End::Close => {
            let _ = sink.close(None).await;
            // Let the server's close frame arrive so the close handshake completes.
            let _ = tokio::time::timeout(Duration::from_millis(500), async {
                while let Some(Ok(m)) = stream.next().await {
                    if m.is_close() {
                        break;
                    }
                }
            })
            .await;
            return;
        }
    };
    debug!(%reason, "signalling socket ended");
    let _ = inbound.send(Incoming::Closed(reason)).await;
}

/// How the socket task's loop ends.
enum End {
    /// The session dropped its ends of the channels: close with a close frame.
    Close,
    /// The connection was lost, for this reason; the session hears it.
    Lost(String),
}

/// Decodes one text frame; logs and drops what cannot be used.
fn handle_text(text: &str) -> Option<Envelope> {
    match protocol::decode(text) {
        Ok(inbound) => {
            if !inbound.unknown_fields.is_empty() {
                debug!(fields = ?inbound.unknown_fields, "ignoring unknown message fields");
            }
            Some(inbound.envelope)
        }
        Err(e) if e.is_ignorable() => {
            info!(reason = %e, "ignoring message");
            None
        }
        Err(e) => {
            warn!(reason = %e, bytes = text.len(), "dropped a malformed signalling message");
            None
        }
    }
}
