//! Allocator settings for tensor work.
//!
//! A CPU training step allocates and frees hundreds of buffers of hundreds of kilobytes. glibc
//! serves each from a fresh `mmap` and unmaps it on free (or trims the heap top), so every step
//! page-faults its working set in again: about 16 % of a `tiny.toml` step went to the kernel's
//! page-fault path. Keeping freed memory in the heap makes the next step reuse it (the step took
//! 18 % less time). `vlp serve` keeps glibc's defaults: a long-lived server should hand memory back.

/// Serve allocations of up to 32 MiB (glibc's largest setting) from the heap, and only trim the
/// heap once 512 MiB lie free at its top.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes the allocator's thresholds; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 512 << 20);
    }
}
