//! The video's retransmission sender, webrtcbin's `rtprtxsend`: how long it keeps sent packets,
//! and how much it may resend.
//!
//! A receiver NACKs every packet it misses, again and again until the packet comes or its
//! jitter buffer gives up. When the box starts above what a narrow link carries, the link
//! drops packets by the hundred, the answers to those NACKs overflow it in turn, and more is
//! lost: behind a 500 kbit/s bottleneck a start at 1.5 Mbit/s resent 1.8–7.4 Mbit in its
//! first seconds, up to four times the video itself.
//! rtpgccbwe's pacer does not hold them back (it lets anything beyond 30 ms of data out at
//! once), and rtprtxsend has no limit of its own. libwebrtc bounds a sender's retransmissions
//! by its send estimate over a 500 ms window (`RateLimiter`, `kRetransmitWindowSizeMs`); the
//! box does the same, refusing the retransmission requests that would go over it.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use gst::prelude::*;
use tracing::debug;

use super::congestion::SendEstimate;
use super::webrtc::{EventSender, MediaEvent};

/// How long sent video packets stay available for retransmission, ms. webrtcbin 1.22 keeps
/// the last 500 (rtprtxsend `max-size-packets`): 3 s of video at 1.5 Mbit/s, 10 s at
/// 500 kbit/s. A packet resent a second after it was first sent comes after the receiver's
/// jitter buffer gave up on it (libwebrtc's sender keeps about as much: 1 s, or 3 RTT when
/// that is longer), so older ones only hold memory: 0.6 MiB of the box's RSS at 1.5 Mbit/s.
pub const RTX_HISTORY_MS: u32 = 1000;

/// The window over which retransmissions may take at most the send estimate (libwebrtc's).
pub const WINDOW: Duration = Duration::from_millis(500);

/// Bytes RTX adds to the packet it resends: the original sequence number (RFC 4588).
const RTX_HEADER: usize = 2;

/// What to do with one retransmission request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Resend: within the budget, or no estimate to bound it by.
    Grant,
    /// The packet is not among those sent in the last [`RTX_HISTORY_MS`]: rtprtxsend has no
    /// copy left either, so the request costs nothing.
    Unknown,
    /// Resending it would take the last [`WINDOW`]'s retransmissions over the estimate.
    Refuse,
}

/// Pure logic: the sizes of the packets sent lately, the retransmissions granted in the last
/// [`WINDOW`], and which requests fit.
#[derive(Debug, Default)]
pub struct RetransmissionBudget {
    /// `(sent at, SSRC, sequence number, bytes)`, oldest first.
    sent: VecDeque<(Instant, u32, u16, usize)>,
    /// `(granted at, bytes)`, oldest first.
    granted: VecDeque<(Instant, usize)>,
    granted_bytes: usize,
}

impl RetransmissionBudget {
    /// A packet left the retransmission sender (an original or a retransmission: the latter
    /// carry the RTX SSRC, which no request names).
    pub fn on_sent(&mut self, now: Instant, ssrc: u32, seqnum: u16, bytes: usize) {
        let history = Duration::from_millis(RTX_HISTORY_MS.into());
        while self
            .sent
            .front()
            .is_some_and(|(t, ..)| now.duration_since(*t) > history)
        {
            self.sent.pop_front();
        }
        self.sent.push_back((now, ssrc, seqnum, bytes));
    }

    /// A request to resend packet `seqnum` of `ssrc`, with the send estimate (bit/s) if there
    /// is one. A granted request is charged at once: rtprtxsend sends the packet later, from
    /// its own thread, and a NACK asks for many packets at a time.
    pub fn on_request(
        &mut self,
        now: Instant,
        ssrc: u32,
        seqnum: u16,
        estimate_bps: Option<u32>,
    ) -> Verdict {
        while self
            .granted
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) >= WINDOW)
        {
            let (_, bytes) = self.granted.pop_front().unwrap();
            self.granted_bytes -= bytes;
        }
        let Some(&(.., bytes)) = self
            .sent
            .iter()
            .rev()
            .find(|(_, s, q, _)| *s == ssrc && *q == seqnum)
        else {
            return Verdict::Unknown;
        };
        let cost = bytes + RTX_HEADER;
        if let Some(bps) = estimate_bps {
            let allowed = u128::from(bps) * WINDOW.as_micros() / 8 / 1_000_000;
            if (self.granted_bytes + cost) as u128 > allowed {
                return Verdict::Refuse;
            }
        }
        self.granted.push_back((now, cost));
        self.granted_bytes += cost;
        Verdict::Grant
    }
}

/// Sets up every retransmission sender webrtcbin builds in `pipeline`: history bounded to
/// [`RTX_HISTORY_MS`] (the 500-packet bound stays), and requests refused beyond the send
/// estimate (none while `estimate` is unknown: congestion control off). Each refusal goes to
/// `tx` as [`MediaEvent::RetransmissionRefused`]. Must be called before negotiating:
/// webrtcbin builds them, inside a bin for its aux senders, when it connects a sending stream
/// to its RTP session (once the answer is applied and the stream has caps).
pub fn configure(pipeline: &gst::Pipeline, estimate: &SendEstimate, tx: &EventSender) {
    let (estimate, tx) = (estimate.clone(), tx.clone());
    // webrtcbin adds the sender to its bin and the bin to the pipeline, and the signal can
    // come for both: each sender is set up once, or its requests would be counted twice.
    let done: Mutex<Vec<glib::WeakRef<gst::Element>>> = Default::default();
    pipeline.connect_deep_element_added(move |_, _, element| {
        let is_rtx_sender =
            |e: &gst::Element| e.factory().is_some_and(|f| f.name() == "rtprtxsend");
        let added: Vec<gst::Element> = match element.downcast_ref::<gst::Bin>() {
            Some(bin) => bin.iterate_recurse().into_iter().flatten().collect(),
            None => vec![element.clone()],
        };
        for rtx in added.iter().filter(|e| is_rtx_sender(e)) {
            {
                let mut done = done.lock().unwrap_or_else(|e| e.into_inner());
                if done.iter().any(|w| w.upgrade().as_ref() == Some(rtx)) {
                    continue;
                }
                done.retain(|w| w.upgrade().is_some());
                done.push(rtx.downgrade());
            }
            rtx.set_property("max-size-time", RTX_HISTORY_MS);
            debug!(element = %rtx.name(), ms = RTX_HISTORY_MS, "retransmission history bounded");
            bound_by_estimate(rtx, estimate.clone(), tx.clone());
        }
    });
}

/// The retransmission requests reach `rtx` as upstream events on its source pad, and what it
/// sends leaves by the same pad: one probe sees both.
fn bound_by_estimate(rtx: &gst::Element, estimate: SendEstimate, tx: EventSender) {
    let Some(src) = rtx.static_pad("src") else {
        return;
    };
    let budget: Mutex<(RetransmissionBudget, bool)> = Default::default();
    src.add_probe(
        gst::PadProbeType::BUFFER
            | gst::PadProbeType::BUFFER_LIST
            | gst::PadProbeType::EVENT_UPSTREAM,
        move |_, info| {
            let now = Instant::now();
            let mut guard = budget.lock().unwrap_or_else(|e| e.into_inner());
            let (budget, refusing) = &mut *guard;
            let mut note = |buffer: &gst::BufferRef| {
                if let Ok(rtp) = gst_rtp::RTPBuffer::from_buffer_readable(buffer) {
                    budget.on_sent(now, rtp.ssrc(), rtp.seq(), buffer.size());
                }
            };
            match &info.data {
                Some(gst::PadProbeData::Buffer(buffer)) => note(buffer),
                Some(gst::PadProbeData::BufferList(list)) => list.iter().for_each(note),
                Some(gst::PadProbeData::Event(event)) => {
                    let Some(request) = event
                        .structure()
                        .filter(|s| s.name() == "GstRTPRetransmissionRequest")
                    else {
                        return gst::PadProbeReturn::Ok;
                    };
                    let (Ok(ssrc), Ok(seqnum)) =
                        (request.get::<u32>("ssrc"), request.get::<u32>("seqnum"))
                    else {
                        return gst::PadProbeReturn::Ok;
                    };
                    let bps = estimate.get();
                    match budget.on_request(now, ssrc, seqnum as u16, bps) {
                        Verdict::Refuse => {
                            if !*refusing {
                                debug!(
                                    estimate_bps = bps,
                                    window_ms = WINDOW.as_millis() as u64,
                                    "retransmissions at the send estimate: refusing requests"
                                );
                                *refusing = true;
                            }
                            let _ = tx.send(MediaEvent::RetransmissionRefused);
                            // Handled, not Drop: GStreamer 1.22 unrefs a dropped event
                            // after the bindings have already taken it, a NULL unref that
                            // logs a CRITICAL per refusal (fixed in 1.24.8, gstreamer!7506).
                            // Handled lets the bindings free the event and core skip it.
                            return gst::PadProbeReturn::Handled;
                        }
                        Verdict::Grant if *refusing => {
                            debug!("retransmissions under the send estimate again");
                            *refusing = false;
                        }
                        _ => {}
                    }
                }
                _ => {}
            }
            gst::PadProbeReturn::Ok
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    /// A budget that saw `packets` packets of `bytes` each sent at `t0` on SSRC 7, sequence
    /// numbers from 0.
    fn budget_after(t0: Instant, packets: u16, bytes: usize) -> RetransmissionBudget {
        let mut budget = RetransmissionBudget::default();
        for seq in 0..packets {
            budget.on_sent(t0, 7, seq, bytes);
        }
        budget
    }

    fn description(
        webrtc: &gst::Element,
        signal: &str,
        field: &str,
    ) -> gst_webrtc::WebRTCSessionDescription {
        let promise = gst::Promise::new();
        webrtc.emit_by_name::<()>(signal, &[&None::<gst::Structure>, &promise]);
        assert_eq!(promise.wait(), gst::PromiseResult::Replied, "{signal}");
        promise.get_reply().unwrap().get(field).unwrap()
    }

    fn apply(webrtc: &gst::Element, signal: &str, sdp: &gst_webrtc::WebRTCSessionDescription) {
        let promise = gst::Promise::new();
        webrtc.emit_by_name::<()>(signal, &[sdp, &promise]);
        assert_eq!(promise.wait(), gst::PromiseResult::Replied, "{signal}");
    }

    #[test]
    fn retransmission_history_is_bounded_in_time() {
        crate::media::init().unwrap();
        let pipeline = gst::parse::launch(
            "videotestsrc is-live=true ! x264enc ! rtph264pay ! \
             application/x-rtp,media=video,encoding-name=H264,payload=96 ! webrtcbin name=w",
        )
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        configure(&pipeline, &SendEstimate::default(), &tx);
        let webrtc = pipeline.by_name("w").unwrap();
        let sink = webrtc.static_pad("sink_0").unwrap();
        let transceiver: gst_webrtc::WebRTCRTPTransceiver = sink.property("transceiver");
        transceiver.set_property("do-nack", true);
        pipeline.set_state(gst::State::Playing).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while sink.current_caps().is_none() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }

        // webrtcbin builds the RTP session's aux senders once the answer is applied; a second
        // webrtcbin answers.
        let answerer = gst::ElementFactory::make("webrtcbin").build().unwrap();
        // With do-nack the answer accepts the offer's RTX.
        answerer.connect("on-new-transceiver", false, |args| {
            args[1]
                .get::<glib::Object>()
                .unwrap()
                .set_property("do-nack", true);
            None
        });
        answerer.set_state(gst::State::Ready).unwrap();
        let offer = description(&webrtc, "create-offer", "offer");
        apply(&webrtc, "set-local-description", &offer);
        apply(&answerer, "set-remote-description", &offer);
        let answer = description(&answerer, "create-answer", "answer");
        apply(&webrtc, "set-remote-description", &answer);
        answerer.set_state(gst::State::Null).unwrap();

        let rtx: Vec<gst::Element> = pipeline
            .iterate_recurse()
            .into_iter()
            .flatten()
            .filter(|e| e.factory().is_some_and(|f| f.name() == "rtprtxsend"))
            .collect();
        pipeline.set_state(gst::State::Null).unwrap();
        assert_eq!(rtx.len(), 1, "webrtcbin built one retransmission sender");
        assert_eq!(rtx[0].property::<u32>("max-size-time"), RTX_HISTORY_MS);
        assert_eq!(rtx[0].property::<u32>("max-size-packets"), 500);
    }

    #[test]
    fn requests_are_granted_up_to_the_estimate_over_the_window() {
        let t0 = Instant::now();
        let mut budget = budget_after(t0, 100, 998);
        // 160 kbit/s over 500 ms: 10 000 bytes, 10 packets of 1000 with their RTX header.
        let estimate = Some(160_000);
        for seq in 0..10 {
            assert_eq!(budget.on_request(t0, 7, seq, estimate), Verdict::Grant);
        }
        assert_eq!(budget.on_request(t0, 7, 10, estimate), Verdict::Refuse);
        // A refused request is not charged, and the window frees what it granted once it
        // has passed.
        assert_eq!(
            budget.on_request(ms(t0, 499), 7, 10, estimate),
            Verdict::Refuse
        );
        assert_eq!(
            budget.on_request(ms(t0, 500), 7, 10, estimate),
            Verdict::Grant
        );
    }

    #[test]
    fn the_budget_follows_the_estimate_it_is_given() {
        let t0 = Instant::now();
        let mut budget = budget_after(t0, 4, 998);
        assert_eq!(budget.on_request(t0, 7, 0, Some(32_000)), Verdict::Grant);
        assert_eq!(budget.on_request(t0, 7, 1, Some(32_000)), Verdict::Grant);
        assert_eq!(budget.on_request(t0, 7, 2, Some(32_000)), Verdict::Refuse);
        assert_eq!(budget.on_request(t0, 7, 2, Some(48_000)), Verdict::Grant);
    }

    #[test]
    fn without_an_estimate_every_request_is_granted() {
        let t0 = Instant::now();
        let mut budget = budget_after(t0, 1000, 1200);
        for seq in 0..1000u16 {
            assert_eq!(budget.on_request(t0, 7, seq, None), Verdict::Grant);
        }
    }

    #[test]
    fn packets_out_of_the_history_or_of_another_stream_cost_nothing() {
        let t0 = Instant::now();
        let mut budget = RetransmissionBudget::default();
        budget.on_sent(t0, 7, 1, 1000);
        budget.on_sent(ms(t0, 1001), 7, 2, 1000);
        // Packet 1 left the history when packet 2 was sent, a second later.
        assert_eq!(
            budget.on_request(ms(t0, 1001), 7, 1, Some(1)),
            Verdict::Unknown
        );
        assert_eq!(
            budget.on_request(ms(t0, 1001), 8, 2, Some(1)),
            Verdict::Unknown
        );
        assert_eq!(
            budget.on_request(ms(t0, 1001), 7, 2, Some(1)),
            Verdict::Refuse
        );
    }
}
