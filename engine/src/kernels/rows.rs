//! Row-wise passes over channels-first signals (copies, adds, interleaves): on the thread
//! pool when there is enough to share, so the memory passes between parallel kernels do not
//! leave the other cores idle.

use rayon::prelude::*;

/// Values from which a pass is shared out: below it, a fork costs more than it saves.
const PARALLEL_VALUES: usize = 1 << 15;

/// Calls `f(row index, row)` for each `row_len`-long row of `data`.
pub fn for_each_row_mut<T: Send>(data: &mut [T], row_len: usize, f: impl Fn(usize, &mut [T]) + Sync + Send) {
    if row_len == 0 {
        return;
    }
    if data.len() >= PARALLEL_VALUES && rayon::current_num_threads() > 1 {
        data.par_chunks_mut(row_len).enumerate().for_each(|(r, row)| f(r, row));
    } else {
        data.chunks_mut(row_len).enumerate().for_each(|(r, row)| f(r, row));
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_row_is_visited_once_with_its_index() {
        for rows in [1, 3, 64] {
            for len in [1, 7, 1000] {
                let mut data = vec![0.0f32; rows * len];
                super::for_each_row_mut(&mut data, len, |r, row| row.iter_mut().for_each(|v| *v += r as f32 + 1.0));
                for (r, row) in data.chunks(len).enumerate() {
                    assert!(row.iter().all(|&v| v == r as f32 + 1.0), "{rows}x{len}");
                }
            }
        }
        super::for_each_row_mut::<f32>(&mut [], 0, |_, _| panic!("no rows"));
    }
}
