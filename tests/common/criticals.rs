//! GStreamer's CRITICAL warnings (a `g_return_if_fail` failing inside the library) are only
//! printed by GLib, never returned: a test that must not cause them counts them here.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

static COUNT: AtomicUsize = AtomicUsize::new(0);

/// GStreamer CRITICAL warnings logged in this process since the first call, which installs the
/// counting handler. The handler still prints each one, as GLib's default does.
pub fn gstreamer_criticals() -> usize {
    static HANDLER: OnceLock<glib::LogHandlerId> = OnceLock::new();
    HANDLER.get_or_init(|| {
        glib::log_set_handler(
            Some("GStreamer"),
            glib::LogLevels::LEVEL_CRITICAL,
            false,
            false,
            |domain, _, message| {
                COUNT.fetch_add(1, Ordering::SeqCst);
                eprintln!("{}-CRITICAL: {message}", domain.unwrap_or_default());
            },
        )
    });
    COUNT.load(Ordering::SeqCst)
}
