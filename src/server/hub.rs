//! The one task that owns the [`Router`] and carries out its decisions: it holds the senders
//! of every box and viewer socket and the fallback answerers. Sockets only talk to it through
//! [`HubEvent`]s, so routing state has a single owner and needs no lock.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn, Instrument};

use super::answerer::{self, Answerer};
use super::routing::{Action, BoxId, Router, ViewerId};
use super::viewer_protocol::{self, FromViewer};
use super::ServeStatus;
use crate::config::IceConfig;
use crate::media::candidate;
use crate::protocol::{Envelope, Signal};

/// Queue depth of each socket's outbound channel; a peer that lets it fill up is too slow to
/// negotiate with and is disconnected rather than buffered for without bound.
pub const SOCKET_QUEUE: usize = 256;

#[derive(Debug)]
pub enum BoxCommand {
    Send(Envelope),
    Close(&'static str),
}

#[derive(Debug)]
pub enum HubEvent {
    BoxConnected {
        id: BoxId,
        key: String,
        tx: mpsc::Sender<BoxCommand>,
    },
    BoxMessage {
        id: BoxId,
        envelope: Envelope,
    },
    BoxGone {
        id: BoxId,
    },
    ViewerConnected {
        id: ViewerId,
        tx: mpsc::Sender<String>,
    },
    ViewerMessage {
        id: ViewerId,
        message: FromViewer,
    },
    ViewerGone {
        id: ViewerId,
    },
    AnswererSignal {
        id: BoxId,
        envelope: Envelope,
    },
    AnswererEnded {
        id: BoxId,
        session_id: String,
    },
}

struct RunningAnswerer {
    session_id: String,
    inbound: mpsc::Sender<Envelope>,
    task: JoinHandle<()>,
}

pub struct Hub {
    router: Router,
    boxes: HashMap<BoxId, mpsc::Sender<BoxCommand>>,
    viewers: HashMap<ViewerId, mpsc::Sender<String>>,
    answerers: HashMap<BoxId, RunningAnswerer>,
    finished: Vec<JoinHandle<()>>,
    ice: IceConfig,
    /// Answerer tasks report here; unbounded because the hub must never make an answerer
    /// (a webrtcbin owner) wait, and answerers send only a handful of messages per session.
    events: mpsc::UnboundedSender<HubEvent>,
    answerer_events: Option<mpsc::UnboundedReceiver<HubEvent>>,
    status: Arc<ServeStatus>,
}

impl Hub {
    pub fn new(ice: IceConfig, status: Arc<ServeStatus>) -> Self {
        let (events, answerer_events) = mpsc::unbounded_channel();
        Hub {
            router: Router::new(),
            boxes: HashMap::new(),
            viewers: HashMap::new(),
            answerers: HashMap::new(),
            finished: Vec::new(),
            ice,
            events,
            answerer_events: Some(answerer_events),
            status,
        }
    }

    /// Runs until `shutdown`; then stops every answerer and waits for them (briefly).
    /// Sockets send on a bounded channel (`inbox`), so a flooding client waits on itself.
    pub async fn run(mut self, mut inbox: mpsc::Receiver<HubEvent>, shutdown: CancellationToken) {
        let mut answerers = self.answerer_events.take().expect("run once");
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                Some(event) = answerers.recv() => self.handle_event(event),
                event = inbox.recv() => match event {
                    Some(event) => self.handle_event(event),
                    None => break,
                },
            }
        }
        let tasks: Vec<_> = self
            .answerers
            .drain()
            .map(|(_, a)| a.task)
            .chain(self.finished.drain(..))
            .collect();
        for task in tasks {
            if tokio::time::timeout(Duration::from_secs(3), task)
                .await
                .is_err()
            {
                warn!("an answerer did not stop within 3 s");
            }
        }
    }

    fn handle_event(&mut self, event: HubEvent) {
        let actions = match event {
            HubEvent::BoxConnected { id, key, tx } => {
                info!(box_id = id, %key, "box connected");
                self.boxes.insert(id, tx);
                self.router.box_connected(id, key)
            }
            HubEvent::BoxMessage { id, envelope } => self.router.box_signal(id, envelope),
            HubEvent::BoxGone { id } => {
                info!(box_id = id, "box gone");
                self.boxes.remove(&id);
                self.router.box_gone(id)
            }
            HubEvent::ViewerConnected { id, tx } => {
                info!(viewer_id = id, "viewer connected");
                self.viewers.insert(id, tx);
                self.router.viewer_connected(id)
            }
            HubEvent::ViewerMessage { id, message } => match message {
                FromViewer::Watch(box_id) => {
                    info!(viewer_id = id, box_id, "viewer chose a box");
                    self.router.viewer_watch(id, box_id)
                }
                FromViewer::Signal(envelope) => match self.admit_viewer_signal(envelope) {
                    Ok(Some(envelope)) => self.router.viewer_signal(id, envelope),
                    Ok(None) => Vec::new(),
                    Err(reason) => vec![Action::Dropped(format!("viewer {id}: {reason}"))],
                },
            },
            HubEvent::ViewerGone { id } => {
                info!(viewer_id = id, "viewer gone");
                self.viewers.remove(&id);
                self.router.viewer_gone(id)
            }
            HubEvent::AnswererSignal { id, envelope } => self.router.answerer_signal(id, envelope),
            HubEvent::AnswererEnded { id, session_id } => {
                if self
                    .answerers
                    .get(&id)
                    .is_some_and(|a| a.session_id == session_id)
                {
                    if let Some(a) = self.answerers.remove(&id) {
                        self.finished.push(a.task);
                    }
                }
                self.router.answerer_ended(id, &session_id)
            }
        };
        self.finished.retain(|t| !t.is_finished());
        for action in actions {
            self.apply(action);
        }
    }

    /// When the server's ICE is pinned to some addresses, a viewer's candidates on other
    /// addresses (its LAN addresses, its mDNS `.local` names) are not passed to the box: a
    /// box pinned the same way (the demo's) cannot use them, and it keeps every connectivity
    /// check on the pinned addresses. The browser still reaches the box from a pinned address
    /// and the box learns it as a peer-reflexive candidate.
    fn admit_viewer_signal(&self, envelope: Envelope) -> Result<Option<Envelope>, String> {
        let pinned = &self.ice.local_addresses;
        if let Signal::Candidate { candidate: c, .. } = &envelope.signal {
            let parsed = candidate::parse(c).map_err(|e| e.to_string())?;
            let on_pinned = parsed
                .address
                .parse::<IpAddr>()
                .is_ok_and(|a| pinned.contains(&a));
            if !pinned.is_empty() && !on_pinned {
                debug!(
                    address = parsed.address,
                    "viewer candidate off the pinned addresses, not relayed"
                );
                return Ok(None);
            }
        }
        Ok(Some(envelope))
    }

    fn apply(&mut self, action: Action) {
        match action {
            Action::ToBox(id, envelope) => {
                if let Some(tx) = self.boxes.get(&id) {
                    if tx.try_send(BoxCommand::Send(envelope)).is_err() {
                        warn!(box_id = id, "box socket is not keeping up; closing it");
                        let _ = tx.try_send(BoxCommand::Close("too slow"));
                    }
                }
            }
            Action::ToViewer(id, message) => {
                if let Some(tx) = self.viewers.get(&id) {
                    if tx.try_send(viewer_protocol::encode(&message)).is_err() {
                        warn!(
                            viewer_id = id,
                            "viewer socket is not keeping up; message dropped"
                        );
                    }
                }
            }
            Action::StartAnswerer(id, offer) => self.start_answerer(id, offer),
            Action::ToAnswerer(id, envelope) => {
                if let Some(a) = self.answerers.get(&id) {
                    if a.inbound.try_send(envelope).is_err() {
                        warn!(box_id = id, "answerer is not keeping up; message dropped");
                    }
                }
            }
            Action::StopAnswerer(id) => {
                // Dropping its inbound sender ends `answerer::run`.
                if let Some(a) = self.answerers.remove(&id) {
                    self.finished.push(a.task);
                }
            }
            Action::CloseBox(id, reason) => {
                if let Some(tx) = self.boxes.get(&id) {
                    info!(
                        box_id = id,
                        reason, "closing the box's socket so it starts a new session"
                    );
                    let _ = tx.try_send(BoxCommand::Close(reason));
                }
            }
            Action::Dropped(reason) => {
                self.status.bump_dropped();
                warn!(%reason, "message dropped");
            }
        }
    }

    fn start_answerer(&mut self, id: BoxId, offer: Envelope) {
        let session_id = offer.session_id.clone();
        let answerer = match Answerer::new(&self.ice) {
            Ok(a) => a,
            Err(e) => {
                warn!(box_id = id, error = %e, "cannot start the fallback answerer");
                self.apply(Action::CloseBox(id, "the server cannot answer"));
                return;
            }
        };
        self.status
            .record_answerer(session_id.clone(), answerer.received.clone());
        let (in_tx, in_rx) = mpsc::channel(SOCKET_QUEUE);
        let (out_tx, mut out_rx) = mpsc::channel::<Envelope>(SOCKET_QUEUE);
        let events = self.events.clone();
        let span = tracing::info_span!("answerer", box_id = id, session_id = %session_id);
        let ended_session = session_id.clone();
        let task = tokio::spawn(
            async move {
                info!("fallback answerer answers the session");
                let run = answerer::run(answerer, in_rx, out_tx);
                tokio::pin!(run);
                let result = loop {
                    tokio::select! {
                        result = &mut run => break result,
                        Some(envelope) = out_rx.recv() => {
                            let _ = events.send(HubEvent::AnswererSignal { id, envelope });
                        }
                    }
                };
                while let Ok(envelope) = out_rx.try_recv() {
                    let _ = events.send(HubEvent::AnswererSignal { id, envelope });
                }
                match result {
                    Ok(()) => info!("fallback answerer stopped"),
                    Err(e) => warn!(error = %e, "fallback answerer failed"),
                }
                let _ = events.send(HubEvent::AnswererEnded { id, session_id });
            }
            .instrument(span),
        );
        let _ = in_tx.try_send(offer);
        self.answerers.insert(
            id,
            RunningAnswerer {
                session_id: ended_session,
                inbound: in_tx,
                task,
            },
        );
    }
}
