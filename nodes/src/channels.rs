//! Channel up- and down-mixing from a source's layout to the device's.

/// How interleaved source channels map onto the device's channels.
///
/// - same count: copied;
/// - mono source: the one channel goes to every device channel;
/// - mono device: the average of the source channels;
/// - otherwise: the first `min(src, dst)` channels are copied in order and any extra device
///   channels are silent (a stereo voice on a 5.1 device plays on front left/right).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChannelMap {
    from: usize,
    to: usize,
}

impl ChannelMap {
    /// A map from `from` to `to` channels (both at least 1).
    pub fn new(from: u16, to: u16) -> Self {
        Self { from: usize::from(from.max(1)), to: usize::from(to.max(1)) }
    }

    /// Appends `input` (interleaved, `from` channels) to `out` as `to` channels.
    ///
    /// ```
    /// use spiral_nodes::ChannelMap;
    /// let mut out = Vec::new();
    /// ChannelMap::new(1, 2).apply(&[0.1, 0.2], &mut out);
    /// assert_eq!(out, [0.1, 0.1, 0.2, 0.2]);
    /// ```
    pub fn apply(&self, input: &[f32], out: &mut Vec<f32>) {
        let frames = input.len() / self.from;
        out.reserve(frames * self.to);
        let shared = self.from.min(self.to);
        for frame in input.chunks_exact(self.from) {
            if self.from == self.to {
                out.extend_from_slice(frame);
            } else if self.from == 1 {
                out.extend(std::iter::repeat_n(frame[0], self.to));
            } else if self.to == 1 {
                out.push(frame.iter().sum::<f32>() / self.from as f32);
            } else {
                out.extend_from_slice(&frame[..shared]);
                out.extend(std::iter::repeat_n(0.0, self.to - shared));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(from: u16, to: u16, input: &[f32]) -> Vec<f32> {
        let mut out = Vec::new();
        ChannelMap::new(from, to).apply(input, &mut out);
        out
    }

    #[test]
    fn layouts() {
        assert_eq!(map(2, 2, &[1.0, 2.0]), [1.0, 2.0]);
        assert_eq!(map(1, 3, &[0.5]), [0.5, 0.5, 0.5]);
        assert_eq!(map(2, 1, &[1.0, 0.0, 0.5, 0.5]), [0.5, 0.5]);
        assert_eq!(map(2, 4, &[1.0, 2.0]), [1.0, 2.0, 0.0, 0.0]);
        assert_eq!(map(3, 2, &[1.0, 2.0, 3.0]), [1.0, 2.0]);
    }

    #[test]
    fn partial_sample_frame_is_ignored() {
        assert_eq!(map(2, 2, &[1.0, 2.0, 3.0]), [1.0, 2.0]);
        assert!(map(2, 2, &[]).is_empty());
    }
}
