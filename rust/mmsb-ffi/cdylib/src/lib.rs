//! The shared library `libmmsb.so`: every `#[no_mangle]` C function of [`mmsb_ffi`], exported.
//!
//! A separate package because the library must be named `mmsb` (the name Julia, C callers and
//! scripts load) while the core rlib is `mmsb` too: one package cannot hold both, and two rlibs
//! with one name collide in `target/`. The re-export keeps the whole ABI linked in.

pub use mmsb_ffi::*;
