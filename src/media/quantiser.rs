//! How hard the video encoder squeezes the picture: the quantiser (QP) of each H.264 frame it
//! puts out, read from the frame's first slice header, averaged.
//!
//! Congestion control (`congestion.rs`) steps the picture down when the estimate is low, but
//! the estimate alone cannot tell a picture that needs the bits from one that does not: a
//! still or simple scene encodes at full size in a fraction of its budget, and the estimate of
//! such an application-limited sender sinks to what it sends (rtpgccbwe cuts to 0.85x the
//! received rate on each over-use). The quantiser tells: a simple scene keeps a low one at any
//! budget, a squeezed picture a high one. Browsers decide their picture size from it the same
//! way (libwebrtc's quality scaler).

use std::sync::{Arc, Mutex};

use gst::prelude::*;
use h264_reader::annexb::AnnexBReader;
use h264_reader::avcc::AvcDecoderConfigurationRecord;
use h264_reader::nal::pps::PicParameterSet;
use h264_reader::nal::slice::SliceHeader;
use h264_reader::nal::sps::SeqParameterSet;
use h264_reader::nal::{Nal, RefNal, UnitType};
use h264_reader::push::NalInterest;
use h264_reader::Context;
use tracing::debug;

/// Weight of each new frame in the average: about the last 20 frames (0.7 s at 30 fps).
const FRAME_WEIGHT: f64 = 0.05;

/// How the encoder frames its NAL units, from its caps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// `stream-format=avc`: each NAL unit after a big-endian length of this many bytes;
    /// parameter sets in the caps' `codec_data`.
    Avc { length_size: usize },
    /// `stream-format=byte-stream`: start codes, parameter sets in the stream.
    AnnexB,
}

/// Reads the QP of each frame of one H.264 stream.
struct QpReader {
    framing: Framing,
    params: Context,
}

impl QpReader {
    /// A reader for a stream of these caps, or `None` when they are not H.264 (or carry an
    /// `avcC` record that does not parse).
    fn for_caps(caps: &gst::CapsRef) -> Option<QpReader> {
        let s = caps.structure(0)?;
        if s.name() != "video/x-h264" {
            return None;
        }
        if s.get::<&str>("stream-format").ok() == Some("byte-stream") {
            return Some(QpReader {
                framing: Framing::AnnexB,
                params: Context::new(),
            });
        }
        let codec_data = s.get::<gst::Buffer>("codec_data").ok()?;
        let map = codec_data.map_readable().ok()?;
        let record = AvcDecoderConfigurationRecord::try_from(map.as_slice()).ok()?;
        Some(QpReader {
            framing: Framing::Avc {
                length_size: usize::from(record.length_size_minus_one()) + 1,
            },
            params: record.create_context().ok()?,
        })
    }

    /// The QP of the frame in `data` (one access unit), from its first slice; parameter sets
    /// in it are kept for the frames after.
    fn frame_qp(&mut self, data: &[u8]) -> Option<i32> {
        let mut qp = None;
        match self.framing {
            Framing::Avc { length_size } => {
                let mut rest = data;
                while rest.len() > length_size && qp.is_none() {
                    let (len, tail) = rest.split_at(length_size);
                    let len = len.iter().fold(0usize, |n, b| n << 8 | usize::from(*b));
                    if len == 0 || len > tail.len() {
                        break;
                    }
                    let (nal, tail) = tail.split_at(len);
                    qp = on_nal(&mut self.params, nal);
                    rest = tail;
                }
            }
            Framing::AnnexB => {
                let params = &mut self.params;
                let mut reader = AnnexBReader::accumulate(|nal: RefNal| {
                    if qp.is_some() {
                        return NalInterest::Ignore;
                    }
                    // A slice's header is at its start: read it from the first bytes rather
                    // than have the reader copy the whole slice. Parameter sets are read whole.
                    let slice = nal.header().is_ok_and(|h| is_slice(h.nal_unit_type()));
                    if nal.is_complete() || slice {
                        qp = on_ref_nal(params, &nal);
                        if qp.is_some() || nal.is_complete() {
                            return NalInterest::Ignore;
                        }
                    }
                    NalInterest::Buffer
                });
                reader.push(data);
                reader.reset();
            }
        }
        qp
    }
}

fn on_nal(params: &mut Context, nal: &[u8]) -> Option<i32> {
    if nal.is_empty() {
        return None;
    }
    on_ref_nal(params, &RefNal::new(nal, &[], true))
}

/// Keeps a parameter set; returns the QP of a slice.
fn on_ref_nal(params: &mut Context, nal: &RefNal) -> Option<i32> {
    let header = nal.header().ok()?;
    match header.nal_unit_type() {
        UnitType::SeqParameterSet => {
            if let Ok(sps) = SeqParameterSet::from_bits(nal.rbsp_bits()) {
                params.put_seq_param_set(sps);
            }
            None
        }
        UnitType::PicParameterSet => {
            if let Ok(pps) = PicParameterSet::from_bits(params, nal.rbsp_bits()) {
                params.put_pic_param_set(pps);
            }
            None
        }
        unit if is_slice(unit) => {
            let (slice, _, pps) =
                SliceHeader::from_bits(params, &mut nal.rbsp_bits(), header, None).ok()?;
            Some(26 + pps.pic_init_qp_minus26 + slice.slice_qp_delta)
        }
        _ => None,
    }
}

fn is_slice(unit: UnitType) -> bool {
    matches!(
        unit,
        UnitType::SliceLayerWithoutPartitioningIdr | UnitType::SliceLayerWithoutPartitioningNonIdr
    )
}

/// The average QP of the frames out of the encoder, shared between the encoder's streaming
/// thread (which adds each frame) and the session (which reads it on each estimate).
#[derive(Clone, Default)]
pub struct EncoderQp(Arc<Mutex<QpState>>);

#[derive(Default)]
struct QpState {
    reader: Option<QpReader>,
    average: Option<f64>,
}

impl EncoderQp {
    /// Follows the frames leaving `encoder`. Without a source pad nothing is read and the
    /// average stays unknown.
    pub fn watch(encoder: &gst::Element) -> EncoderQp {
        let qp = EncoderQp::default();
        let Some(pad) = encoder.static_pad("src") else {
            return qp;
        };
        let state = qp.0.clone();
        pad.add_probe(
            gst::PadProbeType::BUFFER | gst::PadProbeType::EVENT_DOWNSTREAM,
            move |_pad, info| {
                let mut state = state.lock().unwrap_or_else(|e| e.into_inner());
                match &info.data {
                    Some(gst::PadProbeData::Event(event)) => {
                        if let gst::EventView::Caps(c) = event.view() {
                            // A new picture size starts a new average.
                            state.reader = QpReader::for_caps(c.caps());
                            state.average = None;
                            if state.reader.is_none() {
                                debug!(caps = %c.caps(), "not H.264 in avc or byte-stream form: no quantiser read");
                            }
                        }
                    }
                    Some(gst::PadProbeData::Buffer(buffer)) => {
                        if let Some(frame_qp) = state.reader.as_mut().and_then(|reader| {
                            let map = buffer.map_readable().ok()?;
                            reader.frame_qp(map.as_slice())
                        }) {
                            state.add(frame_qp);
                        }
                    }
                    _ => {}
                }
                gst::PadProbeReturn::Ok
            },
        );
        qp
    }

    /// The average QP of the latest frames (0 to 51), or `None` before the first frame of the
    /// current picture size, or when the encoder's output is not H.264.
    pub fn average(&self) -> Option<f64> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).average
    }

    #[cfg(test)]
    fn add(&self, frame_qp: i32) {
        self.0.lock().unwrap().add(frame_qp);
    }
}

impl QpState {
    fn add(&mut self, frame_qp: i32) {
        let qp = f64::from(frame_qp);
        self.average = Some(match self.average {
            None => qp,
            Some(avg) => avg + (qp - avg) * FRAME_WEIGHT,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Encodes `frames` of `pattern` at `kbps` with x264enc as the shipped descriptions set
    /// it, in the given stream format, and returns the average QP the probe read.
    fn encode(pattern: &str, kbps: u32, stream_format: &str) -> Option<f64> {
        crate::media::init().unwrap();
        let description = format!(
            "videotestsrc num-buffers=90 pattern={pattern} \
             ! video/x-raw,format=I420,width=640,height=480,framerate=30/1 \
             ! x264enc name=venc tune=zerolatency speed-preset=ultrafast bframes=0 \
               key-int-max=60 bitrate={kbps} vbv-buf-capacity=250 \
             ! video/x-h264,profile=constrained-baseline,stream-format={stream_format} \
             ! fakesink"
        );
        let pipeline = gst::parse::launch(&description)
            .unwrap()
            .downcast::<gst::Pipeline>()
            .unwrap();
        let qp = EncoderQp::watch(&pipeline.by_name("venc").unwrap());
        pipeline.set_state(gst::State::Playing).unwrap();
        let bus = pipeline.bus().unwrap();
        let msg = bus
            .timed_pop_filtered(
                gst::ClockTime::from_seconds(60),
                &[gst::MessageType::Eos, gst::MessageType::Error],
            )
            .expect("the encoding finishes");
        assert!(
            matches!(msg.view(), gst::MessageView::Eos(_)),
            "encoding failed: {msg:?}"
        );
        pipeline.set_state(gst::State::Null).unwrap();
        qp.average()
    }

    #[test]
    fn reads_a_low_quantiser_for_a_simple_picture_and_a_high_one_for_noise() {
        // x264's own statistics for these, 150 frames: ball ~2.5 at 300 kbit/s, snow ~50.
        for format in ["avc", "byte-stream"] {
            let ball = encode("ball", 300, format).expect("a QP for the ball");
            let snow = encode("snow", 300, format).expect("a QP for the noise");
            println!("{format}: ball at QP {ball:.1}, snow at QP {snow:.1}");
            assert!(ball < 20.0, "{format}: ball at QP {ball}");
            assert!(snow > 40.0, "{format}: snow at QP {snow}");
        }
    }

    #[test]
    fn no_quantiser_for_other_codecs() {
        crate::media::init().unwrap();
        let caps = gst::Caps::builder("video/x-vp8").build();
        assert!(QpReader::for_caps(&caps).is_none());
        let avc_without_record = gst::Caps::builder("video/x-h264")
            .field("stream-format", "avc")
            .build();
        assert!(QpReader::for_caps(&avc_without_record).is_none());
    }

    #[test]
    fn the_average_follows_the_latest_frames() {
        let qp = EncoderQp::default();
        assert_eq!(qp.average(), None);
        qp.add(40);
        assert_eq!(qp.average(), Some(40.0));
        for _ in 0..60 {
            qp.add(10);
        }
        let avg = qp.average().unwrap();
        assert!(avg < 12.0, "{avg}");
    }
}
