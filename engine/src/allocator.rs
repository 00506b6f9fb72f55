//! The C allocator's settings for a process that synthesizes speech.
//!
//! The models allocate and free buffers of hundreds of kilobytes to megabytes for every
//! chunk they stream (a convolution's input with its context, a layer's output). glibc's
//! malloc serves blocks above its mmap threshold with fresh mappings and gives the top of its
//! heap back to the kernel past its trim threshold, so each such buffer costs page faults and
//! zeroed pages when it is allocated again. [`keep_freed_memory`] raises both thresholds:
//! freed buffers stay in the process for the next chunk. The resident size then stays near
//! its peak instead of shrinking between sentences; the peak itself does not change.

/// The mmap threshold set: glibc's largest allowed value (half its 64 MB heap size).
pub const MMAP_THRESHOLD: usize = 32 << 20;
/// The trim threshold set: free memory at the top of the heap kept up to this much.
pub const TRIM_THRESHOLD: usize = 512 << 20;

/// Keeps freed blocks up to [`MMAP_THRESHOLD`] in the heap and stops returning up to
/// [`TRIM_THRESHOLD`] of free heap top to the kernel, for the whole process. Call it once,
/// early (the `spiral` binary does at startup); an application that embeds the engine
/// decides for its own process. Returns whether the allocator took both settings (always
/// false where the C library is not glibc, where it does nothing).
///
/// The default voice, in process (`vits_stages`, two runs each, alternating): 0.0306-0.0332 s
/// per second of audio with glibc's defaults, 0.0282-0.0287 with these.
///
/// ```
/// let taken = spiral_engine::allocator::keep_freed_memory();
/// assert_eq!(taken, cfg!(all(target_os = "linux", target_env = "gnu")));
/// ```
pub fn keep_freed_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only changes the allocator's parameters; both values are in range.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD as libc::c_int) == 1
                && libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD as libc::c_int) == 1
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

/// Returns the memory the allocator holds free to the kernel (glibc's `malloc_trim`), for
/// a process that has just loaded a model: what loading freed (the decoded file's
/// temporaries, the weights a layer replaced by another form of them) would otherwise stay
/// resident under [`keep_freed_memory`]. The buffers a model streams are allocated after,
/// so they are still kept. Returns whether any memory went back (always false where the C
/// library is not glibc, where it does nothing).
///
/// The default voice loaded by `spiral speak`: resident 170 → 135 MB after its warm-up.
///
/// ```
/// spiral_engine::allocator::release_free_memory();
/// ```
pub fn release_free_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim only gives free pages back; every live block stays as it is.
        unsafe { libc::malloc_trim(0) == 1 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}
