//! The offer as PROTOCOL.md wants it, and the checks an answer must pass. Pure functions on
//! parsed SDP: webrtcbin's own offer is adjusted here before `set-local-description`.

use gst_sdp::{SDPAttribute, SDPMediaRef, SDPMessage, SDPMessageRef};

pub const OPUS_PT: &str = "111";
pub const OPUS_FMTP: &str = "minptime=10;useinbandfec=1";
pub const H264_PT: &str = "106";
/// Constrained baseline, level 3.1, as the server accepts (seed offer). x264enc's caps say
/// 42c01e (INTEROP.md point 2), and webrtcbin rejects 42e01f as caps, so the offer says it.
pub const H264_FMTP: &str =
    "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f";
pub const VIDEO_RTCP_FB: [&str; 5] = ["goog-remb", "transport-cc", "ccm fir", "nack", "nack pli"];
pub const TWCC_URI: &str =
    "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01";
pub const MID_URI: &str = "urn:ietf:params:rtp-hdrext:sdes:mid";
/// Extension ids of the seed offer.
pub const TWCC_ID: u32 = 3;
pub const MID_ID: u32 = 4;

const KINDS: [&str; 3] = ["audio", "video", "application"];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OfferError {
    #[error("webrtcbin offered m-lines {0:?}; the protocol needs audio, video, application in that order: link audio to sink_0 and video to sink_1")]
    Layout(Vec<String>),
    #[error("m=audio does not offer Opus as payload type 111: set `rtpopuspay pt=111`")]
    NoOpus,
    #[error("m=video does not offer H264 as payload type 106: set `rtph264pay pt=106`")]
    NoH264,
    #[error("m=audio carries RTX (ssrc-group FID): Chromium rejects it; disable NACK on audio")]
    AudioRtx,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AnswerError {
    #[error("not an SDP: {0}")]
    NotSdp(String),
    #[error("answer has {got} m-lines, offer has {expected}")]
    MLineCount { expected: u32, got: u32 },
    #[error("answer m-line {index} is `{got}`, offer's is `{expected}`")]
    MLineKind {
        index: u32,
        expected: String,
        got: String,
    },
    #[error("answer m-line {index} ({kind}) accepts none of the offered payload types")]
    NoCommonCodec { index: u32, kind: String },
}

fn kinds(msg: &SDPMessageRef) -> Vec<String> {
    msg.medias()
        .map(|m| m.media().unwrap_or("?").to_owned())
        .collect()
}

/// Shapes webrtcbin's offer: mids `0`,`1`,`2` (as the seed's), exact fmtp lines for Opus and
/// H.264, the full video feedback set, and the BUNDLE group naming the new mids.
pub fn shape_offer(msg: &mut SDPMessageRef) -> Result<(), OfferError> {
    let found = kinds(msg);
    if found != KINDS {
        return Err(OfferError::Layout(found));
    }
    let mut renames = Vec::new();
    for (index, media) in msg.medias_mut().enumerate() {
        let new_mid = index.to_string();
        if let Some(old) = media.attribute_val("mid") {
            renames.push((old.to_owned(), new_mid.clone()));
        }
        set_attribute(media, "mid", None, &new_mid);
        match index {
            0 => shape_audio(media)?,
            1 => shape_video(media)?,
            _ => {}
        }
    }
    if let Some(idx) =
        (0..msg.attributes_len()).find(|i| msg.attribute(*i).is_some_and(|a| a.key() == "group"))
    {
        let old = msg
            .attribute(idx)
            .and_then(|a| a.value())
            .unwrap_or("BUNDLE");
        let renamed: Vec<String> = old
            .split_ascii_whitespace()
            .map(|tok| {
                renames
                    .iter()
                    .find(|(from, _)| from == tok)
                    .map(|(_, to)| to.clone())
                    .unwrap_or_else(|| tok.to_owned())
            })
            .collect();
        let _ = msg.replace_attribute(idx, SDPAttribute::new("group", Some(&renamed.join(" "))));
    }
    Ok(())
}

fn shape_audio(media: &mut SDPMediaRef) -> Result<(), OfferError> {
    if !has_codec(media, OPUS_PT, "opus/48000/2") {
        return Err(OfferError::NoOpus);
    }
    if media
        .attributes()
        .any(|a| a.key() == "ssrc-group" && a.value().is_some_and(|v| v.starts_with("FID")))
    {
        return Err(OfferError::AudioRtx);
    }
    // webrtcbin writes `OPUS/48000/2`; the seed (and RFC 7587) spell it in lower case.
    set_attribute(media, "rtpmap", Some(OPUS_PT), "opus/48000/2");
    set_attribute(media, "fmtp", Some(OPUS_PT), OPUS_FMTP);
    ensure_attribute(media, "rtcp-fb", &format!("{OPUS_PT} transport-cc"));
    Ok(())
}

fn shape_video(media: &mut SDPMediaRef) -> Result<(), OfferError> {
    if !has_codec(media, H264_PT, "H264/90000") {
        return Err(OfferError::NoH264);
    }
    set_attribute(media, "fmtp", Some(H264_PT), H264_FMTP);
    for fb in VIDEO_RTCP_FB {
        ensure_attribute(media, "rtcp-fb", &format!("{H264_PT} {fb}"));
    }
    Ok(())
}

fn has_codec(media: &SDPMediaRef, pt: &str, rtpmap: &str) -> bool {
    media.formats().any(|f| f == pt)
        && media.attributes().any(|a| {
            a.key() == "rtpmap"
                && a.value()
                    .and_then(|v| v.strip_prefix(pt))
                    .is_some_and(|v| v.trim().eq_ignore_ascii_case(rtpmap))
        })
}

/// Sets `a=key:[pt ]value`, replacing the attribute for the same payload type if present.
fn set_attribute(media: &mut SDPMediaRef, key: &str, pt: Option<&str>, value: &str) {
    let full = match pt {
        Some(pt) => format!("{pt} {value}"),
        None => value.to_owned(),
    };
    let existing = (0..media.attributes_len()).find(|i| {
        media.attribute(*i).is_some_and(|a| {
            a.key() == key
                && match pt {
                    Some(pt) => a
                        .value()
                        .is_some_and(|v| v.split_ascii_whitespace().next() == Some(pt)),
                    None => true,
                }
        })
    });
    match existing {
        Some(i) => {
            let _ = media.replace_attribute(i, SDPAttribute::new(key, Some(&full)));
        }
        None => media.add_attribute(key, Some(&full)),
    }
}

fn ensure_attribute(media: &mut SDPMediaRef, key: &str, value: &str) {
    if !media
        .attributes()
        .any(|a| a.key() == key && a.value() == Some(value))
    {
        media.add_attribute(key, Some(value));
    }
}

/// The `a=mid` of m-line `mline`, which is what the protocol's `sdpMid` carries.
pub fn mid_of(msg: &SDPMessageRef, mline: u32) -> Option<String> {
    msg.media(mline)
        .and_then(|m| m.attribute_val("mid"))
        .map(str::to_owned)
}

/// The SSRCs an m-line announces (`a=ssrc:<id> …`).
pub fn ssrcs_of(msg: &SDPMessageRef, mline: u32) -> Vec<u32> {
    let mut ssrcs: Vec<u32> = msg
        .media(mline)
        .map(|m| {
            m.attributes()
                .filter(|a| a.key() == "ssrc")
                .filter_map(|a| a.value()?.split_ascii_whitespace().next()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    ssrcs.dedup();
    ssrcs
}

/// The m-line index of a mid, for candidates that name only `sdpMid`.
pub fn mline_of(msg: &SDPMessageRef, mid: &str) -> Option<u32> {
    msg.medias()
        .position(|m| m.attribute_val("mid") == Some(mid))
        .map(|i| i as u32)
}

/// Parses SDP text strictly enough to tell an SDP from garbage: gst_sdp itself accepts
/// almost anything.
pub fn parse(text: &str) -> Result<SDPMessage, AnswerError> {
    if !text.trim_start().starts_with("v=0") {
        return Err(AnswerError::NotSdp("does not start with `v=0`".into()));
    }
    let msg = SDPMessage::parse_buffer(text.as_bytes())
        .map_err(|e| AnswerError::NotSdp(e.to_string()))?;
    if msg.medias_len() == 0 {
        return Err(AnswerError::NotSdp("no m= line".into()));
    }
    Ok(msg)
}

/// An answer must answer our offer: the same m-lines in the same order, each with a codec we offered.
pub fn check_answer(offer: &SDPMessageRef, answer: &SDPMessageRef) -> Result<(), AnswerError> {
    if offer.medias_len() != answer.medias_len() {
        return Err(AnswerError::MLineCount {
            expected: offer.medias_len(),
            got: answer.medias_len(),
        });
    }
    for (index, (o, a)) in offer.medias().zip(answer.medias()).enumerate() {
        let (expected, got) = (o.media().unwrap_or("?"), a.media().unwrap_or("?"));
        if expected != got {
            return Err(AnswerError::MLineKind {
                index: index as u32,
                expected: expected.into(),
                got: got.into(),
            });
        }
        if !a.formats().any(|f| o.formats().any(|g| g == f)) {
            return Err(AnswerError::NoCommonCodec {
                index: index as u32,
                kind: got.into(),
            });
        }
    }
    Ok(())
}

/// `[(kind, [encoding names…])]` of each m-line, e.g. `("video", ["H264"])`, from rtpmap lines.
pub fn codecs(msg: &SDPMessageRef) -> Vec<(String, Vec<String>)> {
    msg.medias()
        .map(|m| {
            let names = m
                .attributes()
                .filter(|a| a.key() == "rtpmap")
                .filter_map(|a| a.value())
                .filter_map(|v| v.split_ascii_whitespace().nth(1))
                .filter_map(|enc| enc.split('/').next())
                .map(str::to_owned)
                .collect();
            (m.media().unwrap_or("?").to_owned(), names)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const WEBRTCBIN_LIKE: &str = "v=0\r\no=- 1 0 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\na=ice-options:trickle\r\na=group:BUNDLE audio0 video1 application2\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:audio0\r\na=sendonly\r\na=rtpmap:111 OPUS/48000/2\r\na=rtpmap:111 opus/48000/2\r\na=fmtp:111 sprop-stereo=0\r\n\
m=video 0 UDP/TLS/RTP/SAVPF 106 107\r\nc=IN IP4 0.0.0.0\r\na=bundle-only\r\na=mid:video1\r\na=sendonly\r\na=rtpmap:106 H264/90000\r\na=fmtp:106 packetization-mode=1;profile-level-id=42c01e;sprop-parameter-sets=Z0LAHtkAoD2wEQAAAwABAAADADyPFi5I,aMuMsg==\r\na=rtcp-fb:106 nack\r\na=rtpmap:107 rtx/90000\r\na=fmtp:107 apt=106\r\n\
m=application 0 UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP4 0.0.0.0\r\na=bundle-only\r\na=mid:application2\r\na=sctp-port:5000\r\n";

    fn shaped() -> SDPMessage {
        let mut msg = parse(WEBRTCBIN_LIKE).unwrap();
        shape_offer(&mut msg).unwrap();
        msg
    }

    #[test]
    fn ssrcs_of_an_mline() {
        let seed = parse(include_str!("../../tests/data/seed_offer.sdp")).unwrap();
        assert_eq!(ssrcs_of(&seed, 0), [3944246763]);
        assert_eq!(ssrcs_of(&seed, 1), [3660306254, 1871602834]);
        assert!(ssrcs_of(&seed, 2).is_empty());
    }

    #[test]
    fn offer_gets_seed_mids_and_bundle() {
        let msg = shaped();
        assert_eq!(msg.attribute_val("group"), Some("BUNDLE 0 1 2"));
        for i in 0..3 {
            assert_eq!(mid_of(&msg, i), Some(i.to_string()));
            assert_eq!(mline_of(&msg, &i.to_string()), Some(i));
        }
    }

    #[test]
    fn offer_gets_exact_fmtp_and_feedback() {
        let msg = shaped();
        let video = msg.media(1).unwrap();
        let fmtps: Vec<_> = video
            .attributes()
            .filter(|a| a.key() == "fmtp")
            .filter_map(|a| a.value())
            .collect();
        assert!(fmtps.contains(
            &"106 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f"
        ));
        assert!(
            fmtps.contains(&"107 apt=106"),
            "RTX fmtp must survive: {fmtps:?}"
        );
        for fb in VIDEO_RTCP_FB {
            let want = format!("106 {fb}");
            assert_eq!(
                video
                    .attributes()
                    .filter(|a| a.key() == "rtcp-fb" && a.value() == Some(&want))
                    .count(),
                1,
                "{want}"
            );
        }
        assert_eq!(
            msg.media(0).unwrap().attribute_val("fmtp"),
            Some("111 minptime=10;useinbandfec=1")
        );
    }

    #[test]
    fn wrong_layouts_are_explained() {
        let mut msg = parse(&WEBRTCBIN_LIKE.replace("m=audio", "m=text")).unwrap();
        assert!(matches!(shape_offer(&mut msg), Err(OfferError::Layout(_))));
        let mut msg = parse(&WEBRTCBIN_LIKE.replace("106 107\r\n", "96 107\r\n")).unwrap();
        assert_eq!(shape_offer(&mut msg), Err(OfferError::NoH264));
    }

    #[test]
    fn answers_are_checked_against_the_offer() {
        let offer = shaped();
        let seed = include_str!("../../tests/data/seed_answer.sdp");
        check_answer(&offer, &parse(seed).unwrap()).unwrap();
        let two_lines = seed.split("m=application").next().unwrap();
        assert!(matches!(
            check_answer(&offer, &parse(two_lines).unwrap()),
            Err(AnswerError::MLineCount { .. })
        ));
        let swapped = seed.replace(
            "m=audio 9 UDP/TLS/RTP/SAVPF 111",
            "m=video 9 UDP/TLS/RTP/SAVPF 111",
        );
        assert!(matches!(
            check_answer(&offer, &parse(&swapped).unwrap()),
            Err(AnswerError::MLineKind { index: 0, .. })
        ));
        let vp8 = seed.replace(
            "m=video 9 UDP/TLS/RTP/SAVPF 106",
            "m=video 9 UDP/TLS/RTP/SAVPF 96",
        );
        assert!(matches!(
            check_answer(&offer, &parse(&vp8).unwrap()),
            Err(AnswerError::NoCommonCodec { index: 1, .. })
        ));
        assert!(parse("hello").is_err());
        assert!(parse("v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\n").is_err());
    }
}
