//! The small JSON protocol between `serve` and its viewer page. Signals (offer, answer,
//! candidates) travel in the box protocol's own six-field messages (`protocol.rs`), so the
//! page speaks PROTOCOL.md for the media part; this module adds the control messages:
//!
//! server → page: `{"type":"boxes","boxes":[{"id","name","sessionId","peer","watching"}]}`,
//! `{"type":"ended","sessionId","reason"}`, `{"type":"released","boxId"}`;
//! page → server: `{"type":"watch","boxId":N}`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::routing::{BoxId, BoxInfo, ToViewer};
use crate::protocol::{self, Envelope, ProtocolError};

/// What a viewer page sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FromViewer {
    Watch(BoxId),
    Signal(Envelope),
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WireBox<'a> {
    id: BoxId,
    name: &'a str,
    session_id: Option<&'a str>,
    peer: &'a str,
    watching: bool,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "camelCase")]
enum Control<'a> {
    Boxes {
        boxes: Vec<WireBox<'a>>,
    },
    #[serde(rename_all = "camelCase")]
    Ended {
        session_id: &'a str,
        reason: &'a str,
    },
    #[serde(rename_all = "camelCase")]
    Released {
        box_id: BoxId,
    },
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Watch {
    box_id: BoxId,
}

pub fn encode(message: &ToViewer) -> String {
    let control = match message {
        ToViewer::Signal(envelope) => return protocol::encode(envelope),
        ToViewer::Boxes(boxes) => Control::Boxes {
            boxes: boxes.iter().map(wire_box).collect(),
        },
        ToViewer::Ended { session_id, reason } => Control::Ended { session_id, reason },
        ToViewer::Released { box_id } => Control::Released { box_id: *box_id },
    };
    serde_json::to_string(&control).expect("serialising plain values cannot fail")
}

fn wire_box(b: &BoxInfo) -> WireBox<'_> {
    WireBox {
        id: b.id,
        name: &b.name,
        session_id: b.session_id.as_deref(),
        peer: b.peer,
        watching: b.watching,
    }
}

pub fn decode(text: &str) -> Result<FromViewer, ProtocolError> {
    let value: Value =
        serde_json::from_str(text).map_err(|e| ProtocolError::NotJson(e.to_string()))?;
    if value.get("type").and_then(Value::as_str) == Some("watch") {
        let watch: Watch = serde_json::from_value(value).map_err(|_| ProtocolError::WrongType {
            field: "boxId",
            expected: "a box id",
            got: "something else",
        })?;
        return Ok(FromViewer::Watch(watch.box_id));
    }
    protocol::decode(text).map(|inbound| FromViewer::Signal(inbound.envelope))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Signal;

    #[test]
    fn control_messages_round_trip_through_json() {
        let text = encode(&ToViewer::Boxes(vec![BoxInfo {
            id: 3,
            name: "kiosk".into(),
            session_id: Some("s".into()),
            peer: "you",
            watching: true,
        }]));
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["type"], "boxes");
        assert_eq!(v["boxes"][0]["id"], 3);
        assert_eq!(v["boxes"][0]["sessionId"], "s");
        assert_eq!(v["boxes"][0]["watching"], true);
        let v: Value = serde_json::from_str(&encode(&ToViewer::Ended {
            session_id: "s".into(),
            reason: "r".into(),
        }))
        .unwrap();
        assert_eq!(
            (v["type"].as_str(), v["sessionId"].as_str()),
            (Some("ended"), Some("s"))
        );
        let v: Value = serde_json::from_str(&encode(&ToViewer::Released { box_id: 4 })).unwrap();
        assert_eq!(v["boxId"], 4);
    }

    #[test]
    fn viewer_messages_decode() {
        assert_eq!(
            decode(r#"{"type":"watch","boxId":2}"#),
            Ok(FromViewer::Watch(2))
        );
        assert!(decode(r#"{"type":"watch","boxId":"x"}"#).is_err());
        assert!(decode("garbage").is_err());
        assert_eq!(
            decode(
                r#"{"sessionId":"s","type":"answer","sdp":"v=0","candidate":null,"sdpMid":null,"sdpMLineIndex":null}"#
            ),
            Ok(FromViewer::Signal(Envelope {
                session_id: "s".into(),
                signal: Signal::Answer { sdp: "v=0".into() }
            }))
        );
    }
}
