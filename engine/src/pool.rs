//! Running a burst of parallel kernels with the thread pool kept awake.
//!
//! A model step is hundreds of parallel kernels of tens to hundreds of microseconds each,
//! with short serial stretches between them. Rayon's idle workers spin for a few dozen
//! rounds and then sleep, so a gap longer than that puts the other worker to sleep and the
//! next kernel waits for the kernel to wake it: a 3.8 s sentence of the default voice took
//! about 280 context switches per run. [`busy`] keeps the other workers looking for work for
//! as long as its closure runs, as onnxruntime's spinning pool and OpenMP's active wait do.
//! They still run every job they find; between jobs they spin instead of sleeping.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// A worker that has found nothing to do for this long goes back to rayon's idling. The
/// default voice's serial stretches within a step are shorter; and a worker that took the
/// spinning job while it was itself inside other work (another thread's burst, run by the
/// same pool) returns to that work after at most this long, instead of spinning until the
/// burst it serves ends.
const MAX_IDLE: Duration = Duration::from_millis(1);
/// Idle rounds between two looks at the clock.
const CLOCK_ROUNDS: u32 = 64;

/// Runs `f` on a thread of the current rayon pool while every other worker of the pool
/// looks for work without sleeping; they go back to rayon's own idling when `f` returns.
///
/// Use it around a burst of parallel work (one step of a model), not around waiting: the
/// other cores stay busy for as long as `f` runs.
///
/// ```
/// use rayon::prelude::*;
///
/// let sum: u64 = spiral_engine::pool::busy(|| (0..1000u64).into_par_iter().sum());
/// assert_eq!(sum, 499_500);
/// ```
pub fn busy<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    let done = AtomicBool::new(false);
    rayon::scope(|scope| {
        let producer = rayon::current_thread_index();
        for _ in 1..rayon::current_num_threads() {
            let done = &done;
            scope.spawn(move |_| {
                // On `f`'s own thread (it took this job while waiting inside `f`), spinning
                // here would never return to `f`, which alone ends the spinning.
                if rayon::current_thread_index() == producer {
                    return;
                }
                let (mut idle_since, mut idle_rounds) = (None, 0u32);
                while !done.load(Ordering::Acquire) {
                    if rayon::yield_now() == Some(rayon::Yield::Executed) {
                        (idle_since, idle_rounds) = (None, 0);
                        continue;
                    }
                    // The clock only now and then: read on every idle round it was 2 % of
                    // the voice's samples.
                    idle_rounds += 1;
                    if idle_rounds % CLOCK_ROUNDS == 0
                        && idle_since.get_or_insert_with(Instant::now).elapsed() > MAX_IDLE
                    {
                        return;
                    }
                    std::hint::spin_loop();
                }
            });
        }
        let out = f();
        done.store(true, Ordering::Release);
        out
    })
}

#[cfg(test)]
mod tests {
    use rayon::prelude::*;

    /// Nested parallel work inside `busy` completes (no worker is left spinning over a job
    /// its producer waits for), on pools of one, two and four threads.
    #[test]
    fn nested_parallel_work_completes_on_any_pool() {
        for threads in [1, 2, 4] {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            let total: u64 = pool.install(|| {
                (0..50u64)
                    .map(|round| {
                        super::busy(|| {
                            let (a, b) = rayon::join(
                                || (0..10_000u64).into_par_iter().map(|v| v * round).sum::<u64>(),
                                || (0..1000u64).into_par_iter().sum::<u64>(),
                            );
                            a + b
                        })
                    })
                    .sum()
            });
            let expected: u64 = (0..50u64).map(|round| 49_995_000 * round + 499_500).sum();
            assert_eq!(total, expected, "{threads} threads");
        }
    }

    /// Two threads' bursts on one pool of two: each completes although either's spinning
    /// job may be taken by the other's producer while it waits.
    #[test]
    fn concurrent_bursts_on_one_pool_complete() {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
        let run = |seed: u64| {
            (0..100u64)
                .map(|round| {
                    pool.install(|| {
                        super::busy(|| (0..20_000u64).into_par_iter().map(|v| v ^ (seed + round)).sum::<u64>())
                    })
                })
                .sum::<u64>()
        };
        let expected = |seed: u64| -> u64 {
            (0..100u64).map(|round| (0..20_000u64).map(|v| v ^ (seed + round)).sum::<u64>()).sum()
        };
        std::thread::scope(|s| {
            let a = s.spawn(|| run(1));
            let b = s.spawn(|| run(7));
            assert_eq!(a.join().unwrap(), expected(1));
            assert_eq!(b.join().unwrap(), expected(7));
        });
    }
}
