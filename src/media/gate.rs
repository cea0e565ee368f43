//! Media captured before the peer is connected is dropped at webrtcbin's input, not held.
//!
//! Until DTLS is up, webrtcbin blocks its input, and with it the streaming thread of each
//! source. A live source that runs on the clock (`videotestsrc`, `audiotestsrc`, the embedded
//! default) then makes up for the blocked time in a burst, so a handshake slowed by a lost
//! DTLS packet (1 s, then 2 s more) sends seconds of stale video at once: the pacer's queue
//! overflows, the picture freezes until the next key frame (1.5 s seen at 5 % loss). libwebrtc
//! does the same as this gate: nothing is encoded for a transport that is not writable, and
//! the first frame after it is a key frame (the session asks for one when the peer connects).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use gst::prelude::*;
use gst_webrtc::WebRTCPeerConnectionState;

use super::webrtc::EventSender;
use super::MediaEvent;

/// Drops every buffer reaching `webrtcbin`'s sink pads until its connection state first
/// becomes `connected`; events (caps, segments, EOS) pass. Once open, it sends
/// [`MediaEvent::HeldBack`] with the number of buffers dropped. Must be installed before the
/// session's own `connection-state` handler, so the gate is open by the time the session asks
/// the encoder for the first key frame.
pub fn drop_until_connected(webrtcbin: &gst::Element, tx: &EventSender) {
    let dropped = Arc::new(AtomicU64::new(0));
    let mut probes = Vec::new();
    for pad in webrtcbin.sink_pads() {
        let count = dropped.clone();
        let id = pad.add_probe(
            gst::PadProbeType::BUFFER | gst::PadProbeType::BUFFER_LIST,
            move |_, info| {
                let n = match &info.data {
                    Some(gst::PadProbeData::BufferList(list)) => list.len() as u64,
                    _ => 1,
                };
                count.fetch_add(n, Ordering::Relaxed);
                // Handled, not Drop: GStreamer 1.22 unrefs a dropped buffer after the
                // bindings have already taken it, a NULL unref that logs a CRITICAL per
                // buffer (fixed in 1.24.8, gstreamer!7506). Handled lets the bindings free
                // it, and upstream sees the probe's flow, OK.
                gst::PadProbeReturn::Handled
            },
        );
        if let Some(id) = id {
            probes.push((pad.downgrade(), id));
        }
    }
    // Taken once, by the first `connected`; the lock is never held while waiting.
    let probes = Mutex::new(Some(probes));
    let tx = tx.clone();
    webrtcbin.connect_notify(Some("connection-state"), move |bin, _| {
        let state: WebRTCPeerConnectionState = bin.property("connection-state");
        if state != WebRTCPeerConnectionState::Connected {
            return;
        }
        let Some(probes) = probes.lock().ok().and_then(|mut p| p.take()) else {
            return;
        };
        for (pad, id) in probes {
            if let Some(pad) = pad.upgrade() {
                pad.remove_probe(id);
            }
        }
        let _ = tx.send(MediaEvent::HeldBack(dropped.load(Ordering::Relaxed)));
    });
}
