//! A scriptable signalling server on 127.0.0.1 for fault tests: the test decides what each
//! connection sends (junk, binary frames, huge frames, nothing), can hand a connection to a
//! real answering webrtcbin, drop sockets, or kill the whole server and restart it on the
//! same port. Optionally TLS (wss://) with a test certificate.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_tungstenite::tungstenite::handshake::server::{Request, Response};
use async_tungstenite::tungstenite::Message;
use futures::StreamExt;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use airsync_streamer::config::IceConfig;
use airsync_streamer::protocol;
use airsync_streamer::server::answerer::{self, Answerer, ReceivedMedia};

use super::LOOPBACK;

/// What the test makes the server send to the box.
#[derive(Debug)]
pub enum ToBox {
    Text(String),
    Binary(Vec<u8>),
    /// Drop the TCP connection without a close frame.
    Drop,
}

/// What one connection saw; shared by the socket task and the test.
#[derive(Debug, Default)]
pub struct ConnState {
    /// Every text frame from the box, in order.
    pub log: Mutex<Vec<String>>,
    /// Every text frame sent to the box, in order.
    pub sent: Mutex<Vec<String>>,
    /// The box sent a close frame.
    pub close_frame: AtomicBool,
    /// The socket is gone (either side).
    pub gone: AtomicBool,
}

impl ConnState {
    pub fn frames(&self) -> Vec<serde_json::Value> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter_map(|t| serde_json::from_str(t).ok())
            .collect()
    }

    pub fn is_gone(&self) -> bool {
        self.gone.load(Ordering::SeqCst)
    }

    pub fn saw_close_frame(&self) -> bool {
        self.close_frame.load(Ordering::SeqCst)
    }
}

/// One accepted connection, as the test drives it.
pub struct Conn {
    /// The request target (path and query) of the WebSocket upgrade.
    pub request_uri: String,
    /// The `Authorization` header of the upgrade, if any.
    pub authorization: Option<String>,
    pub state: Arc<ConnState>,
    from_box: mpsc::UnboundedReceiver<String>,
    taken: usize,
    to_box: mpsc::UnboundedSender<ToBox>,
}

/// The box's offer as the server saw it.
#[derive(Debug, Clone)]
pub struct Offer {
    pub session_id: String,
    pub sdp: String,
}

impl Conn {
    /// The next text frame from the box, or `None` if the socket ended or `within` passed.
    pub async fn recv_text(&mut self, within: Duration) -> Option<String> {
        let text = tokio::time::timeout(within, self.from_box.recv())
            .await
            .ok()??;
        self.taken += 1;
        Some(text)
    }

    /// Waits for the box's offer, skipping anything else.
    pub async fn offer(&mut self, within: Duration) -> Offer {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let text = self.recv_text(left).await.expect("the box sends an offer");
            let v: serde_json::Value = serde_json::from_str(&text).expect("the box sends JSON");
            if v["type"] == "offer" {
                return Offer {
                    session_id: v["sessionId"].as_str().unwrap().to_owned(),
                    sdp: v["sdp"].as_str().unwrap().to_owned(),
                };
            }
        }
    }

    pub fn sender(&self) -> mpsc::UnboundedSender<ToBox> {
        self.to_box.clone()
    }

    pub fn send_text(&self, text: impl Into<String>) {
        let _ = self.to_box.send(ToBox::Text(text.into()));
    }

    pub fn send_json(&self, value: &serde_json::Value) {
        self.send_text(value.to_string());
    }

    pub fn drop_socket(&self) {
        let _ = self.to_box.send(ToBox::Drop);
    }

    /// Hands the connection to a real answering webrtcbin: every frame the box sent so far
    /// and from now on goes to it, its answer and candidates go to the box. The returned
    /// sender still lets the test inject frames of its own.
    pub fn bridge(self, ice: &IceConfig) -> Bridge {
        let answerer = Answerer::new(ice).expect("answerer starts");
        let received = answerer.received.clone();
        let (in_tx, in_rx) = mpsc::channel(1024);
        let (out_tx, mut out_rx) = mpsc::channel(1024);
        let peer = tokio::spawn(answerer::run(answerer, in_rx, out_tx));
        let replay: Vec<String> = self.state.log.lock().unwrap()[..self.taken].to_vec();
        let mut from_box = self.from_box;
        let to_box = self.to_box.clone();
        let forward = tokio::spawn(async move {
            for text in replay {
                if let Ok(inbound) = protocol::decode(&text) {
                    let _ = in_tx.send(inbound.envelope).await;
                }
            }
            loop {
                tokio::select! {
                    text = from_box.recv() => match text {
                        Some(text) => if let Ok(inbound) = protocol::decode(&text) {
                            let _ = in_tx.send(inbound.envelope).await;
                        },
                        None => break,
                    },
                    Some(envelope) = out_rx.recv() => {
                        let _ = to_box.send(ToBox::Text(protocol::encode(&envelope)));
                    }
                }
            }
            drop(in_tx);
            let _ = tokio::time::timeout(Duration::from_secs(3), peer).await;
        });
        Bridge {
            received,
            to_box: self.to_box,
            state: self.state,
            request_uri: self.request_uri,
            authorization: self.authorization,
            forward,
        }
    }
}

/// A connection answered by a real webrtcbin.
pub struct Bridge {
    pub received: Arc<ReceivedMedia>,
    pub to_box: mpsc::UnboundedSender<ToBox>,
    pub state: Arc<ConnState>,
    pub request_uri: String,
    pub authorization: Option<String>,
    forward: JoinHandle<()>,
}

impl Bridge {
    pub fn send_text(&self, text: impl Into<String>) {
        let _ = self.to_box.send(ToBox::Text(text.into()));
    }

    pub fn send_json(&self, value: &serde_json::Value) {
        self.send_text(value.to_string());
    }

    /// The answering peer vanishes (its pipeline goes to NULL, no goodbye) while the socket
    /// stays open, as when the server's media side dies.
    pub fn kill_peer(&self) {
        self.forward.abort();
    }

    /// Whether the answerer has decoded `frames` video frames within `within`.
    pub async fn decodes(&self, frames: u64, within: Duration) -> bool {
        super::wait_for(within, || self.received.video_frames() >= frames).await
    }

    /// Waits until the answerer's side of the connection has wound down.
    pub async fn finish(self) {
        let _ = tokio::time::timeout(Duration::from_secs(5), self.forward).await;
    }
}

pub struct FaultServer {
    pub addr: SocketAddr,
    /// wss:// when set.
    tls: Option<tokio_rustls::TlsAcceptor>,
    conns: mpsc::UnboundedReceiver<Conn>,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
    /// TLS handshakes that failed (the client refused our certificate, say).
    pub tls_failures: Arc<AtomicU64>,
}

impl FaultServer {
    pub async fn start() -> FaultServer {
        Self::start_on(SocketAddr::new(LOOPBACK.parse().unwrap(), 0), None).await
    }

    /// Binds `addr` (retrying for a few seconds if the port is still held), plain or TLS.
    pub async fn start_on(addr: SocketAddr, tls: Option<tokio_rustls::TlsAcceptor>) -> FaultServer {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        let listener = loop {
            match TcpListener::bind(addr).await {
                Ok(l) => break l,
                Err(e) if tokio::time::Instant::now() < deadline => {
                    eprintln!("bind {addr}: {e}; retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("cannot bind {addr}: {e}"),
            }
        };
        let addr = listener.local_addr().unwrap();
        let (conns_tx, conns) = mpsc::unbounded_channel();
        let tasks: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let tls_failures = Arc::new(AtomicU64::new(0));
        let accept = {
            let (tasks, tls, tls_failures) = (tasks.clone(), tls.clone(), tls_failures.clone());
            tokio::spawn(async move {
                while let Ok((tcp, _)) = listener.accept().await {
                    let conns_tx = conns_tx.clone();
                    let (tls, tls_failures) = (tls.clone(), tls_failures.clone());
                    let task = tokio::spawn(async move {
                        match tls {
                            Some(acceptor) => match acceptor.accept(tcp).await {
                                Ok(stream) => handshake_and_serve(stream, conns_tx).await,
                                Err(e) => {
                                    eprintln!("fault server: TLS handshake failed: {e}");
                                    tls_failures.fetch_add(1, Ordering::SeqCst);
                                }
                            },
                            None => handshake_and_serve(tcp, conns_tx).await,
                        }
                    });
                    tasks.lock().unwrap().push(task);
                }
            })
        };
        tasks.lock().unwrap().push(accept);
        FaultServer {
            addr,
            tls,
            conns,
            tasks,
            tls_failures,
        }
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "wss" } else { "ws" };
        format!("{scheme}://{}/box", self.addr)
    }

    /// The next connection; panics if none comes within `within`.
    pub async fn next_conn(&mut self, within: Duration) -> Conn {
        self.try_next_conn(within)
            .await
            .expect("the box connects to the server")
    }

    /// The next connection and its offer, handed to a real answering webrtcbin with ICE on
    /// loopback; panics if the connection or the offer does not come within `within`.
    pub async fn next_bridged(&mut self, within: Duration) -> (Offer, Bridge) {
        let mut conn = self.next_conn(within).await;
        let offer = conn.offer(within).await;
        (offer, conn.bridge(&super::loopback_ice()))
    }

    pub async fn try_next_conn(&mut self, within: Duration) -> Option<Conn> {
        tokio::time::timeout(within, self.conns.recv())
            .await
            .ok()
            .flatten()
    }

    /// Kills the server as a crash would: the listener closes and every socket is dropped
    /// without a close frame. Returns the address, to restart on the same port.
    pub fn kill(self) -> SocketAddr {
        self.addr
    }
}

impl Drop for FaultServer {
    fn drop(&mut self) {
        for task in self.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
    }
}

async fn handshake_and_serve<S>(stream: S, conns: mpsc::UnboundedSender<Conn>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let mut seen: Option<(String, Option<String>)> = None;
    // The signature is tungstenite's `Callback`; its error type is not ours to shrink.
    #[allow(clippy::result_large_err)]
    let callback = |req: &Request, resp: Response| {
        let auth = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        seen = Some((req.uri().to_string(), auth));
        Ok(resp)
    };
    let Ok(ws) = async_tungstenite::tokio::accept_hdr_async(stream, callback).await else {
        return;
    };
    let (request_uri, authorization) = seen.unwrap_or_default();
    let state = Arc::new(ConnState::default());
    let (from_tx, from_box) = mpsc::unbounded_channel();
    let (to_box, mut to_rx) = mpsc::unbounded_channel();
    let conn = Conn {
        request_uri,
        authorization,
        state: state.clone(),
        from_box,
        taken: 0,
        to_box,
    };
    if conns.send(conn).is_err() {
        return;
    }
    let (mut sink, mut stream) = ws.split();
    loop {
        tokio::select! {
            frame = stream.next() => match frame {
                Some(Ok(Message::Text(text))) => {
                    state.log.lock().unwrap().push(text.to_string());
                    let _ = from_tx.send(text.to_string());
                }
                // tungstenite queues the reply; reading on completes the close handshake.
                Some(Ok(Message::Close(_))) => state.close_frame.store(true, Ordering::SeqCst),
                Some(Ok(_)) => {}
                None | Some(Err(_)) => break,
            },
            cmd = to_rx.recv() => match cmd {
                Some(ToBox::Text(text)) => {
                    state.sent.lock().unwrap().push(text.clone());
                    if sink.send(Message::text(text)).await.is_err() {
                        break;
                    }
                }
                Some(ToBox::Binary(bytes)) => {
                    if sink.send(Message::binary(bytes)).await.is_err() {
                        break;
                    }
                }
                Some(ToBox::Drop) | None => break,
            }
        }
    }
    state.gone.store(true, Ordering::SeqCst);
}
