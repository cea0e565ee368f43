//! The six-field wire message of PROTOCOL.md and its conversion to the domain [`Signal`].
//! This is the only module that touches serde_json: everything else speaks [`Envelope`].

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// What a message means, once the wire format is out of the way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signal {
    Offer {
        sdp: String,
    },
    Answer {
        sdp: String,
    },
    Candidate {
        candidate: String,
        sdp_mid: Option<String>,
        sdp_mline_index: Option<u32>,
    },
    /// A `candidate` message whose `candidate` is empty or `null`.
    EndOfCandidates,
}

/// A [`Signal`] addressed to one streaming session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub session_id: String,
    pub signal: Signal,
}

/// A decoded inbound message, with what was tolerated on the way so the caller can log it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inbound {
    pub envelope: Envelope,
    pub unknown_fields: Vec<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProtocolError {
    #[error("not JSON: {0}")]
    NotJson(String),
    #[error("not a JSON object")]
    NotAnObject,
    #[error("missing field `{0}`")]
    MissingField(&'static str),
    #[error("field `{field}` should be {expected}, got {got}")]
    WrongType {
        field: &'static str,
        expected: &'static str,
        got: &'static str,
    },
    #[error("unknown message type `{0}`")]
    UnknownType(String),
    #[error("`{0}` message without an SDP")]
    MissingSdp(&'static str),
    #[error("`sdpMLineIndex` {0} is out of range")]
    BadMLineIndex(u64),
}

impl ProtocolError {
    /// Unknown types are a forward-compatibility case, not a fault of the peer.
    pub fn is_ignorable(&self) -> bool {
        matches!(self, ProtocolError::UnknownType(_))
    }
}

/// The wire form: every field always present, `null` where it does not apply.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Outbound<'a> {
    session_id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    sdp: Option<&'a str>,
    candidate: Option<&'a str>,
    sdp_mid: Option<&'a str>,
    #[serde(rename = "sdpMLineIndex")]
    sdp_mline_index: Option<u32>,
}

const KNOWN_FIELDS: [&str; 6] = [
    "sessionId",
    "type",
    "sdp",
    "candidate",
    "sdpMid",
    "sdpMLineIndex",
];

/// Encodes one message as the JSON text of one WebSocket frame.
pub fn encode(envelope: &Envelope) -> String {
    let mut wire = Outbound {
        session_id: &envelope.session_id,
        kind: "candidate",
        sdp: None,
        candidate: None,
        sdp_mid: None,
        sdp_mline_index: None,
    };
    match &envelope.signal {
        Signal::Offer { sdp } => {
            wire.kind = "offer";
            wire.sdp = Some(sdp);
        }
        Signal::Answer { sdp } => {
            wire.kind = "answer";
            wire.sdp = Some(sdp);
        }
        Signal::Candidate {
            candidate,
            sdp_mid,
            sdp_mline_index,
        } => {
            wire.candidate = Some(candidate);
            wire.sdp_mid = sdp_mid.as_deref();
            wire.sdp_mline_index = *sdp_mline_index;
        }
        Signal::EndOfCandidates => {}
    }
    serde_json::to_string(&wire).expect("serialising plain strings cannot fail")
}

/// Decodes one text frame. Unknown extra fields are tolerated and reported.
pub fn decode(text: &str) -> Result<Inbound, ProtocolError> {
    let value: Value =
        serde_json::from_str(text).map_err(|e| ProtocolError::NotJson(e.to_string()))?;
    let Value::Object(obj) = value else {
        return Err(ProtocolError::NotAnObject);
    };
    let unknown_fields = obj
        .keys()
        .filter(|k| !KNOWN_FIELDS.contains(&k.as_str()))
        .cloned()
        .collect();

    let session_id = required_str(&obj, "sessionId")?.to_owned();
    let kind = required_str(&obj, "type")?;
    let signal = match kind {
        "offer" | "answer" => {
            let which = if kind == "offer" { "offer" } else { "answer" };
            let sdp = optional_str(&obj, "sdp")?
                .filter(|s| !s.trim().is_empty())
                .ok_or(ProtocolError::MissingSdp(which))?
                .to_owned();
            if kind == "offer" {
                Signal::Offer { sdp }
            } else {
                Signal::Answer { sdp }
            }
        }
        "candidate" => {
            let sdp_mid = optional_str(&obj, "sdpMid")?.map(str::to_owned);
            let sdp_mline_index = optional_index(&obj)?;
            match optional_str(&obj, "candidate")?.map(str::trim) {
                None | Some("") => Signal::EndOfCandidates,
                Some(c) => Signal::Candidate {
                    candidate: c.to_owned(),
                    sdp_mid,
                    sdp_mline_index,
                },
            }
        }
        other => return Err(ProtocolError::UnknownType(other.to_owned())),
    };
    Ok(Inbound {
        envelope: Envelope { session_id, signal },
        unknown_fields,
    })
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn required_str<'a>(
    obj: &'a Map<String, Value>,
    field: &'static str,
) -> Result<&'a str, ProtocolError> {
    optional_str(obj, field)?.ok_or(ProtocolError::MissingField(field))
}

fn optional_str<'a>(
    obj: &'a Map<String, Value>,
    field: &'static str,
) -> Result<Option<&'a str>, ProtocolError> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(ProtocolError::WrongType {
            field,
            expected: "a string",
            got: type_name(other),
        }),
    }
}

fn optional_index(obj: &Map<String, Value>) -> Result<Option<u32>, ProtocolError> {
    const FIELD: &str = "sdpMLineIndex";
    match obj.get(FIELD) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => match n.as_u64() {
            Some(i) => u32::try_from(i)
                .ok()
                .filter(|i| *i < 1024)
                .map(Some)
                .ok_or(ProtocolError::BadMLineIndex(i)),
            None => Err(ProtocolError::WrongType {
                field: FIELD,
                expected: "a non-negative integer",
                got: "a number",
            }),
        },
        Some(other) => Err(ProtocolError::WrongType {
            field: FIELD,
            expected: "a non-negative integer",
            got: type_name(other),
        }),
    }
}

/// The first message the box sends on the data channel once it opens.
pub fn data_channel_hello(session_id: &str) -> String {
    serde_json::json!({ "type": "hello", "sessionId": session_id, "agent": concat!("airsync-streamer/", env!("CARGO_PKG_VERSION")) })
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED_UPLOAD_CANDIDATE: &str = r#"{
        "sessionId": "65873a9f-028d-4590-ac73-91cdd7addc16",
        "type": "candidate",
        "sdp": null,
        "candidate": "candidate:32629788 1 udp 1677729535 60.250.73.76 4109 typ srflx raddr 0.0.0.0 rport 0 generation 0 ufrag wzpp network-cost 999",
        "sdpMid": "2",
        "sdpMLineIndex": 2
    }"#;

    const SEED_DOWNLOAD_CANDIDATE: &str = r#"{
        "sessionId": "65873a9f-028d-4590-ac73-91cdd7addc16",
        "type": "candidate",
        "sdp": null,
        "candidate": "candidate:1027641139 1 tcp 1518091519 ::1 36147 typ host tcptype passive generation 0 ufrag D9lK network-id 2",
        "sdpMid": "0",
        "sdpMLineIndex": 0
    }"#;

    #[test]
    fn seed_candidates_decode_and_round_trip_exactly() {
        for seed in [SEED_UPLOAD_CANDIDATE, SEED_DOWNLOAD_CANDIDATE] {
            let inbound = decode(seed).unwrap();
            assert!(inbound.unknown_fields.is_empty());
            assert_eq!(
                inbound.envelope.session_id,
                "65873a9f-028d-4590-ac73-91cdd7addc16"
            );
            let Signal::Candidate { candidate, .. } = &inbound.envelope.signal else {
                panic!("not a candidate: {:?}", inbound.envelope.signal);
            };
            assert!(candidate.starts_with("candidate:"));
            let ours: Value = serde_json::from_str(&encode(&inbound.envelope)).unwrap();
            let theirs: Value = serde_json::from_str(seed).unwrap();
            assert_eq!(ours, theirs, "our encoding differs from the seed's");
        }
    }

    #[test]
    fn seed_upload_candidate_fields() {
        let inbound = decode(SEED_UPLOAD_CANDIDATE).unwrap();
        assert_eq!(
            inbound.envelope.signal,
            Signal::Candidate {
                candidate: "candidate:32629788 1 udp 1677729535 60.250.73.76 4109 typ srflx raddr 0.0.0.0 rport 0 generation 0 ufrag wzpp network-cost 999".into(),
                sdp_mid: Some("2".into()),
                sdp_mline_index: Some(2),
            }
        );
    }

    #[test]
    fn offer_carries_all_six_fields_with_nulls() {
        let text = encode(&Envelope {
            session_id: "s".into(),
            signal: Signal::Offer {
                sdp: "v=0\r\n".into(),
            },
        });
        let v: Value = serde_json::from_str(&text).unwrap();
        let obj = v.as_object().unwrap();
        assert_eq!(obj.len(), 6);
        for f in KNOWN_FIELDS {
            assert!(obj.contains_key(f), "{f} missing in {text}");
        }
        assert_eq!(obj["type"], "offer");
        assert_eq!(obj["candidate"], Value::Null);
        assert_eq!(obj["sdpMid"], Value::Null);
        assert_eq!(obj["sdpMLineIndex"], Value::Null);
    }

    #[test]
    fn answer_decodes() {
        let inbound =
            decode(r#"{"sessionId":"a","type":"answer","sdp":"v=0\r\n","candidate":null,"sdpMid":null,"sdpMLineIndex":null}"#)
                .unwrap();
        assert_eq!(
            inbound.envelope.signal,
            Signal::Answer {
                sdp: "v=0\r\n".into()
            }
        );
    }

    #[test]
    fn empty_or_null_candidate_is_end_of_candidates() {
        for c in [r#""""#, "null"] {
            let text = format!(
                r#"{{"sessionId":"a","type":"candidate","sdp":null,"candidate":{c},"sdpMid":"0","sdpMLineIndex":0}}"#
            );
            assert_eq!(
                decode(&text).unwrap().envelope.signal,
                Signal::EndOfCandidates
            );
        }
        let eoc = encode(&Envelope {
            session_id: "a".into(),
            signal: Signal::EndOfCandidates,
        });
        assert_eq!(
            decode(&eoc).unwrap().envelope.signal,
            Signal::EndOfCandidates
        );
    }

    #[test]
    fn unknown_fields_are_tolerated_and_reported() {
        let inbound = decode(
            r#"{"sessionId":"a","type":"answer","sdp":"v=0","candidate":null,"sdpMid":null,"sdpMLineIndex":null,"extra":1,"more":{}}"#,
        )
        .unwrap();
        let mut unknown = inbound.unknown_fields.clone();
        unknown.sort();
        assert_eq!(unknown, ["extra", "more"]);
    }

    #[test]
    fn malformed_messages_are_typed_errors() {
        let cases: &[(&str, ProtocolError)] = &[
            ("not json", ProtocolError::NotJson(String::new())),
            ("[1,2]", ProtocolError::NotAnObject),
            ("\"x\"", ProtocolError::NotAnObject),
            (
                r#"{"type":"answer","sdp":"v=0"}"#,
                ProtocolError::MissingField("sessionId"),
            ),
            (
                r#"{"sessionId":"a","sdp":"v=0"}"#,
                ProtocolError::MissingField("type"),
            ),
            (
                r#"{"sessionId":7,"type":"answer","sdp":"v=0"}"#,
                ProtocolError::WrongType {
                    field: "sessionId",
                    expected: "a string",
                    got: "a number",
                },
            ),
            (
                r#"{"sessionId":"a","type":"answer","sdp":["v=0"]}"#,
                ProtocolError::WrongType {
                    field: "sdp",
                    expected: "a string",
                    got: "an array",
                },
            ),
            (
                r#"{"sessionId":"a","type":"answer","sdp":null}"#,
                ProtocolError::MissingSdp("answer"),
            ),
            (
                r#"{"sessionId":"a","type":"answer","sdp":"  "}"#,
                ProtocolError::MissingSdp("answer"),
            ),
            (
                r#"{"sessionId":"a","type":"bye"}"#,
                ProtocolError::UnknownType("bye".into()),
            ),
            (
                r#"{"sessionId":"a","type":"candidate","candidate":"candidate:1","sdpMLineIndex":"0"}"#,
                ProtocolError::WrongType {
                    field: "sdpMLineIndex",
                    expected: "a non-negative integer",
                    got: "a string",
                },
            ),
            (
                r#"{"sessionId":"a","type":"candidate","candidate":"candidate:1","sdpMLineIndex":-1}"#,
                ProtocolError::WrongType {
                    field: "sdpMLineIndex",
                    expected: "a non-negative integer",
                    got: "a number",
                },
            ),
            (
                r#"{"sessionId":"a","type":"candidate","candidate":"candidate:1","sdpMLineIndex":99999}"#,
                ProtocolError::BadMLineIndex(99999),
            ),
            (
                r#"{"sessionId":"a","type":"candidate","candidate":5}"#,
                ProtocolError::WrongType {
                    field: "candidate",
                    expected: "a string",
                    got: "a number",
                },
            ),
        ];
        for (text, expected) in cases {
            let err = decode(text).unwrap_err();
            match (expected, &err) {
                (ProtocolError::NotJson(_), ProtocolError::NotJson(_)) => {}
                _ => assert_eq!(&err, expected, "for {text}"),
            }
            assert!(!err.to_string().is_empty());
        }
        assert!(ProtocolError::UnknownType("x".into()).is_ignorable());
        assert!(!ProtocolError::NotAnObject.is_ignorable());
    }
}
