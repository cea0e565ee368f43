//! Loading a pipeline description and owning the resulting pipeline.

use std::path::Path;

use gst::prelude::*;

use super::MediaError;
use crate::metrics::Gauge;

/// Debian package that ships each element a description is likely to use, for error messages.
const ELEMENT_PACKAGES: &[(&str, &str)] = &[
    ("webrtcbin", "gstreamer1.0-plugins-bad"),
    ("x264enc", "gstreamer1.0-plugins-ugly"),
    ("openh264enc", "gstreamer1.0-plugins-bad"),
    ("vaapih264enc", "gstreamer1.0-vaapi"),
    ("v4l2h264enc", "gstreamer1.0-plugins-good"),
    ("v4l2src", "gstreamer1.0-plugins-good"),
    ("rtph264pay", "gstreamer1.0-plugins-good"),
    ("rtpopuspay", "gstreamer1.0-plugins-good"),
    ("opusenc", "gstreamer1.0-plugins-base"),
    ("audiotestsrc", "gstreamer1.0-plugins-base"),
    ("videotestsrc", "gstreamer1.0-plugins-base"),
    ("videoconvert", "gstreamer1.0-plugins-base"),
    ("audioconvert", "gstreamer1.0-plugins-base"),
    ("audioresample", "gstreamer1.0-plugins-base"),
    ("alsasrc", "gstreamer1.0-alsa"),
    ("pulsesrc", "gstreamer1.0-pulseaudio"),
    ("pipewiresrc", "gstreamer1.0-pipewire"),
    ("avdec_h264", "gstreamer1.0-libav"),
    ("nicesrc", "gstreamer1.0-nice"),
];

pub fn package_for(element: &str) -> &'static str {
    ELEMENT_PACKAGES
        .iter()
        .find(|(e, _)| *e == element)
        .map(|(_, p)| *p)
        .unwrap_or("the Debian package that provides it (try `apt-file search`)")
}

/// Reads and parses a description file. Parse errors name the file and, where the parser
/// says which, the missing elements and the package to install.
pub fn load(path: &Path) -> Result<gst::Pipeline, MediaError> {
    let text = std::fs::read_to_string(path).map_err(|source| MediaError::ReadDescription {
        path: path.to_owned(),
        source,
    })?;
    parse(&text, path)
}

pub fn parse(description: &str, path: &Path) -> Result<gst::Pipeline, MediaError> {
    crate::media::init()?;
    let mut context = gst::ParseContext::new();
    let parsed = gst::parse::launch_full(
        description,
        Some(&mut context),
        gst::ParseFlags::FATAL_ERRORS,
    );
    // GStreamer 1.22 also lists elements here whose properties failed to parse: only an
    // element with no factory is really missing.
    let missing = context.missing_elements();
    if let Some(element) = missing
        .iter()
        .find(|e| gst::ElementFactory::find(e.as_str()).is_none())
    {
        return Err(MediaError::MissingElement {
            element: element.to_string(),
            package: package_for(element),
            path: path.to_owned(),
        });
    }
    let element = parsed.map_err(|e| MediaError::ParseDescription {
        path: path.to_owned(),
        line: error_line(description, &e.to_string()),
        message: e.to_string(),
    })?;
    element
        .downcast::<gst::Pipeline>()
        .map_err(|_| MediaError::NotAPipeline(path.to_owned()))
}

/// The parser reports no position; find the first line naming what it complains about.
fn error_line(description: &str, message: &str) -> Option<usize> {
    let quoted: Vec<&str> = message.split(['"', '\'']).skip(1).step_by(2).collect();
    description
        .lines()
        .position(|line| quoted.iter().any(|q| !q.is_empty() && line.contains(q)))
        .map(|i| i + 1)
}

pub fn find_webrtcbin(
    pipeline: &gst::Pipeline,
    name: &str,
    path: &Path,
) -> Result<gst::Element, MediaError> {
    let element = pipeline
        .by_name(name)
        .ok_or_else(|| MediaError::NoWebrtcbin {
            name: name.to_owned(),
            path: path.to_owned(),
        })?;
    if element.factory().map(|f| f.name()) != Some("webrtcbin".into()) {
        return Err(MediaError::NoWebrtcbin {
            name: name.to_owned(),
            path: path.to_owned(),
        });
    }
    Ok(element)
}

/// Sets the pipeline to `Null` when dropped, so no session can leak a running pipeline.
pub struct PipelineGuard(gst::Pipeline, Option<Gauge>);

impl PipelineGuard {
    pub fn new(pipeline: gst::Pipeline) -> Self {
        PipelineGuard(pipeline, None)
    }

    /// Counts the pipeline in `running` until the guard drops and in `alive` until GLib
    /// finalises it, so tests and the soak run can see leaks.
    pub fn track(&mut self, running: &Gauge, alive: &Gauge) {
        if self.1.is_some() {
            return;
        }
        let alive = alive.clone();
        alive.inc();
        // The notification fires when the object is finalised; the handle need not be kept.
        drop(self.0.add_weak_ref_notify(move || alive.dec()));
        running.inc();
        self.1 = Some(running.clone());
    }

    pub fn pipeline(&self) -> &gst::Pipeline {
        &self.0
    }
}

impl Drop for PipelineGuard {
    fn drop(&mut self) {
        let _ = self.0.set_state(gst::State::Null);
        if let Some(running) = self.1.take() {
            running.dec();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_descriptions_parse() {
        for name in ["test.pipeline", "camera.pipeline"] {
            let path = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("pipelines")
                .join(name);
            let pipeline = load(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
            find_webrtcbin(&pipeline, "webrtc", &path).unwrap();
        }
    }

    #[test]
    fn missing_element_names_the_package() {
        let err = parse(
            "webrtcbin name=webrtc videotestsrc ! nosuchencoder ! fakesink",
            Path::new("x.pipeline"),
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("nosuchencoder") && text.contains("x.pipeline"),
            "{text}"
        );
    }

    #[test]
    fn syntax_error_names_file_and_line() {
        let err = parse(
            "webrtcbin name=webrtc\nvideotestsrc ! fakesink\nfakesrc ! ! ! \"broken",
            Path::new("y.pipeline"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("y.pipeline"), "{err}");
    }

    #[test]
    fn webrtcbin_must_be_named() {
        let path = Path::new("w.pipeline");
        let pipeline = parse("webrtcbin name=other fakesrc ! fakesink", path).unwrap();
        let err = find_webrtcbin(&pipeline, "webrtc", path)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("webrtc") && err.contains("w.pipeline"),
            "{err}"
        );
    }
}
