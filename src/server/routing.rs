//! Which peer answers which box session: pure state and decisions, no I/O.
//!
//! Every box connection carries at most one session (one offer, one answer). When an offer
//! arrives, the viewer watching that box answers it; when none does, the server's own receiving
//! webrtcbin (the fallback answerer) does, so a box always has a counterpart.
//!
//! The protocol has no renegotiation: a session already answered by someone else cannot be
//! handed to a viewer. When a viewer picks such a box, the router closes the box's socket; the
//! box's supervisor starts a new session (new `sessionId`) after its back-off, and that session
//! goes to the viewer. A box is recognised across reconnects by its key (the `name` query
//! parameter of its URL, else its IP address), which the viewer's choice remembers.

use std::collections::BTreeMap;

use crate::protocol::{Envelope, Signal};

pub type BoxId = u64;
pub type ViewerId = u64;

/// Who answers a box session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    Answerer,
    Viewer(ViewerId),
}

/// One line of the box list a viewer sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoxInfo {
    pub id: BoxId,
    pub name: String,
    pub session_id: Option<String>,
    /// `"answerer"`, `"you"`, `"viewer"` (another viewer) or `"none"`.
    pub peer: &'static str,
    /// Whether this viewer has chosen this box.
    pub watching: bool,
}

/// What a viewer is told, besides box signals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToViewer {
    Signal(Envelope),
    /// The session ended (box gone, or taken over); the reason is for people.
    Ended {
        session_id: String,
        reason: String,
    },
    Boxes(Vec<BoxInfo>),
    /// This viewer's choice was taken over by another viewer.
    Released {
        box_id: BoxId,
    },
}

/// What the caller must do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    ToBox(BoxId, Envelope),
    ToViewer(ViewerId, ToViewer),
    /// Start a fallback answerer for this box's session and hand it the offer.
    StartAnswerer(BoxId, Envelope),
    ToAnswerer(BoxId, Envelope),
    StopAnswerer(BoxId),
    /// Close the box's socket so that it reconnects with a fresh session.
    CloseBox(BoxId, &'static str),
    /// Input that was dropped, with the reason: the caller logs it.
    Dropped(String),
}

#[derive(Debug)]
struct Session {
    id: String,
    peer: Peer,
}

#[derive(Debug)]
struct BoxState {
    key: String,
    session: Option<Session>,
}

#[derive(Debug, Default)]
struct ViewerState {
    /// The box this viewer chose, and its key so the choice survives the box reconnecting.
    watching: Option<(BoxId, String)>,
}

#[derive(Debug, Default)]
pub struct Router {
    boxes: BTreeMap<BoxId, BoxState>,
    viewers: BTreeMap<ViewerId, ViewerState>,
}

impl Router {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn box_connected(&mut self, id: BoxId, key: String) -> Vec<Action> {
        // A viewer whose chosen box went away (typically: closed by us for a takeover) follows
        // the box when it comes back under the same key.
        let orphan = self.viewers.iter_mut().find(|(_, v)| {
            matches!(&v.watching, Some((b, k)) if *k == key && !self.boxes.contains_key(b))
        });
        if let Some((_, v)) = orphan {
            v.watching = Some((id, key.clone()));
        }
        self.boxes.insert(id, BoxState { key, session: None });
        self.listings()
    }

    pub fn box_gone(&mut self, id: BoxId) -> Vec<Action> {
        let mut actions = Vec::new();
        if let Some(state) = self.boxes.remove(&id) {
            if let Some(session) = state.session {
                end_session(id, session, "the box disconnected", &mut actions);
            }
        }
        actions.extend(self.listings());
        actions
    }

    pub fn box_signal(&mut self, id: BoxId, envelope: Envelope) -> Vec<Action> {
        let watcher = self.watcher_of(id);
        let Some(state) = self.boxes.get_mut(&id) else {
            return vec![Action::Dropped(format!("message from unknown box {id}"))];
        };
        let mut actions = Vec::new();
        match &envelope.signal {
            Signal::Offer { .. } => {
                if let Some(old) = state.session.take() {
                    // One socket, one session is the norm; a second offer replaces the first.
                    end_session(id, old, "the box started a new session", &mut actions);
                }
                let peer = watcher.map_or(Peer::Answerer, Peer::Viewer);
                actions.push(match peer {
                    Peer::Answerer => Action::StartAnswerer(id, envelope.clone()),
                    Peer::Viewer(v) => Action::ToViewer(v, ToViewer::Signal(envelope.clone())),
                });
                state.session = Some(Session {
                    id: envelope.session_id.clone(),
                    peer,
                });
                actions.extend(self.listings());
            }
            Signal::Candidate { .. } | Signal::EndOfCandidates => match &state.session {
                Some(s) if s.id == envelope.session_id => {
                    actions.push(to_peer(id, s.peer, envelope));
                }
                Some(_) => actions.push(Action::Dropped(format!(
                    "candidate for unknown session {} from box {id}",
                    envelope.session_id
                ))),
                None => actions.push(Action::Dropped(format!(
                    "candidate before any offer from box {id}"
                ))),
            },
            Signal::Answer { .. } => actions.push(Action::Dropped(format!(
                "box {id} sent an answer; boxes offer"
            ))),
        }
        actions
    }

    /// A message from the fallback answerer of `id`'s session.
    pub fn answerer_signal(&mut self, id: BoxId, envelope: Envelope) -> Vec<Action> {
        match self.session(id) {
            Some(s) if s.peer == Peer::Answerer && s.id == envelope.session_id => {
                vec![Action::ToBox(id, envelope)]
            }
            _ => vec![Action::Dropped(format!(
                "stale answerer message for box {id}"
            ))],
        }
    }

    /// The fallback answerer stopped by itself (peer connection failed): the box gets a fresh
    /// session rather than a dead one.
    pub fn answerer_ended(&mut self, id: BoxId, session_id: &str) -> Vec<Action> {
        match self.session(id) {
            Some(s) if s.peer == Peer::Answerer && s.id == session_id => {
                vec![Action::CloseBox(id, "the server's answerer stopped")]
            }
            _ => Vec::new(),
        }
    }

    pub fn viewer_connected(&mut self, id: ViewerId) -> Vec<Action> {
        self.viewers.insert(id, ViewerState::default());
        vec![Action::ToViewer(id, ToViewer::Boxes(self.listing_for(id)))]
    }

    pub fn viewer_gone(&mut self, id: ViewerId) -> Vec<Action> {
        let mut actions = Vec::new();
        if let Some(v) = self.viewers.remove(&id) {
            if let Some((box_id, _)) = v.watching {
                if self
                    .session(box_id)
                    .is_some_and(|s| s.peer == Peer::Viewer(id))
                {
                    // Nobody receives this session any more; a fresh one goes to the answerer.
                    actions.push(Action::CloseBox(box_id, "its viewer left"));
                }
            }
        }
        actions.extend(self.listings());
        actions
    }

    /// A viewer chooses a box to watch.
    pub fn viewer_watch(&mut self, viewer: ViewerId, box_id: BoxId) -> Vec<Action> {
        if !self.viewers.contains_key(&viewer) {
            return vec![Action::Dropped(format!("unknown viewer {viewer}"))];
        }
        let Some(key) = self.boxes.get(&box_id).map(|b| b.key.clone()) else {
            return vec![
                Action::Dropped(format!("viewer {viewer} chose unknown box {box_id}")),
                Action::ToViewer(viewer, ToViewer::Boxes(self.listing_for(viewer))),
            ];
        };
        let mut actions = Vec::new();
        // Leave the box watched before, if any.
        let previous = self.viewers[&viewer].watching.clone();
        if let Some((old, _)) = previous.filter(|(old, _)| *old != box_id) {
            if self
                .session(old)
                .is_some_and(|s| s.peer == Peer::Viewer(viewer))
            {
                actions.push(Action::CloseBox(old, "its viewer chose another box"));
            }
        }
        // Take the box from another viewer that watches it.
        for (other, v) in self.viewers.iter_mut() {
            if *other != viewer && v.watching.as_ref().is_some_and(|(b, _)| *b == box_id) {
                v.watching = None;
                actions.push(Action::ToViewer(*other, ToViewer::Released { box_id }));
            }
        }
        self.viewers.get_mut(&viewer).unwrap().watching = Some((box_id, key));
        match self.session(box_id).map(|s| s.peer) {
            Some(Peer::Viewer(v)) if v == viewer => {}
            Some(_) => actions.push(Action::CloseBox(
                box_id,
                "a viewer chose it while another peer had its session",
            )),
            None => {}
        }
        actions.extend(self.listings());
        actions
    }

    /// An answer or a candidate from a viewer, for the session it was given.
    pub fn viewer_signal(&mut self, viewer: ViewerId, envelope: Envelope) -> Vec<Action> {
        let target = self.boxes.iter().find_map(|(id, b)| {
            b.session
                .as_ref()
                .filter(|s| s.id == envelope.session_id)
                .map(|s| (*id, s.peer))
        });
        match (target, &envelope.signal) {
            (None, _) => vec![Action::Dropped(format!(
                "viewer {viewer}: unknown session {}",
                envelope.session_id
            ))],
            (Some((_, peer)), _) if peer != Peer::Viewer(viewer) => vec![Action::Dropped(format!(
                "viewer {viewer}: session {} is not theirs",
                envelope.session_id
            ))],
            (Some(_), Signal::Offer { .. }) => vec![Action::Dropped(format!(
                "viewer {viewer} sent an offer; viewers answer"
            ))],
            (Some((id, _)), _) => vec![Action::ToBox(id, envelope)],
        }
    }

    /// Who answers `id`'s current session.
    pub fn peer_of(&self, id: BoxId) -> Option<Peer> {
        self.session(id).map(|s| s.peer)
    }

    /// The box list as `viewer` sees it.
    pub fn listing_for(&self, viewer: ViewerId) -> Vec<BoxInfo> {
        let watched = self
            .viewers
            .get(&viewer)
            .and_then(|v| v.watching.as_ref())
            .map(|(b, _)| *b);
        self.boxes
            .iter()
            .map(|(id, b)| BoxInfo {
                id: *id,
                name: b.key.clone(),
                session_id: b.session.as_ref().map(|s| s.id.clone()),
                peer: match b.session.as_ref().map(|s| s.peer) {
                    None => "none",
                    Some(Peer::Answerer) => "answerer",
                    Some(Peer::Viewer(v)) if v == viewer => "you",
                    Some(Peer::Viewer(_)) => "viewer",
                },
                watching: watched == Some(*id),
            })
            .collect()
    }

    fn listings(&self) -> Vec<Action> {
        self.viewers
            .keys()
            .map(|v| Action::ToViewer(*v, ToViewer::Boxes(self.listing_for(*v))))
            .collect()
    }

    fn session(&self, id: BoxId) -> Option<&Session> {
        self.boxes.get(&id).and_then(|b| b.session.as_ref())
    }

    fn watcher_of(&self, id: BoxId) -> Option<ViewerId> {
        self.viewers
            .iter()
            .find(|(_, v)| v.watching.as_ref().is_some_and(|(b, _)| *b == id))
            .map(|(v, _)| *v)
    }
}

fn to_peer(id: BoxId, peer: Peer, envelope: Envelope) -> Action {
    match peer {
        Peer::Answerer => Action::ToAnswerer(id, envelope),
        Peer::Viewer(v) => Action::ToViewer(v, ToViewer::Signal(envelope)),
    }
}

fn end_session(id: BoxId, session: Session, reason: &str, actions: &mut Vec<Action>) {
    match session.peer {
        Peer::Answerer => actions.push(Action::StopAnswerer(id)),
        Peer::Viewer(v) => actions.push(Action::ToViewer(
            v,
            ToViewer::Ended {
                session_id: session.id,
                reason: reason.to_owned(),
            },
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(session: &str) -> Envelope {
        Envelope {
            session_id: session.into(),
            signal: Signal::Offer { sdp: "v=0".into() },
        }
    }

    fn candidate(session: &str) -> Envelope {
        Envelope {
            session_id: session.into(),
            signal: Signal::Candidate {
                candidate: "candidate:1 1 UDP 1 127.0.0.1 9 typ host".into(),
                sdp_mid: Some("0".into()),
                sdp_mline_index: Some(0),
            },
        }
    }

    fn answer(session: &str) -> Envelope {
        Envelope {
            session_id: session.into(),
            signal: Signal::Answer { sdp: "v=0".into() },
        }
    }

    /// The actions without the box listings, which most tests do not care about.
    fn core(actions: Vec<Action>) -> Vec<Action> {
        actions
            .into_iter()
            .filter(|a| !matches!(a, Action::ToViewer(_, ToViewer::Boxes(_))))
            .collect()
    }

    #[test]
    fn without_viewers_the_answerer_takes_the_session() {
        let mut r = Router::new();
        r.box_connected(1, "kiosk".into());
        assert_eq!(
            core(r.box_signal(1, offer("s1"))),
            [Action::StartAnswerer(1, offer("s1"))]
        );
        assert_eq!(
            r.box_signal(1, candidate("s1")),
            [Action::ToAnswerer(1, candidate("s1"))]
        );
        assert_eq!(
            r.answerer_signal(1, answer("s1")),
            [Action::ToBox(1, answer("s1"))]
        );
        assert_eq!(core(r.box_gone(1)), [Action::StopAnswerer(1)]);
    }

    #[test]
    fn a_watching_viewer_gets_the_offer_and_its_answer_goes_to_the_box() {
        let mut r = Router::new();
        r.box_connected(1, "kiosk".into());
        r.viewer_connected(7);
        assert!(core(r.viewer_watch(7, 1)).is_empty());
        assert_eq!(
            core(r.box_signal(1, offer("s1"))),
            [Action::ToViewer(7, ToViewer::Signal(offer("s1")))]
        );
        assert_eq!(
            r.box_signal(1, candidate("s1")),
            [Action::ToViewer(7, ToViewer::Signal(candidate("s1")))]
        );
        assert_eq!(
            r.viewer_signal(7, answer("s1")),
            [Action::ToBox(1, answer("s1"))]
        );
        assert_eq!(
            r.viewer_signal(7, candidate("s1")),
            [Action::ToBox(1, candidate("s1"))]
        );
        assert_eq!(
            core(r.box_gone(1)),
            [Action::ToViewer(
                7,
                ToViewer::Ended {
                    session_id: "s1".into(),
                    reason: "the box disconnected".into()
                }
            )]
        );
    }

    #[test]
    fn choosing_an_answered_box_closes_it_and_the_next_session_follows_the_viewer() {
        let mut r = Router::new();
        r.box_connected(1, "kiosk".into());
        r.box_signal(1, offer("s1"));
        r.viewer_connected(7);
        assert_eq!(
            core(r.viewer_watch(7, 1)),
            [Action::CloseBox(
                1,
                "a viewer chose it while another peer had its session"
            )]
        );
        assert_eq!(core(r.box_gone(1)), [Action::StopAnswerer(1)]);
        // The box reconnects on a new socket, under the same key.
        r.box_connected(2, "kiosk".into());
        assert_eq!(
            core(r.box_signal(2, offer("s2"))),
            [Action::ToViewer(7, ToViewer::Signal(offer("s2")))]
        );
        let listing = r.listing_for(7);
        assert_eq!(listing.len(), 1);
        assert!(listing[0].watching);
        assert_eq!(listing[0].peer, "you");
        assert_eq!(listing[0].session_id.as_deref(), Some("s2"));
    }

    #[test]
    fn another_viewer_taking_a_box_releases_the_first() {
        let mut r = Router::new();
        r.box_connected(1, "kiosk".into());
        r.viewer_connected(7);
        r.viewer_connected(8);
        r.viewer_watch(7, 1);
        r.box_signal(1, offer("s1"));
        assert_eq!(r.listing_for(8)[0].peer, "viewer");
        assert_eq!(
            core(r.viewer_watch(8, 1)),
            [
                Action::ToViewer(7, ToViewer::Released { box_id: 1 }),
                Action::CloseBox(1, "a viewer chose it while another peer had its session"),
            ]
        );
        // Viewer 7's answer for the old session is no longer taken... once the session is gone.
        r.box_gone(1);
        assert!(matches!(
            r.viewer_signal(7, answer("s1"))[..],
            [Action::Dropped(_)]
        ));
        r.box_connected(2, "kiosk".into());
        assert_eq!(
            core(r.box_signal(2, offer("s2"))),
            [Action::ToViewer(8, ToViewer::Signal(offer("s2")))]
        );
    }

    #[test]
    fn two_boxes_two_viewers_are_routed_by_session() {
        let mut r = Router::new();
        r.box_connected(1, "a".into());
        r.box_connected(2, "b".into());
        r.viewer_connected(7);
        r.viewer_connected(8);
        r.viewer_watch(7, 1);
        r.viewer_watch(8, 2);
        r.box_signal(1, offer("s1"));
        r.box_signal(2, offer("s2"));
        assert_eq!(
            r.viewer_signal(8, answer("s2")),
            [Action::ToBox(2, answer("s2"))]
        );
        assert_eq!(
            r.viewer_signal(7, answer("s1")),
            [Action::ToBox(1, answer("s1"))]
        );
        // A viewer cannot answer a session that is not its own.
        assert!(matches!(
            r.viewer_signal(7, answer("s2"))[..],
            [Action::Dropped(_)]
        ));
        assert_eq!(
            r.box_signal(2, candidate("s2")),
            [Action::ToViewer(8, ToViewer::Signal(candidate("s2")))]
        );
    }

    #[test]
    fn a_leaving_viewer_hands_its_box_back_to_the_answerer() {
        let mut r = Router::new();
        r.box_connected(1, "kiosk".into());
        r.viewer_connected(7);
        r.viewer_watch(7, 1);
        r.box_signal(1, offer("s1"));
        assert_eq!(
            core(r.viewer_gone(7)),
            [Action::CloseBox(1, "its viewer left")]
        );
        r.box_gone(1);
        r.box_connected(2, "kiosk".into());
        assert_eq!(
            core(r.box_signal(2, offer("s2"))),
            [Action::StartAnswerer(2, offer("s2"))]
        );
    }

    #[test]
    fn bad_input_is_dropped_with_a_reason() {
        let mut r = Router::new();
        r.box_connected(1, "kiosk".into());
        r.viewer_connected(7);
        for actions in [
            r.box_signal(1, candidate("s1")),
            r.box_signal(1, answer("s1")),
            r.box_signal(9, offer("s9")),
            r.viewer_signal(7, answer("nope")),
            r.answerer_signal(1, answer("s1")),
        ] {
            assert!(matches!(actions[..], [Action::Dropped(_)]), "{actions:?}");
        }
        r.box_signal(1, offer("s1"));
        assert!(matches!(
            r.box_signal(1, candidate("other"))[..],
            [Action::Dropped(_)]
        ));
        assert!(matches!(
            r.viewer_watch(7, 42)[..],
            [Action::Dropped(_), Action::ToViewer(7, ToViewer::Boxes(_))]
        ));
        assert!(matches!(
            r.viewer_signal(7, offer("s1"))[..],
            [Action::Dropped(_)]
        ));
    }

    #[test]
    fn a_second_offer_on_one_socket_replaces_the_first_session() {
        let mut r = Router::new();
        r.box_connected(1, "kiosk".into());
        r.box_signal(1, offer("s1"));
        assert_eq!(
            core(r.box_signal(1, offer("s2"))),
            [
                Action::StopAnswerer(1),
                Action::StartAnswerer(1, offer("s2"))
            ]
        );
        assert!(
            r.answerer_ended(1, "s1").is_empty(),
            "a stale answerer's end changes nothing"
        );
        assert_eq!(
            r.answerer_ended(1, "s2"),
            [Action::CloseBox(1, "the server's answerer stopped")]
        );
    }

    #[test]
    fn listings_go_to_every_viewer_when_boxes_change() {
        let mut r = Router::new();
        r.viewer_connected(7);
        r.viewer_connected(8);
        let actions = r.box_connected(1, "kiosk".into());
        let told: Vec<_> = actions
            .iter()
            .filter_map(|a| match a {
                Action::ToViewer(v, ToViewer::Boxes(b)) if b.len() == 1 => Some(*v),
                _ => None,
            })
            .collect();
        assert_eq!(told, [7, 8]);
    }
}
