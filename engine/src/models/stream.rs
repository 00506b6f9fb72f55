//! Streaming building blocks for convolutional decoders: a signal cut in time into
//! channels-first [`Block`]s, [`Queue`]s that hold a signal until what it must be combined
//! with catches up, and [`Stream`]s (a convolution, a chain of them) that turn blocks into
//! the continuation of their whole-signal output. Every stream computes each output value
//! with the same operations in the same order as the whole-signal model, so any cut of the
//! input gives the same output bit for bit.

use std::collections::VecDeque;

use crate::kernels::conv::{ChunkedConv, ConvError, StreamingConv1d, StreamingConvTranspose1d};
use crate::kernels::{rows, vector, Cpu};
use crate::models::nn::{Conv, ConvTranspose};

/// A channels-first stretch of signal, `[channels, len]`.
pub(crate) struct Block {
    pub data: Vec<f32>,
    pub channels: usize,
    pub len: usize,
}

impl Clone for Block {
    fn clone(&self) -> Block {
        Block::new(self.data.clone(), self.channels, self.len)
    }
}

impl Block {
    pub fn new(data: Vec<f32>, channels: usize, len: usize) -> Block {
        debug_assert_eq!(data.len(), channels * len);
        Block { data, channels, len }
    }
}

/// Stretches of one signal waiting to be used, consumed from the front without moving
/// what stays.
pub(crate) struct Queue {
    blocks: VecDeque<Block>,
    /// Time steps of the front block already consumed.
    offset: usize,
    len: usize,
    channels: usize,
}

impl Queue {
    pub fn new(channels: usize) -> Queue {
        Queue { blocks: VecDeque::new(), offset: 0, len: 0, channels }
    }

    /// Time steps waiting.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn push(&mut self, block: Block) {
        if block.len > 0 {
            self.len += block.len;
            self.blocks.push_back(block);
        }
    }

    /// Calls `f(destination offset, block, offset, n)` for each stretch of the first `m`
    /// time steps (`n` steps of `block` from `offset`), then drops them.
    fn consume(&mut self, m: usize, mut f: impl FnMut(usize, &Block, usize, usize)) {
        debug_assert!(m <= self.len);
        let mut done = 0;
        while done < m {
            let front = &self.blocks[0];
            let n = (front.len - self.offset).min(m - done);
            f(done, front, self.offset, n);
            done += n;
            self.offset += n;
            if self.offset == front.len {
                self.blocks.pop_front();
                self.offset = 0;
            }
        }
        self.len -= m;
    }

    /// Adds the first `y.len` time steps into `y`, after `y`'s own values.
    pub fn add_into(&mut self, cpu: Cpu, y: &mut Block) {
        self.consume(y.len, |at, x, offset, n| add_columns(cpu, y, at, x, offset, n));
    }

    /// As pushing `x` and then [`add_into`](Self::add_into) `y`, without copying the part
    /// of `x` that is used at once: only what `y` does not reach yet stays waiting.
    pub fn push_and_add_into(&mut self, cpu: Cpu, x: &Block, y: &mut Block) {
        let held = self.len.min(y.len);
        self.consume(held, |at, b, offset, n| add_columns(cpu, y, at, b, offset, n));
        let used = y.len - held;
        debug_assert!(used <= x.len, "a residual branch returns no more than it was given");
        add_columns(cpu, y, held, x, 0, used);
        if used < x.len {
            let rest = x.len - used;
            let data = x.data.chunks_exact(x.len).flat_map(|row| &row[used..]).copied().collect();
            self.push(Block::new(data, x.channels, rest));
        }
    }

    /// The first `m` time steps as one block.
    pub fn take(&mut self, m: usize) -> Block {
        let mut out = Block::new(vec![0.0; self.channels * m], self.channels, m);
        self.consume(m, |at, x, offset, n| {
            rows::for_each_row_mut(&mut out.data, m, |c, row| {
                row[at..at + n].copy_from_slice(&x.data[c * x.len + offset..][..n]);
            });
        });
        out
    }
}

/// `y[.., at..at + n] += x[.., offset..offset + n]` (as `axpy` by 1, whose fused
/// multiply-add rounds 1·x + y once, like the sum).
fn add_columns(cpu: Cpu, y: &mut Block, at: usize, x: &Block, offset: usize, n: usize) {
    if n > 0 {
        rows::for_each_row_mut(&mut y.data, y.len, |c, row| {
            vector::axpy(cpu, 1.0, &x.data[c * x.len + offset..][..n], &mut row[at..at + n]);
        });
    }
}

/// One piece of the decoder run incrementally: what a push returns is the continuation
/// of the whole-signal output so far. The push that says `end` brings the last input and
/// returns everything left; no push follows it.
pub(crate) trait Stream {
    fn push(&mut self, cpu: Cpu, x: &Block, end: bool) -> Result<Block, ConvError>;
}

impl<S: Stream + ?Sized> Stream for Box<S> {
    fn push(&mut self, cpu: Cpu, x: &Block, end: bool) -> Result<Block, ConvError> {
        (**self).push(cpu, x, end)
    }
}

/// Streams in series (at the end, each piece's remaining output is the next one's last input);
/// no pieces pass the signal through.
pub(crate) struct Chain<S>(pub Vec<S>);

impl<S: Stream> Stream for Chain<S> {
    fn push(&mut self, cpu: Cpu, x: &Block, end: bool) -> Result<Block, ConvError> {
        let Some((first, rest)) = self.0.split_first_mut() else { return Ok(x.clone()) };
        rest.iter_mut().try_fold(first.push(cpu, x, end)?, |x, s| s.push(cpu, &x, end))
    }
}

/// A streaming convolution (plain or transposed), whose input may enter through a leaky ReLU.
pub(crate) struct ConvStream<S>(S);

impl<'g> ConvStream<StreamingConv1d<'g, f32>> {
    pub fn new(conv: &'g Conv, slope: Option<f32>) -> Self {
        let stream = StreamingConv1d::new(conv.kernel(), conv.pad());
        ConvStream(match slope {
            Some(slope) => stream.leaky_relu(slope),
            None => stream,
        })
    }
}

impl<'g> ConvStream<StreamingConvTranspose1d<'g>> {
    pub fn up(up: &'g ConvTranspose, slope: f32) -> Self {
        ConvStream(StreamingConvTranspose1d::new(up.kernel(), (up.crop(), up.crop())).leaky_relu(slope))
    }
}

impl<S: ChunkedConv> Stream for ConvStream<S> {
    fn push(&mut self, cpu: Cpu, x: &Block, end: bool) -> Result<Block, ConvError> {
        let mut data = Vec::new();
        let len = if end {
            self.0.finish(cpu, &x.data, x.len, &mut data)?
        } else {
            self.0.process(cpu, &x.data, x.len, &mut data)?
        };
        Ok(Block::new(data, self.0.out_channels(), len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(channels: usize, len: usize, seed: f32) -> Block {
        Block::new((0..channels * len).map(|i| seed + i as f32).collect(), channels, len)
    }

    /// Against pushing a copy and adding from the queue, over pushes that leave the queue
    /// longer and shorter than the output.
    #[test]
    fn push_and_add_into_is_push_then_add_into() {
        let (mut direct, mut copied) = (Queue::new(2), Queue::new(2));
        for (i, (given, returned)) in [(5, 2), (3, 6), (4, 0), (1, 4), (2, 3)].into_iter().enumerate() {
            let x = block(2, given, 100.0 * i as f32);
            let y = block(2, returned, -7.0 * i as f32);
            let (mut a, mut b) = (y.clone(), y);
            direct.push_and_add_into(Cpu::best(), &x, &mut a);
            copied.push(x.clone());
            copied.add_into(Cpu::best(), &mut b);
            assert_eq!(a.data, b.data, "push {i}");
            assert_eq!(direct.len(), copied.len(), "push {i}");
        }
        let (rest_a, rest_b) = (direct.take(direct.len()), copied.take(copied.len()));
        assert_eq!(rest_a.data, rest_b.data);
    }
}
