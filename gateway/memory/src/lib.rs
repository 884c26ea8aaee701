//! The node's allocators. Rust code allocates through mimalloc (many small JSON values across
//! threads; measured faster than the system allocator, see `docs/benchmarks.md`); SQLite
//! allocates through glibc's `malloc`.
//!
//! Both are told to keep memory they got from the kernel for a while instead of handing it back
//! soon after a free. Envelopes of a thousand records are megabytes of JSON, read, parsed and
//! written several times a second, and SQLite empties and refills its page caches whenever
//! another connection commits. Memory handed back comes back as fresh pages the kernel must
//! zero: with the allocators' defaults that was about 470,000 page faults per 100,000 relayed
//! records (bench relay, four nodes) and the kernel's page zeroing was about 6 % of all CPU
//! time; keeping freed memory brought it to about 90,000.
//!
//! mimalloc keeps freed memory for 10 s (its default is 1 s): under steady traffic it is reused
//! long before that, and after a burst it goes back to the system. Keeping it for ever, as an
//! earlier version did, left a node at its peak: 40 concurrent 16 MiB pushes left 854 MiB
//! resident until restart; with 10 s it falls to about 210 MiB (`bench bodies`).

/// The global allocator for the node's binaries.
pub use mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc's `mimalloc.h` (versions 2 and 3 alike): milliseconds
/// before freed memory is purged (given back to the kernel); -1 never.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
/// How long mimalloc keeps freed memory before giving it back, ms (see the crate docs).
const PURGE_DELAY_MS: std::ffi::c_long = 10_000;

/// Tunes both allocators to keep freed memory for a while (see the crate docs). Call once at start, before
/// threads are spawned. An operator's own settings win: `MIMALLOC_PURGE_DELAY` for mimalloc,
/// any `glibc.malloc` tunable in `GLIBC_TUNABLES` for glibc.
pub fn keep_freed_memory() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        #[allow(unsafe_code)]
        // SAFETY: sets a plain integer option; mimalloc reads options atomically at any time.
        unsafe {
            libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS)
        };
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if !std::env::var("GLIBC_TUNABLES").is_ok_and(|t| t.contains("glibc.malloc.")) {
        // Fixed thresholds replace glibc's dynamic ones, which shrink the heap after every
        // large free: blocks under 32 MiB come from the heap, and it is trimmed only when
        // 256 MiB are free at its top.
        #[allow(unsafe_code)]
        // SAFETY: `mallopt` takes two integers; called before other threads allocate.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
            libc::mallopt(libc::M_TRIM_THRESHOLD, 256 << 20);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The option is named by its number in mimalloc's header, which the bindings do not
    /// export: if an upgrade renumbered the options, this default would no longer match.
    #[test]
    fn option_15_is_the_purge_delay() {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
            return;
        }
        #[allow(unsafe_code)]
        // SAFETY: reads a plain integer option.
        let value = unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
        assert_eq!(value, 1000, "mimalloc 3's default purge_delay is 1000 ms (options.c)");
    }
}
