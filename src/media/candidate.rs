//! ICE candidate lines (RFC 8839 `candidate-attribute`): checked before they reach webrtcbin,
//! which in 1.22 drops a bad candidate with no report back.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CandidateType {
    Host,
    Srflx,
    Prflx,
    Relay,
}

impl fmt::Display for CandidateType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CandidateType::Host => "host",
            CandidateType::Srflx => "srflx",
            CandidateType::Prflx => "prflx",
            CandidateType::Relay => "relay",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate<'a> {
    pub foundation: &'a str,
    pub component: u32,
    pub transport: &'a str,
    pub priority: u32,
    pub address: &'a str,
    pub port: u16,
    pub kind: CandidateType,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("candidate does not parse: {0}")]
pub struct CandidateError(pub &'static str);

/// Parses `candidate:…` (the form of the protocol) or the bare attribute value.
pub fn parse(line: &str) -> Result<Candidate<'_>, CandidateError> {
    let body = line.strip_prefix("a=").unwrap_or(line);
    let body = body
        .strip_prefix("candidate:")
        .ok_or(CandidateError("does not start with `candidate:`"))?;
    let mut f = body.split_ascii_whitespace();
    let foundation = f.next().ok_or(CandidateError("no foundation"))?;
    let component = f
        .next()
        .and_then(|c| c.parse().ok())
        .filter(|c| (1..=256).contains(c))
        .ok_or(CandidateError("bad component id"))?;
    let transport = f.next().ok_or(CandidateError("no transport"))?;
    if !transport.eq_ignore_ascii_case("udp") && !transport.eq_ignore_ascii_case("tcp") {
        return Err(CandidateError("transport is neither udp nor tcp"));
    }
    let priority = f
        .next()
        .and_then(|p| p.parse().ok())
        .ok_or(CandidateError("bad priority"))?;
    let address = f.next().ok_or(CandidateError("no address"))?;
    if address.is_empty() || address.len() > 255 {
        return Err(CandidateError("bad address"));
    }
    let port = f
        .next()
        .and_then(|p| p.parse().ok())
        .ok_or(CandidateError("bad port"))?;
    if f.next() != Some("typ") {
        return Err(CandidateError("no `typ`"));
    }
    let kind = match f.next() {
        Some("host") => CandidateType::Host,
        Some("srflx") => CandidateType::Srflx,
        Some("prflx") => CandidateType::Prflx,
        Some("relay") => CandidateType::Relay,
        _ => return Err(CandidateError("unknown candidate type")),
    };
    Ok(Candidate {
        foundation,
        component,
        transport,
        priority,
        address,
        port,
        kind,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_candidates_parse() {
        let c = parse("candidate:1027641139 1 tcp 1518091519 ::1 36147 typ host tcptype passive generation 0 ufrag D9lK network-id 2").unwrap();
        assert_eq!(
            (c.transport, c.address, c.port, c.kind),
            ("tcp", "::1", 36147, CandidateType::Host)
        );
        let c = parse("candidate:3845669066 1 udp 33563135 35.201.196.47 57130 typ relay raddr 60.250.73.76 rport 59153 generation 0 ufrag n4Fy network-cost 999").unwrap();
        assert_eq!(c.kind, CandidateType::Relay);
        let c = parse("candidate:1345223362 1 udp 2113937151 4aea1f26-95f2-41a5-a9f1-f18a2be8f58b.local 51366 typ host generation 0 ufrag n4Fy network-cost 999").unwrap();
        assert_eq!(c.kind, CandidateType::Host);
        // webrtcbin's own form: upper-case transport.
        assert!(parse("candidate:1 1 UDP 2015363327 127.0.0.1 40000 typ host").is_ok());
    }

    #[test]
    fn garbage_is_rejected() {
        for bad in [
            "",
            "candidate:",
            "hello world",
            "candidate:1 1 sctp 1 127.0.0.1 1 typ host",
            "candidate:1 1 udp x 127.0.0.1 1 typ host",
            "candidate:1 1 udp 1 127.0.0.1 99999 typ host",
            "candidate:1 1 udp 1 127.0.0.1 1 type host",
            "candidate:1 1 udp 1 127.0.0.1 1 typ wormhole",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
