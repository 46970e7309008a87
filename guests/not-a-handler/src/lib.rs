//! A component that exports nothing: `check` and start-up must refuse it,
//! naming the missing export.

/// Keeps the component from being empty.
#[no_mangle]
pub extern "C" fn unrelated(x: i32) -> i32 {
    x + 1
}
