//! The binary's memory allocator: mimalloc, set up to return memory.
//!
//! glibc's malloc serialises threads on its arena locks: on the hot paths
//! (a request's headers and answer, a delivery's parse, a publish), about a
//! tenth of the runtime's samples were threads waiting in `malloc` and
//! `free`. mimalloc keeps a heap per thread and has no such lock.
//!
//! Before its first allocation, mimalloc is told to commit its arena page
//! by page as it is used, and to return freed pages after 10 ms: its
//! defaults (the whole arena committed up front, freed pages kept for a
//! second) took the Rust rows' peak RSS in the benchmark from 24 to 37 MiB
//! and the reused Python row's from 61 to 128 MiB. `MIMALLOC_ARENA_EAGER_COMMIT`
//! and `MIMALLOC_PURGE_DELAY` still override both. The benchmark's process
//! includes this file too.

/// The allocator.
pub type Allocator = mimalloc::MiMalloc;

/// `mi_option_arena_eager_commit` and `mi_option_purge_delay`, in
/// mimalloc 3's `mi_option_t` (the binding names neither).
const ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;
const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
const PURGE_DELAY_MS: std::ffi::c_long = 10;

/// Runs before mimalloc's own constructor (priority 101) and before any
/// Rust code, so that its first arena is made with these options.
#[cfg(target_os = "linux")]
#[used]
#[link_section = ".init_array.00100"]
static SET_MIMALLOC_OPTIONS: extern "C" fn() = set_mimalloc_options;

#[cfg(target_os = "linux")]
extern "C" fn set_mimalloc_options() {
    // SAFETY: sets two defaults in mimalloc's option table; nothing else
    // runs this early. `MIMALLOC_ARENA_EAGER_COMMIT` and
    // `MIMALLOC_PURGE_DELAY` still override them.
    unsafe {
        libmimalloc_sys::mi_option_set_default(ARENA_EAGER_COMMIT, 0);
        libmimalloc_sys::mi_option_set_default(PURGE_DELAY, PURGE_DELAY_MS);
    }
}
