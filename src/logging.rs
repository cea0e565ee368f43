//! tracing set-up, and GStreamer's own log routed into it so one stream (the journal, under
//! systemd) holds both.

use std::io::IsTerminal;

/// `filter` is a level (`info`) or a tracing filter (`airsync_streamer=debug,info`).
/// GStreamer messages arrive under the target `gstreamer`, at warning and above unless
/// `GST_DEBUG` asks for more.
pub fn init(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter).unwrap_or_else(|e| {
        eprintln!("airsync-streamer: bad log filter `{filter}` ({e}); using `info`");
        tracing_subscriber::EnvFilter::new("info")
    });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
    route_gstreamer_log();
}

fn route_gstreamer_log() {
    if std::env::var_os("GST_DEBUG").is_none() {
        gst::log::set_default_threshold(gst::DebugLevel::Warning);
    }
    gst::log::remove_default_log_function();
    gst::log::add_log_function(
        |category, level, _file, _function, _line, object, message| {
            let Some(text) = message.get() else { return };
            let object = object.map(|o| o.to_string()).unwrap_or_default();
            let category = category.name();
            let level = if level <= gst::DebugLevel::Warning
                && is_routine(category, &object, text.as_str())
            {
                gst::DebugLevel::Debug
            } else {
                level
            };
            match level {
                gst::DebugLevel::Error => {
                    tracing::error!(target: "gstreamer", %category, %object, "{text}")
                }
                gst::DebugLevel::Warning | gst::DebugLevel::Fixme => {
                    tracing::warn!(target: "gstreamer", %category, %object, "{text}")
                }
                gst::DebugLevel::Info => {
                    tracing::info!(target: "gstreamer", %category, %object, "{text}")
                }
                gst::DebugLevel::Debug => {
                    tracing::debug!(target: "gstreamer", %category, %object, "{text}")
                }
                _ => tracing::trace!(target: "gstreamer", %category, %object, "{text}"),
            }
        },
    );
}

/// Warnings and errors GStreamer 1.22 prints in every healthy session: `(category, start of
/// the message, object name prefix)`. They would fill the journal with an ERROR at every clean
/// stop, so they are logged at debug level. Why each is harmless:
/// - nicesrc's source pad is linked before webrtcbin's receiving side exists; the sticky events
///   follow with the first packet;
/// - webrtcbin's transport send bin refuses the latency event while DTLS is not up;
/// - the first RTP packet leaves before the pipeline has redistributed its latency (the session
///   does it at once, see `session/events.rs`);
/// - rtpgccbwe reports its pacing task ending at EOS as an error, and rtpfunnel fails to push a
///   segment after it: both only happen when a stop drains the pipeline with EOS;
/// - `serve`'s answering webrtcbin has no transceivers of its own: for each m-line of a box's
///   offer it makes a receive-only one ("will only receive"), which is all it is for;
/// - a received stream gets no FEC decoder when the offer has no ULPFEC (the box's never has:
///   video is repaired by RTX).
///
/// Besides these, the device check's probe of a PulseAudio microphone (`media/devices.rs`) is
/// stopped mid-read on purpose, which audiosrc reports as "error reading data"; from the real
/// source, the same words are news and stay warnings.
const ROUTINE: &[(&str, &str, &str)] = &[
    ("GST_PADS", "could not send sticky events", "nicesrc"),
    (
        "webrtctransportsendbin",
        "did not really configure latency",
        "",
    ),
    (
        "rtpsession",
        "Can't determine running time for this packet",
        "",
    ),
    ("rtpgccbwe", "pause task, reason: Eos", ""),
    ("gstrtpfunnel", "Could not push segment", ""),
    (
        "webrtcbin",
        "did not find compatible transceiver for offer caps",
        crate::server::answerer::WEBRTCBIN_NAME,
    ),
    (
        "webrtcbin",
        "failed to match fec decoder with transceiver",
        "webrtctransceiver",
    ),
];

fn is_routine(category: &str, object: &str, message: &str) -> bool {
    let probe_stopped = category == "audiosrc"
        && message.starts_with("error reading data")
        && object.ends_with(crate::media::devices::PROBE_SUFFIX);
    probe_stopped
        || ROUTINE
            .iter()
            .any(|(c, m, o)| *c == category && message.starts_with(m) && object.starts_with(o))
}

#[cfg(test)]
mod tests {
    use super::is_routine;

    #[test]
    fn routine_messages_are_told_from_real_ones() {
        assert!(is_routine(
            "rtpgccbwe",
            "rtpgccbwe0",
            "pause task, reason: Eos"
        ));
        assert!(is_routine(
            "GST_PADS",
            "nicesrc0:src",
            "could not send sticky events"
        ));
        // The same words from another element, or another message, still count.
        assert!(!is_routine(
            "GST_PADS",
            "x264enc0:src",
            "could not send sticky events"
        ));
        assert!(!is_routine(
            "rtpgccbwe",
            "rtpgccbwe0",
            "pause task, reason: Error"
        ));
        // Only the server's answerer makes its transceivers from the offer.
        let no_transceiver = "did not find compatible transceiver for offer caps application/x-rtp, media=(string)video, will only receive";
        assert!(is_routine("webrtcbin", "answerer-webrtc", no_transceiver));
        assert!(!is_routine("webrtcbin", "webrtc", no_transceiver));
        // The device probe is stopped mid-read on purpose; the microphone itself is not.
        let read_error = "error reading data -1 (reason: Success), skipping segment";
        assert!(is_routine("audiosrc", "pulsesrc1-probe", read_error));
        assert!(!is_routine("audiosrc", "pulsesrc1", read_error));
    }
}
