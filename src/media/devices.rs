//! The capture devices a description names (`v4l2src`, `alsasrc`, `pulsesrc`): what to call
//! them in errors, and a check, before a session connects, that each one is there.
//!
//! The check exists because a missing device otherwise shows up late and vaguely: `v4l2src`
//! and `alsasrc` fail a state change with a generic message, and `pulsesrc` goes to PLAYING
//! happily and only errors from its streaming thread once caps are negotiated ("Failed to
//! connect stream: No such entity"), by which time the session has connected to the server.

use std::fmt;
use std::path::Path;
use std::time::{Duration, Instant};

use gst::prelude::*;

use super::MediaError;

/// Ends the name of the throw-away copy of a capture element that [`probe`] plays.
pub const PROBE_SUFFIX: &str = "-probe";

/// How long PulseAudio may take to connect a probed microphone's stream. It takes
/// milliseconds; a box so loaded that it takes this long would not stream anyway.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Camera,
    Microphone,
}

/// A capture element of the pipeline, described the way a person fixing the box needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    pub kind: Kind,
    /// What the element's `device` property names; `None` is the element's default.
    pub id: Option<String>,
    pub factory: &'static str,
    pub element: String,
    /// `pulsesrc`'s `server`, when the description names one.
    pub server: Option<String>,
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            Kind::Camera => "camera",
            Kind::Microphone => "microphone",
        };
        match &self.id {
            Some(id) => write!(f, "{kind} `{id}`")?,
            None => write!(f, "default {kind}")?,
        }
        write!(f, " ({} `{}`", self.factory, self.element)?;
        if let Some(server) = &self.server {
            write!(f, ", server {server}")?;
        }
        write!(f, ")")
    }
}

impl Device {
    /// What to try on the box to see which devices exist.
    pub fn hint(&self) -> String {
        let look = match self.factory {
            "v4l2src" => "`ls /dev/video*`".to_owned(),
            "alsasrc" => "`arecord -L`".to_owned(),
            _ => match &self.server {
                Some(server) => format!("`pactl --server {server} list short sources`"),
                None => "`pactl list short sources`".to_owned(),
            },
        };
        format!("is it plugged in? ({look} lists what there is)")
    }
}

/// The device behind `element`, if it is a capture element this module knows.
pub fn describe(element: &gst::Element) -> Option<Device> {
    let factory = element.factory()?;
    let (kind, factory) = match factory.name().as_str() {
        "v4l2src" => (Kind::Camera, "v4l2src"),
        "alsasrc" => (Kind::Microphone, "alsasrc"),
        "pulsesrc" => (Kind::Microphone, "pulsesrc"),
        _ => return None,
    };
    let server = if factory == "pulsesrc" {
        element.property::<Option<String>>("server")
    } else {
        None
    };
    Some(Device {
        kind,
        id: element.property::<Option<String>>("device"),
        factory,
        element: element.name().to_string(),
        server,
    })
}

/// Checks every capture device the pipeline names. A camera must exist as a path; a
/// microphone must open on its own (see [`probe`]).
pub fn check(pipeline: &gst::Pipeline) -> Result<(), MediaError> {
    for element in pipeline.iterate_recurse().into_iter().flatten() {
        let Some(device) = describe(&element) else {
            continue;
        };
        let found = match device.factory {
            "v4l2src" => match &device.id {
                Some(path) if !Path::new(path).exists() => Err("no such file".to_owned()),
                _ => Ok(()),
            },
            _ => probe(&element),
        };
        if let Err(reason) = found {
            return Err(MediaError::MissingDevice {
                device: Box::new(device),
                reason,
            });
        }
    }
    Ok(())
}

/// Opens a copy of `source` (same device and server) on its own, into a fakesink. `alsasrc`
/// opens its device going to READY. `pulsesrc` connects its record stream only once it
/// streams, so it is played until PulseAudio has given the stream an index (a source output);
/// waiting for a first buffer instead would take up to 2 s on an idle null sink's monitor,
/// which delivers in 2 s chunks until a client asks for less latency.
fn probe(source: &gst::Element) -> Result<(), String> {
    let factory = source.factory().ok_or("no factory")?;
    // Named after the real one, so that GStreamer's own warnings about it say they come from
    // the probe (pulsesrc warns "error reading data" when stopped mid-read: the log treats that
    // one as routine, see `logging.rs`).
    let copy = factory
        .create()
        .name(format!("{}{PROBE_SUFFIX}", source.name()))
        .build()
        .map_err(|e| e.to_string())?;
    for name in ["device", "server"] {
        if copy.find_property(name).is_some() {
            copy.set_property_from_value(name, &source.property_value(name));
        }
    }
    copy.set_property("num-buffers", 1i32);
    let sink = gst::ElementFactory::make("fakesink")
        .property("sync", false)
        .build()
        .map_err(|e| e.to_string())?;
    let pipeline = gst::Pipeline::new();
    pipeline
        .add_many([&copy, &sink])
        .map_err(|e| e.to_string())?;
    copy.link(&sink).map_err(|e| e.to_string())?;
    let bus = pipeline.bus().ok_or("the probe pipeline has no bus")?;
    let is_pulse = copy.find_property("source-output-index").is_some();
    let target = if is_pulse {
        gst::State::Playing
    } else {
        gst::State::Ready
    };
    let outcome = match pipeline.set_state(target) {
        Err(e) => Err(first_error(&bus).unwrap_or_else(|| e.to_string())),
        Ok(_) if is_pulse => wait_connected(&copy, &bus),
        Ok(_) => Ok(()),
    };
    let _ = pipeline.set_state(gst::State::Null);
    outcome
}

/// Waits until `pulsesrc` has a source output, its first buffer, or an error.
fn wait_connected(pulsesrc: &gst::Element, bus: &gst::Bus) -> Result<(), String> {
    let deadline = Instant::now() + PROBE_TIMEOUT;
    loop {
        if let Some(msg) = bus.timed_pop_filtered(
            gst::ClockTime::from_mseconds(10),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        ) {
            return match msg.view() {
                gst::MessageView::Error(err) => Err(err.error().to_string()),
                _ => Ok(()),
            };
        }
        if pulsesrc.property::<u32>("source-output-index") != u32::MAX {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!("its stream did not start within {PROBE_TIMEOUT:?}"));
        }
    }
}

/// The error a failed state change has already posted.
fn first_error(bus: &gst::Bus) -> Option<String> {
    let msg = bus.pop_filtered(&[gst::MessageType::Error])?;
    match msg.view() {
        gst::MessageView::Error(err) => Some(err.error().to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::pipeline::parse;

    fn check_text(description: &str) -> String {
        let pipeline = parse(description, Path::new("z.pipeline")).unwrap();
        check(&pipeline).unwrap_err().to_string()
    }

    #[test]
    fn missing_camera_names_the_device() {
        let err = check_text("v4l2src device=/dev/video-airsync-missing ! fakesink");
        assert!(err.contains("camera `/dev/video-airsync-missing`"), "{err}");
        assert!(err.contains("ls /dev/video*"), "{err}");
    }

    #[test]
    fn missing_alsa_microphone_names_the_device() {
        let err = check_text("alsasrc device=hw:CARD=AirsyncMissing ! fakesink");
        assert!(err.contains("microphone `hw:CARD=AirsyncMissing`"), "{err}");
        assert!(err.contains("arecord -L"), "{err}");
    }

    #[test]
    fn unreachable_pulse_server_names_the_device_and_server() {
        let err = check_text(
            "pulsesrc server=unix:/nonexistent/airsync/native device=airsync_mic.monitor \
             ! fakesink",
        );
        assert!(err.contains("microphone `airsync_mic.monitor`"), "{err}");
        assert!(
            err.contains("pactl --server unix:/nonexistent/airsync/native"),
            "{err}"
        );
    }

    #[test]
    fn test_sources_are_not_devices() {
        let pipeline = parse(
            "audiotestsrc ! fakesink videotestsrc ! fakesink",
            Path::new("t.pipeline"),
        )
        .unwrap();
        check(&pipeline).unwrap();
    }
}
