//! webrtcbin: its set-up, its signals as [`MediaEvent`]s, and its actions as async methods.
//!
//! Signal handlers run on GStreamer threads (streaming threads, or inside `set_state`): they
//! only convert their arguments to an owned event and send it on an unbounded channel. They
//! take no lock, never wait and hold no strong reference to the pipeline. The session task is
//! the only caller of the actions below, and awaits webrtcbin's promises as futures (waiting
//! on a promise inside a callback deadlocks webrtcbin, INTEROP.md point 9).

use gst::prelude::*;
use gst_rtp::prelude::*;
use gst_sdp::SDPMessage;
use gst_webrtc::{
    WebRTCBundlePolicy, WebRTCDataChannel, WebRTCICEConnectionState, WebRTCICEGatheringState,
    WebRTCICETransportPolicy, WebRTCPeerConnectionState, WebRTCRTPTransceiverDirection,
    WebRTCSDPType, WebRTCSessionDescription,
};
use tokio::sync::mpsc::UnboundedSender;

use super::{ice, sdp, MediaError};
use crate::config::{IceConfig, IcePolicy};

#[derive(Debug)]
pub enum MediaEvent {
    NegotiationNeeded,
    LocalCandidate {
        mline: u32,
        candidate: String,
    },
    IceGatheringState(WebRTCICEGatheringState),
    IceConnectionState(WebRTCICEConnectionState),
    ConnectionState(WebRTCPeerConnectionState),
    /// A data channel created by the remote peer (the answering side sees these).
    RemoteDataChannel(WebRTCDataChannel),
    DataChannelOpen,
    DataChannelMessage(String),
    DataChannelClosed,
    DataChannelError(String),
    /// rtpgccbwe's new `estimated-bitrate`, bit/s (see `congestion.rs`).
    EstimatedBitrate(u32),
    /// webrtcbin asked for an aux sender and rtpgccbwe could not be made.
    EstimatorMissing(String),
    /// `(SSRC reported on, fraction lost)` of each report block in one RTCP packet the peer sent.
    ReportBlocks(Vec<(u32, f64)>),
    /// The video encoder put out a key frame after a key frame was asked of it (a PLI/FIR
    /// from the peer, or the box's own request when the peer connects).
    KeyFrameAnswered(super::recovery::KeyFrameAnswer),
    /// The peer first connected: the buffers dropped at webrtcbin's input until then, and
    /// whether the video encoder took the request for a first key frame (see `gate.rs`).
    HeldBack {
        buffers: u64,
        key_frame_requested: bool,
    },
    /// A retransmission request refused: resending would have gone over the send estimate
    /// (see `retransmission.rs`).
    RetransmissionRefused,
}

pub type EventSender = UnboundedSender<MediaEvent>;

/// The actions of one webrtcbin. Holds the element, not the pipeline.
#[derive(Debug, Clone)]
pub struct WebRtc {
    bin: gst::Element,
}

impl WebRtc {
    pub fn new(bin: gst::Element) -> Self {
        WebRtc { bin }
    }

    pub fn element(&self) -> &gst::Element {
        &self.bin
    }

    /// The ICE part of the set-up, common to sender and receiver: BUNDLE, STUN/TURN, policy
    /// and the addresses libnice may gather on (INTEROP.md points 1 and 4).
    pub fn configure_ice(&self, cfg: &IceConfig) -> Result<(), MediaError> {
        self.bin
            .set_property("bundle-policy", WebRTCBundlePolicy::MaxBundle);
        let urls = ice::webrtcbin_urls(&cfg.servers);
        if let Some(stun) = &urls.stun {
            self.bin.set_property("stun-server", stun);
        }
        for turn in &urls.turn {
            let ok: bool = self.bin.emit_by_name("add-turn-server", &[turn]);
            if !ok {
                return Err(MediaError::webrtc(
                    "add-turn-server",
                    format!("webrtcbin rejected {}", ice::redact(turn)),
                ));
            }
        }
        self.bin.set_property(
            "ice-transport-policy",
            match cfg.transport_policy {
                IcePolicy::All => WebRTCICETransportPolicy::All,
                IcePolicy::Relay => WebRTCICETransportPolicy::Relay,
            },
        );
        if !cfg.local_addresses.is_empty() {
            let agent: gst::glib::Object = self.bin.property("ice-agent");
            for addr in &cfg.local_addresses {
                let ok: bool = agent.emit_by_name("add-local-ip-address", &[&addr.to_string()]);
                if !ok {
                    return Err(MediaError::webrtc(
                        "add-local-ip-address",
                        format!("libnice refused {addr}"),
                    ));
                }
            }
        }
        tune_nice_agent(&self.bin);
        Ok(())
    }

    /// Wires every webrtcbin signal the sessions care about into `tx`.
    pub fn connect_signals(&self, tx: &EventSender) {
        let t = tx.clone();
        self.bin.connect("on-negotiation-needed", false, move |_| {
            let _ = t.send(MediaEvent::NegotiationNeeded);
            None
        });
        let t = tx.clone();
        self.bin.connect("on-ice-candidate", false, move |args| {
            let mline = args[1].get::<u32>().unwrap_or_default();
            if let Ok(candidate) = args[2].get::<String>() {
                let _ = t.send(MediaEvent::LocalCandidate { mline, candidate });
            }
            None
        });
        let t = tx.clone();
        self.bin.connect("on-data-channel", false, move |args| {
            if let Ok(channel) = args[1].get::<WebRTCDataChannel>() {
                // Connected here, not later: the first message may follow right behind.
                connect_data_channel(&channel, &t);
                let _ = t.send(MediaEvent::RemoteDataChannel(channel));
            }
            None
        });
        let t = tx.clone();
        self.bin
            .connect_notify(Some("ice-gathering-state"), move |bin, _| {
                let _ = t.send(MediaEvent::IceGatheringState(
                    bin.property("ice-gathering-state"),
                ));
            });
        let t = tx.clone();
        self.bin
            .connect_notify(Some("ice-connection-state"), move |bin, _| {
                let _ = t.send(MediaEvent::IceConnectionState(
                    bin.property("ice-connection-state"),
                ));
            });
        let t = tx.clone();
        self.bin
            .connect_notify(Some("connection-state"), move |bin, _| {
                let _ = t.send(MediaEvent::ConnectionState(
                    bin.property("connection-state"),
                ));
            });
    }

    /// Sets every transceiver to `sendonly`, NACK/RTX on video only (INTEROP.md points 3 and
    /// 8), and adds the TWCC and MID header extensions to each payloader. The description must
    /// link audio to `sink_0` and video to `sink_1`.
    pub fn configure_sender(&self) -> Result<(), MediaError> {
        let mut seen = Vec::new();
        for pad in self.bin.sink_pads() {
            let transceiver: gst_webrtc::WebRTCRTPTransceiver = pad.property("transceiver");
            let mline = transceiver.mlineindex();
            let peer = pad
                .peer()
                .ok_or_else(|| MediaError::Layout(format!("pad {} is not linked", pad.name())))?;
            let kind = media_kind(&peer).ok_or_else(|| {
                MediaError::Layout(format!(
                    "from RTP payloaders; {} gets no application/x-rtp with a `media` field",
                    pad.name()
                ))
            })?;
            let expected = match mline {
                0 => "audio",
                1 => "video",
                _ => "",
            };
            if kind != expected {
                return Err(MediaError::Layout(format!(
                    "audio on sink_0 and video on sink_1; {} carries {kind}",
                    pad.name()
                )));
            }
            transceiver.set_direction(WebRTCRTPTransceiverDirection::Sendonly);
            transceiver.set_property("do-nack", kind == "video");
            let payloader = find_payloader(&peer).ok_or_else(|| {
                MediaError::Layout(format!("through an RTP payloader on {}", pad.name()))
            })?;
            add_header_extensions(&payloader, mline)?;
            seen.push(kind);
        }
        seen.sort();
        if seen != ["audio", "video"] {
            return Err(MediaError::Layout(format!(
                "exactly one audio and one video stream; it feeds {seen:?}"
            )));
        }
        Ok(())
    }

    /// Creates the data channel before negotiation (INTEROP.md point 7) and wires its signals.
    pub fn create_data_channel(
        &self,
        label: &str,
        tx: &EventSender,
    ) -> Result<WebRTCDataChannel, MediaError> {
        let channel: Option<WebRTCDataChannel> = self
            .bin
            .emit_by_name("create-data-channel", &[&label, &None::<gst::Structure>]);
        let channel = channel
            .ok_or_else(|| MediaError::webrtc("create-data-channel", "webrtcbin returned none"))?;
        connect_data_channel(&channel, tx);
        Ok(channel)
    }

    pub async fn create_offer(&self) -> Result<SDPMessage, MediaError> {
        self.create("create-offer", "offer").await
    }

    pub async fn create_answer(&self) -> Result<SDPMessage, MediaError> {
        self.create("create-answer", "answer").await
    }

    async fn create(&self, action: &'static str, field: &str) -> Result<SDPMessage, MediaError> {
        let (promise, future) = gst::Promise::new_future();
        self.bin
            .emit_by_name::<()>(action, &[&None::<gst::Structure>, &promise]);
        let reply = future
            .await
            .map_err(|e| MediaError::webrtc(action, format!("{e:?}")))?
            .ok_or_else(|| MediaError::webrtc(action, "empty reply"))?;
        if let Ok(err) = reply.get::<glib::Error>("error") {
            return Err(MediaError::webrtc(action, err));
        }
        let desc = reply
            .get::<WebRTCSessionDescription>(field)
            .map_err(|e| MediaError::webrtc(action, e))?;
        Ok(desc.sdp().to_owned())
    }

    pub async fn set_local(&self, kind: WebRTCSDPType, sdp: SDPMessage) -> Result<(), MediaError> {
        self.set_description("set-local-description", kind, sdp)
            .await
    }

    pub async fn set_remote(&self, kind: WebRTCSDPType, sdp: SDPMessage) -> Result<(), MediaError> {
        self.set_description("set-remote-description", kind, sdp)
            .await
    }

    async fn set_description(
        &self,
        action: &'static str,
        kind: WebRTCSDPType,
        sdp: SDPMessage,
    ) -> Result<(), MediaError> {
        let desc = WebRTCSessionDescription::new(kind, sdp);
        let (promise, future) = gst::Promise::new_future();
        self.bin.emit_by_name::<()>(action, &[&desc, &promise]);
        let reply = future
            .await
            .map_err(|e| MediaError::webrtc(action, format!("{e:?}")))?;
        if let Some(reply) = reply {
            if let Ok(err) = reply.get::<glib::Error>("error") {
                return Err(MediaError::webrtc(action, err));
            }
        }
        Ok(())
    }

    /// Hands a remote candidate to webrtcbin; callers check it with [`super::candidate::parse`]
    /// first, since webrtcbin 1.22 reports nothing back.
    pub fn add_ice_candidate(&self, mline: u32, candidate: &str) {
        self.bin
            .emit_by_name::<()>("add-ice-candidate", &[&mline, &candidate]);
    }

    pub fn local_description(&self) -> Option<SDPMessage> {
        self.description("local-description")
    }

    pub fn remote_description(&self) -> Option<SDPMessage> {
        self.description("remote-description")
    }

    fn description(&self, property: &str) -> Option<SDPMessage> {
        self.bin
            .property::<Option<WebRTCSessionDescription>>(property)
            .map(|d| d.sdp().to_owned())
    }

    /// webrtcbin's statistics (`get-stats`), awaited.
    pub async fn stats(&self) -> Result<gst::Structure, MediaError> {
        let (promise, future) = gst::Promise::new_future();
        self.bin
            .emit_by_name::<()>("get-stats", &[&None::<gst::Pad>, &promise]);
        let reply = future
            .await
            .map_err(|e| MediaError::webrtc("get-stats", format!("{e:?}")))?
            .ok_or_else(|| MediaError::webrtc("get-stats", "empty reply"))?;
        Ok(reply.to_owned())
    }

    /// `local-type → remote-type (local-addr ↔ remote-addr)` of the pair ICE selected, from
    /// the stats of the nominated, succeeded candidate pair.
    pub async fn selected_pair(&self) -> Option<String> {
        let stats = match self.stats().await {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(error = %e, "no stats");
                return None;
            }
        };
        tracing::trace!(%stats, "webrtcbin stats");
        let entries: Vec<gst::Structure> = stats
            .iter()
            .filter_map(|(_, v)| v.get::<gst::Structure>().ok())
            .collect();
        let find = |id: &str| {
            entries
                .iter()
                .find(|s| s.get::<String>("id").ok().as_deref() == Some(id))
        };
        let describe = |c: &gst::Structure| {
            format!(
                "{} {}:{}",
                c.get::<String>("candidate-type").unwrap_or_default(),
                c.get::<String>("address")
                    .or_else(|_| c.get::<String>("ip"))
                    .unwrap_or_default(),
                c.get::<u32>("port").unwrap_or_default()
            )
        };
        // The transport names the selected pair; 1.22 labels candidate stats' `type` the wrong
        // way round, so candidates are found by the pair's ids only.
        let pair_id = entries
            .iter()
            .find_map(|s| s.get::<String>("selected-candidate-pair-id").ok())?;
        let pair = find(&pair_id)?;
        let local = find(&pair.get::<String>("local-candidate-id").ok()?)?;
        let remote = find(&pair.get::<String>("remote-candidate-id").ok()?)?;
        Some(format!("{} <-> {}", describe(local), describe(remote)))
    }
}

pub fn connect_data_channel(channel: &WebRTCDataChannel, tx: &EventSender) {
    let t = tx.clone();
    channel.connect_on_open(move |_| {
        let _ = t.send(MediaEvent::DataChannelOpen);
    });
    let t = tx.clone();
    channel.connect_on_message_string(move |_, msg| {
        let _ = t.send(MediaEvent::DataChannelMessage(
            msg.unwrap_or_default().to_owned(),
        ));
    });
    let t = tx.clone();
    channel.connect_on_close(move |_| {
        let _ = t.send(MediaEvent::DataChannelClosed);
    });
    let t = tx.clone();
    channel.connect_on_error(move |_, err| {
        let _ = t.send(MediaEvent::DataChannelError(err.to_string()));
    });
}

/// `audio`/`video` from the `media` field of what a pad's peer can produce.
fn media_kind(src: &gst::Pad) -> Option<String> {
    let caps = src.query_caps(None);
    caps.iter()
        .find_map(|s| s.get::<String>("media").ok())
        .filter(|m| m == "audio" || m == "video")
}

/// Walks upstream from a webrtcbin sink pad's peer over single-input elements (queues,
/// capsfilters) to the RTP payloader.
fn find_payloader(src: &gst::Pad) -> Option<gst::Element> {
    let mut element = src.parent_element()?;
    for _ in 0..16 {
        if element.is::<gst_rtp::RTPBasePayload>() {
            return Some(element);
        }
        let sink = element.sink_pads().into_iter().next()?;
        element = sink.peer()?.parent_element()?;
    }
    None
}

fn add_header_extensions(payloader: &gst::Element, mline: u32) -> Result<(), MediaError> {
    for (uri, id) in [(sdp::TWCC_URI, sdp::TWCC_ID), (sdp::MID_URI, sdp::MID_ID)] {
        let ext = gst_rtp::RTPHeaderExtension::create_from_uri(uri).ok_or_else(|| {
            MediaError::webrtc(
                "header extension",
                format!("no element implements {uri}; install gstreamer1.0-plugins-good"),
            )
        })?;
        ext.set_id(id);
        if uri == sdp::MID_URI {
            // The offer names m-lines by index (see sdp::shape_offer).
            ext.set_property("mid", mline.to_string());
        }
        payloader.emit_by_name::<()>("add-extension", &[&ext]);
    }
    Ok(())
}

/// libnice's pacing of connectivity checks (Ta). Its default, 20 ms, spaces the box's checks
/// so that ICE on a LAN takes several ticks; RFC 8445 allows down to 5 ms, and a box has few
/// candidate pairs, so checks stay rare on the wire.
const ICE_PACING_MS: u32 = 5;

/// Three libnice settings webrtcbin does not expose:
/// - its keepalives are STUN indications that nobody answers, so a peer that vanishes without a
///   goodbye (power cut, network gone) leaves ICE `connected` forever; with
///   `keepalive-conncheck` they are binding requests that time out, and ICE goes `failed`,
///   which ends the session;
/// - UPnP is on by default: it multicasts SSDP discovery on every interface to open router
///   ports, which a box pinned to chosen addresses (and every test, pinned to loopback) must
///   not do; STUN and TURN cover what it is for;
/// - the check pacing, [`ICE_PACING_MS`].
///
/// Each is set only where the agent exposes the property as writable.
fn tune_nice_agent(bin: &gst::Element) {
    let webrtc_ice: gst::glib::Object = bin.property("ice-agent");
    if webrtc_ice.find_property("agent").is_none() {
        return;
    }
    let Some(agent) = webrtc_ice.property::<Option<gst::glib::Object>>("agent") else {
        return;
    };
    let settings = [
        ("keepalive-conncheck", true.to_value()),
        ("upnp", false.to_value()),
        ("stun-pacing-timer", ICE_PACING_MS.to_value()),
    ];
    for (name, value) in settings {
        let Some(spec) = agent.find_property(name) else {
            continue;
        };
        let flags = spec.flags();
        if flags.contains(gst::glib::ParamFlags::WRITABLE)
            && !flags.contains(gst::glib::ParamFlags::CONSTRUCT_ONLY)
            && spec.value_type() == value.type_()
        {
            agent.set_property_from_value(name, &value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_agent_checks_keepalives_paces_checks_and_never_uses_upnp() {
        crate::media::init().unwrap();
        let bin = gst::ElementFactory::make("webrtcbin").build().unwrap();
        tune_nice_agent(&bin);
        let webrtc_ice: gst::glib::Object = bin.property("ice-agent");
        let agent = webrtc_ice
            .property::<Option<gst::glib::Object>>("agent")
            .expect("webrtcbin 1.22 exposes its NiceAgent");
        assert!(agent.property::<bool>("keepalive-conncheck"));
        assert!(!agent.property::<bool>("upnp"));
        assert_eq!(agent.property::<u32>("stun-pacing-timer"), ICE_PACING_MS);
    }
}
