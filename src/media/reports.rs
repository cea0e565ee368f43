//! The box's own RTCP sender reports: how often they leave, and reading them at a receiver.

use gst::prelude::*;

/// How often the box sends its sender reports, as Chrome sends them for video.
///
/// rtpsession's default minimum is 5 s, which under AVPF means a report every 2.5–7.5 s
/// (1.8–3.9 s apart, measured). A receiver maps each stream's RTP time to the box's clock
/// from them: lip sync waits for the first of both streams, and follows drift only as fast as
/// they come. The cost is one ~110-byte packet a second.
pub const SENDER_REPORT_INTERVAL: gst::ClockTime = gst::ClockTime::SECOND;

/// Sets the box's RTP session to send its reports every [`SENDER_REPORT_INTERVAL`]. The box
/// sends no feedback of its own, so nothing else pushes its regular reports back (unlike a
/// receiver's, see `server/answerer.rs`). Returns false while the session does not exist yet
/// (before the answer).
pub fn send_each_second(webrtcbin: &gst::Element) -> bool {
    let Some(session) = super::recovery::rtp_session(webrtcbin) else {
        return false;
    };
    session.set_property("rtcp-min-interval", SENDER_REPORT_INTERVAL.nseconds());
    true
}

/// The sender's SSRC of each sender report in one (compound or reduced-size) RTCP packet;
/// nothing for a packet that does not parse.
pub fn sender_reports_in(rtcp: &[u8]) -> Vec<u32> {
    let Ok(compound) = rtcp_types::Compound::parse(rtcp) else {
        return Vec::new();
    };
    compound
        .flatten()
        .filter_map(|p| match p {
            rtcp_types::Packet::Sr(sr) => Some(sr.ssrc()),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtcp_types::RtcpPacketWriterExt;

    #[test]
    fn sender_reports_of_a_compound_packet() {
        let mut buf = vec![0u8; 256];
        let len = rtcp_types::Compound::builder()
            .add_packet(rtcp_types::SenderReport::builder(0x11))
            .add_packet(rtcp_types::SenderReport::builder(0x12))
            .add_packet(rtcp_types::ReceiverReport::builder(0x13))
            .write_into(&mut buf)
            .unwrap();
        assert_eq!(sender_reports_in(&buf[..len]), vec![0x11, 0x12]);
        assert!(sender_reports_in(b"garbage").is_empty());
        assert!(sender_reports_in(&[]).is_empty());
    }
}
