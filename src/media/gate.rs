//! Media captured before the peer is connected is dropped at webrtcbin's input, not held.
//!
//! Until DTLS is up, webrtcbin blocks its input, and with it the streaming thread of each
//! source. A live source that runs on the clock (`videotestsrc`, `audiotestsrc`, the embedded
//! default) then makes up for the blocked time in a burst, so a handshake slowed by a lost
//! DTLS packet (1 s, then 2 s more) sends seconds of stale video at once: the pacer's queue
//! overflows, the picture freezes until the next key frame (1.5 s seen at 5 % loss). libwebrtc
//! does the same as this gate: nothing is encoded for a transport that is not writable, and
//! the first frame after it is a key frame (the gate asks for one when the peer connects).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use gst::prelude::*;
use gst_webrtc::WebRTCPeerConnectionState;

use super::recovery;
use super::webrtc::EventSender;
use super::MediaEvent;

/// Drops every buffer reaching `webrtcbin`'s sink pads until its connection state first
/// becomes `connected`, and then each pad's buffers until one that starts a key frame (one
/// without `DELTA_UNIT`: rtph264pay flags all but a key frame's first packet, Opus packets
/// are never flagged): a delta frame whose references were dropped is of no use to the peer,
/// and the part of one that was on its way when the gate opened made it ask for another key
/// frame. Events (caps, segments, EOS) pass. On `connected` it asks `encoder` for a key frame
/// and sends [`MediaEvent::HeldBack`]; each pad's probe removes itself once it lets a buffer
/// through.
pub fn drop_until_connected(
    webrtcbin: &gst::Element,
    encoder: Option<&gst::Element>,
    tx: &EventSender,
) {
    let dropped = Arc::new(AtomicU64::new(0));
    let connected = Arc::new(AtomicBool::new(false));
    for pad in webrtcbin.sink_pads() {
        let (count, connected) = (dropped.clone(), connected.clone());
        pad.add_probe(
            gst::PadProbeType::BUFFER | gst::PadProbeType::BUFFER_LIST,
            move |_, info| {
                let (n, flags) = match &info.data {
                    Some(gst::PadProbeData::Buffer(buffer)) => (1, Some(buffer.flags())),
                    Some(gst::PadProbeData::BufferList(list)) => {
                        (list.len() as u64, list.get(0).map(|b| b.flags()))
                    }
                    _ => return gst::PadProbeReturn::Ok,
                };
                let delta = flags.is_some_and(|f| f.contains(gst::BufferFlags::DELTA_UNIT));
                if connected.load(Ordering::SeqCst) && !delta {
                    return gst::PadProbeReturn::Remove;
                }
                count.fetch_add(n, Ordering::Relaxed);
                // Handled, not Drop: GStreamer 1.22 unrefs a dropped buffer after the
                // bindings have already taken it, a NULL unref that logs a CRITICAL per
                // buffer (fixed in 1.24.8, gstreamer!7506). Handled lets the bindings free
                // it, and upstream sees the probe's flow, OK.
                gst::PadProbeReturn::Handled
            },
        );
    }
    let encoder = encoder.map(|e| e.downgrade());
    let tx = tx.clone();
    webrtcbin.connect_notify(Some("connection-state"), move |bin, _| {
        let state: WebRTCPeerConnectionState = bin.property("connection-state");
        if state != WebRTCPeerConnectionState::Connected || connected.swap(true, Ordering::SeqCst) {
            return;
        }
        let key_frame_requested = encoder
            .as_ref()
            .and_then(|e| e.upgrade())
            .is_some_and(|e| recovery::request_key_frame(&e));
        let _ = tx.send(MediaEvent::HeldBack {
            buffers: dropped.load(Ordering::Relaxed),
            key_frame_requested,
        });
    });
}
