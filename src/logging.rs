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
