//! What a frame of audio sounds like: CELT band energies from a real FFT, the band shape,
//! the strongest peak's phase, and the frame's [`Role`].
//!
//! Each frame is analysed in a Hann window over its own samples and the ones before it
//! (at least [`WINDOW_S`] of audio, so that a pitch period of 60 Hz fits twice). Role
//! detection, in order:
//! - **silence**: the frame's own RMS level is below [`Thresholds::silence_db`];
//! - **attack**: its level rose by at least [`Thresholds::attack_db`] over the quietest of
//!   the two frames before it (onsets rise over two or three 11.6 ms frames);
//! - **voiced**: the window's normalized autocorrelation, corrected for the window's own
//!   (Boersma 1993), peaks at [`Thresholds::voicing`] or more for a lag between 60 and
//!   400 Hz;
//! - **unvoiced** otherwise.

use std::sync::Arc;

use realfft::num_complex::Complex;
use realfft::{ComplexToReal, RealFftPlanner, RealToComplex};
use spiral_engine::SampleRate;

use crate::address::Role;
use crate::node::Phase;
use crate::{pvq, BANDS};

/// CELT's band edges for 5 ms frames at 48 kHz, in units of 200 Hz; scaled by
/// sample rate / 48 kHz, they give the bands at any rate.
const EDGES_48K: [u16; BANDS + 1] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 14, 16, 20, 24, 28, 34, 40, 48, 60, 78, 100];

/// The shortest analysis window.
pub const WINDOW_S: f64 = 0.040;
/// Pitch range searched for voicing.
const PITCH_HZ: (f64, f64) = (60.0, 400.0);
/// Below every level speech reaches (-120 dB), so the logarithm stays finite.
const FLOOR: f32 = 1e-12;

/// The levels that separate roles.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Thresholds {
    /// Frame RMS, dB relative to a full-scale sine, below which a frame is silence.
    pub silence_db: f32,
    /// Rise in level, dB, that makes a frame an attack.
    pub attack_db: f32,
    /// Normalized autocorrelation from which a frame is voiced.
    pub voicing: f32,
}

impl Default for Thresholds {
    /// Calibrated on the joe voice (the `roles` test): its pauses sit below -55 dB, its
    /// quietest phonemes above -45 dB.
    fn default() -> Self {
        Thresholds { silence_db: -50.0, attack_db: 12.0, voicing: 0.45 }
    }
}

/// One frame's analysis.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Analysis {
    /// Energy per CELT band, dB relative to a full-scale sine.
    pub bands: [f32; BANDS],
    /// The frame's own RMS level, same reference.
    pub level_db: f32,
    /// Peak of the window-corrected normalized autocorrelation in the pitch range.
    pub periodicity: f32,
    pub peak: Phase,
    pub role: Role,
}

impl Analysis {
    /// The PVQ code of the band shape (energies less their mean).
    pub fn shape_code(&self) -> u64 {
        let mean = self.bands.iter().sum::<f32>() / BANDS as f32;
        pvq::rank(&pvq::quantize(&self.bands.map(|e| e - mean)))
    }
}

/// Analyses consecutive frames of one stream.
pub struct Analyzer {
    rate: SampleRate,
    thresholds: Thresholds,
    /// The last `window.len()` samples.
    history: Vec<f32>,
    window: Vec<f32>,
    /// The window's own normalized autocorrelation, for the voicing correction.
    window_acf: Vec<f32>,
    forward: Arc<dyn RealToComplex<f32>>,
    inverse: Arc<dyn ComplexToReal<f32>>,
    input: Vec<f32>,
    spectrum: Vec<Complex<f32>>,
    power: Vec<Complex<f32>>,
    acf: Vec<f32>,
    /// FFT bin where each band starts, and where the last ends.
    edges: [usize; BANDS + 1],
    /// Turns |X|² summed over a band into power relative to a full-scale sine.
    norm: f32,
    lags: (usize, usize),
    levels: [f32; 2],
}

impl Analyzer {
    /// For frames of `frame_len` samples at `rate`.
    pub fn new(rate: SampleRate, frame_len: usize) -> Analyzer {
        let hz = f64::from(rate.hz());
        let len = (2 * frame_len).max((WINDOW_S * hz).ceil() as usize);
        // Twice the window, so the autocorrelation computed through the FFT does not wrap.
        let size = (2 * len).next_power_of_two();
        let window: Vec<f32> = (0..len)
            .map(|n| (0.5 - 0.5 * (2.0 * std::f64::consts::PI * (n as f64 + 0.5) / len as f64).cos()) as f32)
            .collect();
        let mut planner = RealFftPlanner::new();
        let (forward, inverse) = (planner.plan_fft_forward(size), planner.plan_fft_inverse(size));
        let edges = EDGES_48K.map(|e| ((f64::from(e) * 200.0 * hz / 48_000.0) * size as f64 / hz).round() as usize);
        let energy: f32 = window.iter().map(|w| w * w).sum();
        let mut analyzer = Analyzer {
            rate,
            thresholds: Thresholds::default(),
            history: vec![0.0; len],
            window_acf: Vec::new(),
            forward,
            inverse,
            input: vec![0.0; size],
            spectrum: vec![Complex::default(); size / 2 + 1],
            power: vec![Complex::default(); size / 2 + 1],
            acf: vec![0.0; size],
            edges,
            norm: size as f32 * energy / 4.0,
            lags: ((hz / PITCH_HZ.1).floor() as usize, ((hz / PITCH_HZ.0).ceil() as usize).min(len - 1)),
            levels: [FLOOR.log10() * 10.0; 2],
            window,
        };
        analyzer.autocorrelation(&vec![1.0; len]);
        analyzer.window_acf = analyzer.acf[..len].to_vec();
        analyzer
    }

    pub fn with_thresholds(mut self, thresholds: Thresholds) -> Analyzer {
        self.thresholds = thresholds;
        self
    }

    pub fn sample_rate(&self) -> SampleRate {
        self.rate
    }

    /// Normalized autocorrelation of `x` through the window (power spectrum, inverse FFT),
    /// into `self.acf` (its first window-length lags); leaves the spectrum of the windowed
    /// `x` in `self.spectrum`.
    fn autocorrelation(&mut self, x: &[f32]) {
        self.input.fill(0.0);
        for ((i, x), w) in self.input.iter_mut().zip(x).zip(&self.window) {
            *i = x * w;
        }
        self.forward.process(&mut self.input, &mut self.spectrum).expect("buffer sizes match the plan");
        for (p, s) in self.power.iter_mut().zip(&self.spectrum) {
            *p = Complex::new(s.norm_sqr(), 0.0);
        }
        self.inverse.process(&mut self.power, &mut self.acf).expect("buffer sizes match the plan");
        let zero = self.acf[0].max(FLOOR);
        let len = self.window.len();
        self.acf[..len].iter_mut().for_each(|r| *r /= zero);
    }

    /// Analyses the next frame of the stream.
    pub fn analyze(&mut self, frame: &[f32]) -> Analysis {
        let len = self.history.len();
        let keep = len.saturating_sub(frame.len());
        self.history.copy_within(len - keep.., 0);
        self.history[keep..].copy_from_slice(&frame[frame.len().saturating_sub(len)..]);

        let history = std::mem::take(&mut self.history);
        self.autocorrelation(&history);
        self.history = history;
        let (lo, hi) = self.lags;
        let periodicity = (lo..=hi).map(|l| self.acf[l] / self.window_acf[l].max(0.1)).fold(0.0f32, f32::max).min(1.0);

        // Band energies and the strongest bin above DC, in one pass over the spectrum.
        let (mut bands, mut k, mut strongest) = ([0.0; BANDS], 0, 0.0f32);
        for (b, e) in bands.iter_mut().enumerate() {
            let from = self.edges[b];
            let mut power = 0.0;
            for (i, s) in self.spectrum[from..self.edges[b + 1].max(from + 1)].iter().enumerate() {
                let p = s.norm_sqr();
                power += p;
                if p > strongest && from + i > 0 {
                    (strongest, k) = (p, from + i);
                }
            }
            *e = 10.0 * (power / self.norm).max(FLOOR).log10();
        }
        let peak = self.spectrum[k];
        let size = self.input.len() as f64;
        let turns = (f64::from(peak.im).atan2(f64::from(peak.re)) / std::f64::consts::TAU).rem_euclid(1.0);
        let peak = Phase {
            hz: (k as f64 * f64::from(self.rate.hz()) / size).round().min(f64::from(u16::MAX)) as u16,
            angle: (turns * 65_536.0) as u16,
        };

        let mean_square = frame.iter().map(|x| x * x).sum::<f32>() / frame.len().max(1) as f32;
        let level_db = 10.0 * (2.0 * mean_square).max(FLOOR).log10();
        let t = self.thresholds;
        let role = if level_db < t.silence_db {
            Role::Silence
        } else if level_db - self.levels[0].min(self.levels[1]) >= t.attack_db {
            Role::Attack
        } else if periodicity >= t.voicing {
            Role::Voiced
        } else {
            Role::Unvoiced
        };
        self.levels = [self.levels[1], level_db];
        Analysis { bands, level_db, periodicity, peak, role }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RATE: SampleRate = SampleRate(22_050);
    const HOP: usize = 256;

    fn frames(signal: &[f32]) -> Vec<Analysis> {
        let mut a = Analyzer::new(RATE, HOP);
        signal.chunks_exact(HOP).map(|f| a.analyze(f)).collect()
    }

    fn sine(hz: f32, amplitude: f32, n: usize) -> Vec<f32> {
        (0..n).map(|i| amplitude * (std::f32::consts::TAU * hz * i as f32 / RATE.hz() as f32).sin()).collect()
    }

    #[test]
    fn a_full_scale_sine_is_0_db_in_its_band_and_its_peak() {
        let a = *frames(&sine(1000.0, 1.0, 40 * HOP)).last().unwrap();
        let band = (0..BANDS).max_by(|&x, &y| a.bands[x].total_cmp(&a.bands[y])).unwrap();
        // 1 kHz at 22.05 kHz: CELT's band 5 (1000-1200 Hz at 48 kHz) scaled by 0.46 is
        // 459-551 Hz; 1 kHz falls in band 9 (918-1102 Hz).
        assert_eq!(band, 9, "{:?}", a.bands);
        assert!(a.bands[9].abs() < 1.0, "{} dB", a.bands[9]);
        assert!(a.level_db.abs() < 0.1, "{} dB", a.level_db);
        assert!((i32::from(a.peak.hz) - 1000).abs() <= 11, "{} Hz", a.peak.hz);
        assert!(a.bands[0] < -40.0 && a.bands[20] < -40.0);
    }

    #[test]
    fn roles_of_silence_onset_pitch_and_noise() {
        let mut signal = vec![0.0; 10 * HOP];
        // A 120 Hz pulse train (glottal-like, periodic), then white noise (fricative-like).
        signal.extend((0..30 * HOP).map(|i| if i % 184 < 8 { 0.3 } else { -0.013 }));
        let mut seed = 1u32;
        signal.extend((0..30 * HOP).map(|_| {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (seed >> 8) as f32 / (1u32 << 24) as f32 * 0.2 - 0.1
        }));
        let roles: Vec<Role> = frames(&signal).iter().map(|a| a.role).collect();
        assert!(roles[..10].iter().all(|&r| r == Role::Silence), "{roles:?}");
        assert_eq!(roles[10], Role::Attack);
        assert!(roles[14..40].iter().all(|&r| r == Role::Voiced), "{:?}", &roles[14..40]);
        assert!(roles[44..].iter().all(|&r| r == Role::Unvoiced), "{:?}", &roles[44..]);
    }
}
