//! The chunks of a parallel job, dealt to its threads as contiguous ranges: each thread works
//! through its own range, then through its neighbour's from the end that meets its own, then
//! through any.
//!
//! A thread that starts late or shares its core then does less, and neighbouring chunks still
//! go to one thread where they can: a GEMM's chunks are columns of C whose edges share cache
//! lines, and handing the chunks out in turn (one counter) cost 256³ 3 % on two threads
//! against equal halves, for the writes of both threads to the lines at every edge.

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};

/// The most threads one job deals to.
pub const MAX_THREADS: usize = 64;

/// The part of `0..items` that share `t` of `parts` gets: contiguous and as equal as can be.
pub fn share(items: usize, parts: usize, t: usize) -> Range<usize> {
    (items * t / parts)..(items * (t + 1) / parts)
}

/// Chunks `0..chunks` dealt out to `threads` threads.
pub struct Deal {
    /// Thread t's range of chunks not yet taken: the first in the high half, the end in the
    /// low half, so one compare-and-swap takes a chunk from either end.
    ranges: [AtomicU64; MAX_THREADS],
    threads: usize,
}

impl Deal {
    /// Panics if `threads` is 0 or above [`MAX_THREADS`], or `chunks` does not fit 32 bits.
    pub fn new(chunks: usize, threads: usize) -> Self {
        assert!((1..=MAX_THREADS).contains(&threads), "deal: {threads} threads, at most {MAX_THREADS}");
        assert!(u32::try_from(chunks).is_ok(), "deal: {chunks} chunks do not fit 32 bits");
        let ranges = std::array::from_fn(|t| {
            let r = if t < threads { share(chunks, threads, t) } else { 0..0 };
            AtomicU64::new(((r.start as u64) << 32) | r.end as u64)
        });
        Self { ranges, threads }
    }

    /// The next chunk for thread `id`, or `None` when every chunk is taken. Even threads walk
    /// their range forward and odd ones backward, so a pair of neighbours (threads 0 and 1,
    /// 2 and 3, ...) works towards each other and meets where their speeds put them.
    pub fn next(&self, id: usize) -> Option<usize> {
        let forward = id.is_multiple_of(2);
        let neighbour = if forward { id + 1 } else { id - 1 };
        self.take(id, forward)
            .or_else(|| (neighbour < self.threads).then(|| self.take(neighbour, forward)).flatten())
            .or_else(|| (0..self.threads).find_map(|t| self.take(t, true)))
    }

    /// Takes the first (`front`) or last chunk of thread t's range.
    fn take(&self, t: usize, front: bool) -> Option<usize> {
        let range = &self.ranges[t];
        let mut now = range.load(Ordering::Relaxed);
        loop {
            let (first, end) = (now >> 32, now & u64::from(u32::MAX));
            if first >= end {
                return None;
            }
            let (rest, chunk) =
                if front { (((first + 1) << 32) | end, first) } else { ((first << 32) | (end - 1), end - 1) };
            // Relaxed: a chunk only needs one owner; what it computes is read after the job.
            match range.compare_exchange_weak(now, rest, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return Some(chunk as usize),
                Err(actual) => now = actual,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_thread_takes_every_chunk_in_order() {
        let deal = Deal::new(5, 1);
        assert_eq!(std::iter::from_fn(|| deal.next(0)).collect::<Vec<_>>(), [0, 1, 2, 3, 4]);
    }

    #[test]
    fn two_threads_walk_towards_each_other_and_then_into_the_other_range() {
        let deal = Deal::new(8, 2);
        assert_eq!((deal.next(0), deal.next(1)), (Some(0), Some(7)));
        // Thread 1 is late: thread 0 goes on past its own range into thread 1's.
        let ahead: Vec<_> = (0..5).map_while(|_| deal.next(0)).collect();
        assert_eq!(ahead, [1, 2, 3, 4, 5]);
        assert_eq!((deal.next(1), deal.next(1), deal.next(0)), (Some(6), None, None));
    }

    #[test]
    fn a_thread_with_no_range_left_takes_from_any() {
        let deal = Deal::new(9, 3);
        // Thread 2 has no right-hand neighbour: once its range is gone it takes from the first.
        assert_eq!(std::iter::from_fn(|| deal.next(2)).take(4).collect::<Vec<_>>(), [6, 7, 8, 0]);
    }

    #[test]
    fn many_threads_take_every_chunk_exactly_once() {
        for (chunks, threads) in [(0, 1), (1, 4), (7, 3), (64, 8), (1000, MAX_THREADS)] {
            let deal = &Deal::new(chunks, threads);
            let taken: Vec<Vec<usize>> = std::thread::scope(|s| {
                let handles: Vec<_> =
                    (0..threads).map(|id| s.spawn(move || std::iter::from_fn(|| deal.next(id)).collect())).collect();
                handles.into_iter().map(|h| h.join().unwrap()).collect()
            });
            let mut all: Vec<usize> = taken.concat();
            all.sort_unstable();
            assert_eq!(all, (0..chunks).collect::<Vec<_>>(), "{chunks} chunks on {threads} threads");
        }
    }

    #[test]
    #[should_panic(expected = "at most 64")]
    fn too_many_threads_is_refused() {
        Deal::new(10, MAX_THREADS + 1);
    }
}
