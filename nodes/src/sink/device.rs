//! The host's audio devices through cpal (ALSA on Linux, which reaches PulseAudio and
//! PipeWire through their ALSA plugins).

use std::sync::Arc;

use cpal::traits::{DeviceTrait, HostTrait, StreamTrait};
use cpal::{BufferSize, FromSample, OutputCallbackInfo, SampleFormat, SizedSample, StreamConfig};
use crossbeam_channel::Sender;
use spiral_engine::SampleRate;

use super::{OutputFormat, SinkError};
use crate::render::RendererSlot;

/// One output device as `spiral devices` lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceInfo {
    /// Human-readable name.
    pub name: String,
    /// Stable id, usable with `--device`.
    pub id: String,
    /// The host's default output.
    pub is_default: bool,
    /// Default configuration, e.g. "48000 Hz, 2 ch, f32".
    pub default_config: Option<String>,
}

/// Lists the output devices of the default host.
pub fn list_outputs() -> Result<Vec<DeviceInfo>, SinkError> {
    let host = cpal::default_host();
    let default_id = host.default_output_device().and_then(|d| d.id().ok()).map(|id| id.to_string());
    let devices = host.output_devices().map_err(|e| host_error(&host, e))?;
    Ok(devices
        .map(|d| {
            let id = d.id().map(|i| i.to_string()).unwrap_or_default();
            DeviceInfo {
                name: d.to_string(),
                is_default: default_id.as_deref() == Some(id.as_str()),
                default_config: d
                    .default_output_config()
                    .ok()
                    .map(|c| format!("{} Hz, {} ch, {}", c.sample_rate(), c.channels(), c.sample_format())),
                id,
            }
        })
        .collect())
}

fn host_error(host: &cpal::Host, e: impl std::fmt::Display) -> SinkError {
    SinkError::Device { device: format!("{:?} host", host.id()), reason: e.to_string() }
}

/// A device chosen and its format read, before any stream exists: the renderer is built for
/// this format, then [`OpenDevice::start`] runs it.
pub struct OpenDevice {
    device: cpal::Device,
    config: StreamConfig,
    sample_format: SampleFormat,
    /// Human-readable device name.
    pub name: String,
}

impl OpenDevice {
    /// The default output, or the one whose name or id equals `wanted`. `buffer_frames`
    /// asks for a fixed period; `None` keeps the host's default.
    pub fn open(wanted: Option<&str>, buffer_frames: Option<u32>) -> Result<Self, SinkError> {
        let host = cpal::default_host();
        let device = match wanted {
            None => host.default_output_device().ok_or_else(|| SinkError::Device {
                device: "default".into(),
                reason: "the host has no default output device (is an audio server running? \
                         scripts/setup.sh starts one)"
                    .into(),
            })?,
            Some(w) => host
                .output_devices()
                .map_err(|e| host_error(&host, e))?
                .find(|d| d.to_string() == w || d.id().is_ok_and(|id| id.to_string() == w))
                .ok_or_else(|| SinkError::Device {
                    device: w.into(),
                    reason: "no output device has this name or id; `spiral devices` lists them".into(),
                })?,
        };
        let name = device.to_string();
        let default = device
            .default_output_config()
            .map_err(|e| SinkError::Device { device: name.clone(), reason: e.to_string() })?;
        let buffer_size = buffer_frames.map_or(BufferSize::Default, BufferSize::Fixed);
        let config = StreamConfig { channels: default.channels(), sample_rate: default.sample_rate(), buffer_size };
        Ok(Self { device, sample_format: default.sample_format(), config, name })
    }

    /// The format the device will be driven at.
    pub fn format(&self) -> OutputFormat {
        OutputFormat { sample_rate: SampleRate(self.config.sample_rate), channels: self.config.channels }
    }

    /// Starts the stream; stream errors (a device that vanishes) arrive on `errors`.
    pub fn start(self, slot: Arc<RendererSlot>, errors: Sender<cpal::Error>) -> Result<cpal::Stream, SinkError> {
        let err = |e: cpal::Error| SinkError::Device { device: self.name.clone(), reason: e.to_string() };
        let stream = match self.sample_format {
            SampleFormat::F32 => self.build::<f32>(slot, errors),
            SampleFormat::F64 => self.build::<f64>(slot, errors),
            SampleFormat::I16 => self.build::<i16>(slot, errors),
            SampleFormat::I32 => self.build::<i32>(slot, errors),
            SampleFormat::U16 => self.build::<u16>(slot, errors),
            SampleFormat::U8 => self.build::<u8>(slot, errors),
            SampleFormat::I8 => self.build::<i8>(slot, errors),
            other => {
                return Err(SinkError::Device {
                    device: self.name.clone(),
                    reason: format!("sample format {other} is not supported"),
                })
            }
        }
        .map_err(err)?;
        stream.play().map_err(err)?;
        Ok(stream)
    }

    fn build<T: SizedSample + FromSample<f32>>(
        &self,
        slot: Arc<RendererSlot>,
        errors: Sender<cpal::Error>,
    ) -> Result<cpal::Stream, cpal::Error> {
        // Rendered in f32 then converted; sized for the largest period any host uses, so the
        // callback never grows it.
        let mut scratch = vec![0.0f32; 16_384 * slot.channels()];
        self.device.build_output_stream(
            self.config,
            move |data: &mut [T], info: &OutputCallbackInfo| {
                assert_no_alloc::assert_no_alloc(|| {
                    let ts = info.timestamp();
                    let delay = ts.playback.checked_duration_since(ts.callback);
                    for chunk in data.chunks_mut(scratch.len()) {
                        let rendered = &mut scratch[..chunk.len()];
                        slot.render(rendered, delay);
                        for (d, &s) in chunk.iter_mut().zip(rendered.iter()) {
                            *d = T::from_sample(s);
                        }
                    }
                })
            },
            move |e| {
                // Unbounded: an error report must never be lost, and this is not the data path.
                let _ = errors.send(e);
            },
            None,
        )
    }
}
