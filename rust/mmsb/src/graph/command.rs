//! Transforms (⊗) as command buffers: what a dependent page does when its source changes.
//!
//! An edge carries a [`CommandList`], run in order against the source page's bytes (`src`) and a
//! scratch copy of the dependent page's bytes (`dst`). The declarative commands (copy, fill and
//! lane-wise semiring ops) are plain data and serialize with serde, so they can be logged and
//! checkpointed. Callbacks (Rust closures, C function pointers) are code: they serialize as a
//! marker ("callback, not restorable") and deserialize into [`Callback::NotRestorable`], which
//! the graph refuses, so a restored graph drops edges that used them.
//!
//! Lanes are read and written **little-endian**, whatever the host, so page bytes mean the same
//! thing everywhere; offsets need no alignment. Lane-wise ops compute `dst = dst ∘ src`:
//! - `Add`: wrapping addition for `U8`/`U32`, IEEE 754 addition for `F32`/`F64`;
//! - `Xor`, `Or`, `And`: bitwise on the lane's bits (for floats too: the same bytes result for
//!   every lane type);
//! - `Min`, `Max`: unsigned order for integers; for floats IEEE 754-2019 `minimumNumber` /
//!   `maximumNumber`: a NaN operand is ignored (the other operand wins; NaN only when both are
//!   NaN), and `-0.0 < +0.0`, so the result never depends on the operand order or the platform.
//!   NaN results of `Add` carry whatever payload the hardware produces.

use std::ffi::c_void;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::types::error::GraphError;

/// A Rust transform callback: `f(src, dst)` may rewrite `dst` (the dependent page's new bytes)
/// from `src` (the source page's bytes). `Err(status)` fails the round for that page.
pub type RustTransform = Arc<dyn Fn(&[u8], &mut [u8]) -> Result<(), i32> + Send + Sync>;

/// A C transform callback: returns 0 on success, anything else is an error status.
pub type CTransformFn =
    unsafe extern "C" fn(user_data: *mut c_void, src: *const u8, src_len: usize, dst: *mut u8, dst_len: usize) -> i32;

/// The lane type of a lane-wise op.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Lane {
    /// Unsigned bytes.
    U8 = 0,
    /// Little-endian `u32`.
    U32 = 1,
    /// Little-endian IEEE 754 `f32`.
    F32 = 2,
    /// Little-endian IEEE 754 `f64`.
    F64 = 3,
}

impl Lane {
    /// Every lane type.
    pub const ALL: [Lane; 4] = [Lane::U8, Lane::U32, Lane::F32, Lane::F64];

    /// Bytes per lane.
    pub fn size(self) -> u64 {
        match self {
            Lane::U8 => 1,
            Lane::U32 | Lane::F32 => 4,
            Lane::F64 => 8,
        }
    }

    /// Decodes the C ABI representation.
    pub fn from_u32(v: u32) -> Option<Lane> {
        Lane::ALL.into_iter().find(|l| *l as u32 == v)
    }
}

/// A lane-wise binary op `dst = dst ∘ src` (see the module docs for each lane type).
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SemiOp {
    /// Addition (wrapping for integers).
    Add = 0,
    /// Bitwise exclusive or.
    Xor = 1,
    /// Bitwise or.
    Or = 2,
    /// Bitwise and.
    And = 3,
    /// The smaller lane value.
    Min = 4,
    /// The larger lane value.
    Max = 5,
}

impl SemiOp {
    /// Every op.
    pub const ALL: [SemiOp; 6] = [SemiOp::Add, SemiOp::Xor, SemiOp::Or, SemiOp::And, SemiOp::Min, SemiOp::Max];

    /// Decodes the C ABI representation.
    pub fn from_u32(v: u32) -> Option<SemiOp> {
        SemiOp::ALL.into_iter().find(|o| *o as u32 == v)
    }
}

/// Opaque user data handed back to a C callback.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct UserData(pub *mut c_void);

// SAFETY: MMSB never dereferences the pointer; it only passes it back to the callback that the
// caller registered with it. Whoever registers a C callback promises (see
// `Command::c_callback`) that callback and data may be used from any thread that propagates.
unsafe impl Send for UserData {}
// SAFETY: as above.
unsafe impl Sync for UserData {}

/// User code run as part of a transform.
#[derive(Clone)]
pub enum Callback {
    /// A Rust closure.
    Rust(RustTransform),
    /// A C function pointer with its user data (the C ABI's transforms).
    C {
        /// The function.
        f: CTransformFn,
        /// Passed back to `f` on every call.
        user_data: UserData,
    },
    /// What a deserialized callback becomes: code cannot be restored from a log. The graph
    /// rejects command lists holding one.
    NotRestorable,
}

/// How a callback serializes: only which kind it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
enum CallbackTag {
    Rust,
    C,
    NotRestorable,
}

impl From<Callback> for CallbackTag {
    fn from(c: Callback) -> CallbackTag {
        match c {
            Callback::Rust(_) => CallbackTag::Rust,
            Callback::C { .. } => CallbackTag::C,
            Callback::NotRestorable => CallbackTag::NotRestorable,
        }
    }
}

impl From<CallbackTag> for Callback {
    fn from(_: CallbackTag) -> Callback {
        Callback::NotRestorable
    }
}

impl Serialize for Callback {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        CallbackTag::from(self.clone()).serialize(s)
    }
}

impl<'de> Deserialize<'de> for Callback {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Callback, D::Error> {
        CallbackTag::deserialize(d).map(Callback::from)
    }
}

impl fmt::Debug for Callback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Callback::Rust(_) => f.write_str("Callback::Rust(..)"),
            Callback::C { f: func, user_data } => write!(f, "Callback::C({:p}, {:p})", *func as *const (), user_data.0),
            Callback::NotRestorable => f.write_str("Callback::NotRestorable"),
        }
    }
}

impl PartialEq for Callback {
    /// Rust closures compare by identity; C callbacks by function and data pointer.
    fn eq(&self, other: &Callback) -> bool {
        match (self, other) {
            (Callback::Rust(a), Callback::Rust(b)) => Arc::ptr_eq(a, b),
            (Callback::C { f: fa, user_data: ua }, Callback::C { f: fb, user_data: ub }) => {
                std::ptr::fn_addr_eq(*fa, *fb) && ua == ub
            }
            (Callback::NotRestorable, Callback::NotRestorable) => true,
            _ => false,
        }
    }
}

/// One step of a transform.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Command {
    /// `dst[dst_off..][..len] = src[src_off..][..len]`.
    Copy {
        /// First source byte.
        src_off: u64,
        /// First destination byte.
        dst_off: u64,
        /// Bytes copied.
        len: u64,
    },
    /// `dst[dst_off..][..len] = value`.
    Fill {
        /// First destination byte.
        dst_off: u64,
        /// Bytes filled.
        len: u64,
        /// The byte written.
        value: u8,
    },
    /// Lane-wise `dst = dst ∘ src` over `len` bytes (a multiple of the lane size).
    Op {
        /// The operation.
        op: SemiOp,
        /// The lane type.
        lane: Lane,
        /// First source byte.
        src_off: u64,
        /// First destination byte.
        dst_off: u64,
        /// Bytes covered.
        len: u64,
    },
    /// User code over the whole source page and the whole (scratch) dependent page.
    Callback(Callback),
}

impl Command {
    /// A Rust closure transform.
    pub fn rust_callback(f: impl Fn(&[u8], &mut [u8]) -> Result<(), i32> + Send + Sync + 'static) -> Command {
        Command::Callback(Callback::Rust(Arc::new(f)))
    }

    /// A C function pointer transform with its user data.
    ///
    /// # Safety
    /// `f` must be safe to call with `user_data`, a source slice and a destination slice, from
    /// any thread that propagates this graph, for as long as the edge exists; it must not unwind
    /// and must not call back into the same state (its lock is held: that would deadlock).
    pub unsafe fn c_callback(f: CTransformFn, user_data: *mut c_void) -> Command {
        Command::Callback(Callback::C { f, user_data: UserData(user_data) })
    }

    /// Checks the command against the page sizes it will run on.
    pub fn validate(&self, src_size: u64, dst_size: u64) -> Result<(), GraphError> {
        // Worded like `DeltaError::OutOfBounds` (no Rust syntax), so that bindings can restate
        // the offsets in their own convention (the Julia package shows 1-based byte ranges).
        let kind = match self {
            Command::Copy { .. } => "copy",
            Command::Fill { .. } => "fill",
            Command::Op { .. } => "op",
            Command::Callback(_) => "callback",
        };
        let range = |what: &str, off: u64, len: u64, size: u64| match off.checked_add(len) {
            Some(end) if end <= size => Ok(()),
            _ => Err(GraphError::InvalidCommand(format!(
                "{kind} command: {len} bytes at offset {off} are out of bounds for the {what} page of {size} bytes"
            ))),
        };
        match *self {
            Command::Copy { src_off, dst_off, len } => {
                range("source", src_off, len, src_size)?;
                range("destination", dst_off, len, dst_size)
            }
            Command::Fill { dst_off, len, .. } => range("destination", dst_off, len, dst_size),
            Command::Op { lane, src_off, dst_off, len, .. } => {
                if len % lane.size() != 0 {
                    return Err(GraphError::InvalidCommand(format!(
                        "op command: length {len} is not a multiple of the {lane:?} lane size {}",
                        lane.size()
                    )));
                }
                range("source", src_off, len, src_size)?;
                range("destination", dst_off, len, dst_size)
            }
            Command::Callback(Callback::NotRestorable) => {
                Err(GraphError::InvalidCommand("a deserialized callback is not restorable".into()))
            }
            Command::Callback(_) => Ok(()),
        }
    }

    /// Runs the command. Ranges must have been validated against these slice lengths (a
    /// violation panics, it never reads or writes out of bounds). `Err(status)` only comes
    /// from callbacks.
    pub fn execute(&self, src: &[u8], dst: &mut [u8]) -> Result<(), i32> {
        match *self {
            Command::Copy { src_off, dst_off, len } => {
                let (s, d, n) = (validated(src_off), validated(dst_off), validated(len));
                dst[d..d + n].copy_from_slice(&src[s..s + n]);
                Ok(())
            }
            Command::Fill { dst_off, len, value } => {
                let (d, n) = (validated(dst_off), validated(len));
                dst[d..d + n].fill(value);
                Ok(())
            }
            Command::Op { op, lane, src_off, dst_off, len } => {
                let (s, d, n) = (validated(src_off), validated(dst_off), validated(len));
                lane_op(op, lane, &src[s..s + n], &mut dst[d..d + n]);
                Ok(())
            }
            Command::Callback(ref cb) => match cb {
                Callback::Rust(f) => f(src, dst),
                Callback::C { f, user_data } => {
                    // SAFETY: the registrant promised (Command::c_callback) that `f` may be
                    // called with `user_data` and slices; the pointers/lengths describe live
                    // slices borrowed for the duration of the call.
                    let status = unsafe { f(user_data.0, src.as_ptr(), src.len(), dst.as_mut_ptr(), dst.len()) };
                    if status == 0 {
                        Ok(())
                    } else {
                        Err(status)
                    }
                }
                // Never admitted into a graph (validate rejects it); fail loudly if run directly.
                Callback::NotRestorable => Err(-1),
            },
        }
    }

    /// True for declarative commands (everything but callbacks): those survive serialization.
    pub fn is_restorable(&self) -> bool {
        !matches!(self, Command::Callback(_))
    }
}

/// The commands of one edge, run in order.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CommandList {
    commands: Vec<Command>,
}

impl CommandList {
    /// An empty list: the edge records a dependency without changing any byte.
    pub fn new() -> CommandList {
        CommandList::default()
    }

    /// Appends a command.
    pub fn push(&mut self, c: Command) -> &mut CommandList {
        self.commands.push(c);
        self
    }

    /// Builder form of [`CommandList::push`].
    pub fn with(mut self, c: Command) -> CommandList {
        self.commands.push(c);
        self
    }

    /// The commands, in order.
    pub fn commands(&self) -> &[Command] {
        &self.commands
    }

    /// Number of commands.
    pub fn len(&self) -> usize {
        self.commands.len()
    }

    /// True when the list has no commands.
    pub fn is_empty(&self) -> bool {
        self.commands.is_empty()
    }

    /// True when every command survives serialization (no callbacks).
    pub fn is_restorable(&self) -> bool {
        self.commands.iter().all(Command::is_restorable)
    }

    /// Checks every command against the page sizes.
    pub fn validate(&self, src_size: u64, dst_size: u64) -> Result<(), GraphError> {
        self.commands.iter().try_for_each(|c| c.validate(src_size, dst_size))
    }

    /// Runs every command in order; stops at the first failing callback.
    pub fn execute(&self, src: &[u8], dst: &mut [u8]) -> Result<(), i32> {
        self.commands.iter().try_for_each(|c| c.execute(src, dst))
    }
}

impl From<Vec<Command>> for CommandList {
    fn from(commands: Vec<Command>) -> CommandList {
        CommandList { commands }
    }
}

impl FromIterator<Command> for CommandList {
    fn from_iter<I: IntoIterator<Item = Command>>(it: I) -> CommandList {
        CommandList { commands: it.into_iter().collect() }
    }
}

/// IEEE 754-2019 minimumNumber: NaN loses, `-0 < +0`.
macro_rules! float_minmax {
    ($min:ident, $max:ident, $t:ty) => {
        fn $min(a: $t, b: $t) -> $t {
            if a.is_nan() {
                b
            } else if b.is_nan() || a < b {
                a
            } else if b < a {
                b
            } else if a.is_sign_negative() {
                a
            } else {
                b
            }
        }
        fn $max(a: $t, b: $t) -> $t {
            if a.is_nan() {
                b
            } else if b.is_nan() || a > b {
                a
            } else if b > a {
                b
            } else if a.is_sign_positive() {
                a
            } else {
                b
            }
        }
    };
}
float_minmax!(min_f32, max_f32, f32);
float_minmax!(min_f64, max_f64, f64);

/// An offset or length that `validate` checked against a page's length (a `usize`), so it fits;
/// an unvalidated one that does not fit panics here instead of wrapping to a wrong in-bounds range.
fn validated(v: u64) -> usize {
    usize::try_from(v).expect("a validated range lies inside a page, whose length is a usize")
}

/// Applies `f` lane by lane over little-endian lanes of `N` bytes.
#[inline(always)]
fn lanes<const N: usize, T>(
    src: &[u8],
    dst: &mut [u8],
    from: impl Fn([u8; N]) -> T,
    to: impl Fn(T) -> [u8; N],
    f: impl Fn(T, T) -> T,
) {
    for (d, s) in dst.chunks_exact_mut(N).zip(src.chunks_exact(N)) {
        let (Ok(da), Ok(sa)) = (<[u8; N]>::try_from(&*d), <[u8; N]>::try_from(s)) else { unreachable!() };
        d.copy_from_slice(&to(f(from(da), from(sa))));
    }
}

fn lane_op(op: SemiOp, lane: Lane, src: &[u8], dst: &mut [u8]) {
    // Bitwise ops are the same bytes whatever the lane: do them byte-wise (vectorizes).
    let bytewise = |dst: &mut [u8], f: fn(u8, u8) -> u8| {
        for (d, s) in dst.iter_mut().zip(src) {
            *d = f(*d, *s);
        }
    };
    match (op, lane) {
        (SemiOp::Xor, _) => bytewise(dst, |a, b| a ^ b),
        (SemiOp::Or, _) => bytewise(dst, |a, b| a | b),
        (SemiOp::And, _) => bytewise(dst, |a, b| a & b),
        (SemiOp::Add, Lane::U8) => bytewise(dst, u8::wrapping_add),
        (SemiOp::Min, Lane::U8) => bytewise(dst, std::cmp::min),
        (SemiOp::Max, Lane::U8) => bytewise(dst, std::cmp::max),
        (SemiOp::Add, Lane::U32) => lanes(src, dst, u32::from_le_bytes, u32::to_le_bytes, u32::wrapping_add),
        (SemiOp::Min, Lane::U32) => lanes(src, dst, u32::from_le_bytes, u32::to_le_bytes, std::cmp::min),
        (SemiOp::Max, Lane::U32) => lanes(src, dst, u32::from_le_bytes, u32::to_le_bytes, std::cmp::max),
        (SemiOp::Add, Lane::F32) => lanes(src, dst, f32::from_le_bytes, f32::to_le_bytes, |a, b| a + b),
        (SemiOp::Min, Lane::F32) => lanes(src, dst, f32::from_le_bytes, f32::to_le_bytes, min_f32),
        (SemiOp::Max, Lane::F32) => lanes(src, dst, f32::from_le_bytes, f32::to_le_bytes, max_f32),
        (SemiOp::Add, Lane::F64) => lanes(src, dst, f64::from_le_bytes, f64::to_le_bytes, |a, b| a + b),
        (SemiOp::Min, Lane::F64) => lanes(src, dst, f64::from_le_bytes, f64::to_le_bytes, min_f64),
        (SemiOp::Max, Lane::F64) => lanes(src, dst, f64::from_le_bytes, f64::to_le_bytes, max_f64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(c: Command, src: &[u8], dst: &[u8]) -> Vec<u8> {
        c.validate(src.len() as u64, dst.len() as u64).unwrap();
        let mut out = dst.to_vec();
        c.execute(src, &mut out).unwrap();
        out
    }

    fn op(op: SemiOp, lane: Lane, len: u64) -> Command {
        Command::Op { op, lane, src_off: 0, dst_off: 0, len }
    }

    #[test]
    fn copy_and_fill() {
        let src = [1u8, 2, 3, 4, 5];
        assert_eq!(run(Command::Copy { src_off: 1, dst_off: 2, len: 3 }, &src, &[0; 6]), [0, 0, 2, 3, 4, 0]);
        assert_eq!(run(Command::Fill { dst_off: 1, len: 2, value: 9 }, &src, &[0; 4]), [0, 9, 9, 0]);
    }

    #[test]
    fn validation_rejects_out_of_range_and_ragged_lanes() {
        let bad = [
            Command::Copy { src_off: 4, dst_off: 0, len: 2 },
            Command::Copy { src_off: 0, dst_off: 7, len: 2 },
            Command::Fill { dst_off: u64::MAX, len: 2, value: 0 },
            Command::Op { op: SemiOp::Add, lane: Lane::U32, src_off: 0, dst_off: 0, len: 6 },
            Command::Op { op: SemiOp::Add, lane: Lane::F64, src_off: 0, dst_off: 0, len: 16 },
            Command::Callback(Callback::NotRestorable),
        ];
        for c in bad {
            let e = c.validate(5, 8).unwrap_err();
            assert!(matches!(e, GraphError::InvalidCommand(_)), "{c:?}: {e}");
        }
        Command::Op { op: SemiOp::Add, lane: Lane::U32, src_off: 1, dst_off: 3, len: 4 }.validate(5, 8).unwrap();
    }

    /// Every op × every lane type against a scalar reference.
    #[test]
    fn every_op_on_every_lane() {
        let ints: [u32; 4] = [0, 1, 0xFFFF_FFFF, 0x8000_0001];
        let ints2: [u32; 4] = [5, 0xFFFF_FFFF, 2, 0x7FFF_FFFF];
        for o in SemiOp::ALL {
            // u8
            let a: Vec<u8> = (0..=255u8).collect();
            let b: Vec<u8> = (0..=255u8).rev().map(|x| x.wrapping_mul(7)).collect();
            let got = run(op(o, Lane::U8, 256), &b, &a);
            for i in 0..256 {
                let (x, y) = (a[i], b[i]);
                let want = match o {
                    SemiOp::Add => x.wrapping_add(y),
                    SemiOp::Xor => x ^ y,
                    SemiOp::Or => x | y,
                    SemiOp::And => x & y,
                    SemiOp::Min => x.min(y),
                    SemiOp::Max => x.max(y),
                };
                assert_eq!(got[i], want, "{o:?} u8 {x} {y}");
            }
            // u32
            let enc = |v: &[u32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
            let got = run(op(o, Lane::U32, 16), &enc(&ints2), &enc(&ints));
            for i in 0..4 {
                let (x, y) = (ints[i], ints2[i]);
                let want = match o {
                    SemiOp::Add => x.wrapping_add(y),
                    SemiOp::Xor => x ^ y,
                    SemiOp::Or => x | y,
                    SemiOp::And => x & y,
                    SemiOp::Min => x.min(y),
                    SemiOp::Max => x.max(y),
                };
                assert_eq!(u32::from_le_bytes(got[4 * i..4 * i + 4].try_into().unwrap()), want, "{o:?} u32");
            }
            // f32 / f64 on ordinary values
            let fa = [1.5f32, -2.0, 0.25, 1e30];
            let fb = [2.0f32, -3.0, 0.25, 1e30];
            let got = run(
                op(o, Lane::F32, 16),
                &fb.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<_>>(),
                &fa.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<_>>(),
            );
            let da = [1.5f64, -2.0, 0.25, 1e300];
            let db = [2.0f64, -3.0, 0.25, 1e300];
            let got64 = run(
                op(o, Lane::F64, 32),
                &db.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<_>>(),
                &da.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<_>>(),
            );
            for i in 0..4 {
                let g = f32::from_le_bytes(got[4 * i..4 * i + 4].try_into().unwrap());
                let g64 = f64::from_le_bytes(got64[8 * i..8 * i + 8].try_into().unwrap());
                let (want, want64) = match o {
                    SemiOp::Add => (fa[i] + fb[i], da[i] + db[i]),
                    SemiOp::Min => (fa[i].min(fb[i]), da[i].min(db[i])),
                    SemiOp::Max => (fa[i].max(fb[i]), da[i].max(db[i])),
                    SemiOp::Xor => (
                        f32::from_bits(fa[i].to_bits() ^ fb[i].to_bits()),
                        f64::from_bits(da[i].to_bits() ^ db[i].to_bits()),
                    ),
                    SemiOp::Or => (
                        f32::from_bits(fa[i].to_bits() | fb[i].to_bits()),
                        f64::from_bits(da[i].to_bits() | db[i].to_bits()),
                    ),
                    SemiOp::And => (
                        f32::from_bits(fa[i].to_bits() & fb[i].to_bits()),
                        f64::from_bits(da[i].to_bits() & db[i].to_bits()),
                    ),
                };
                assert_eq!(g.to_bits(), want.to_bits(), "{o:?} f32 lane {i}");
                assert_eq!(g64.to_bits(), want64.to_bits(), "{o:?} f64 lane {i}");
            }
        }
    }

    #[test]
    fn float_min_max_nan_and_signed_zero_are_deterministic() {
        let nan = f32::NAN;
        let cases: [(f32, f32, f32, f32); 5] = [
            // (a, b, min, max)
            (nan, 1.0, 1.0, 1.0),
            (1.0, nan, 1.0, 1.0),
            (-0.0, 0.0, -0.0, 0.0),
            (0.0, -0.0, -0.0, 0.0),
            (f32::NEG_INFINITY, nan, f32::NEG_INFINITY, f32::NEG_INFINITY),
        ];
        for (a, b, mn, mx) in cases {
            assert_eq!(min_f32(a, b).to_bits(), mn.to_bits(), "min({a}, {b})");
            assert_eq!(max_f32(a, b).to_bits(), mx.to_bits(), "max({a}, {b})");
            assert_eq!(min_f64(a as f64, b as f64).to_bits(), (mn as f64).to_bits());
            assert_eq!(max_f64(a as f64, b as f64).to_bits(), (mx as f64).to_bits());
        }
        assert!(min_f32(nan, nan).is_nan() && max_f64(f64::NAN, f64::NAN).is_nan());
        // Through the command path as well: dst = min(dst, src) with a NaN in dst keeps src.
        let got = run(op(SemiOp::Min, Lane::F64, 8), &2.5f64.to_le_bytes(), &f64::NAN.to_le_bytes());
        assert_eq!(f64::from_le_bytes(got.try_into().unwrap()), 2.5);
    }

    #[test]
    fn unaligned_offsets_work() {
        let src: Vec<u8> = [0u8].into_iter().chain(7u32.to_le_bytes()).collect();
        let dst: Vec<u8> = [0u8, 0].into_iter().chain(5u32.to_le_bytes()).collect();
        let c = Command::Op { op: SemiOp::Add, lane: Lane::U32, src_off: 1, dst_off: 2, len: 4 };
        let got = run(c, &src, &dst);
        assert_eq!(u32::from_le_bytes(got[2..6].try_into().unwrap()), 12);
    }

    #[test]
    fn rust_callback_runs_and_fails() {
        let ok = Command::rust_callback(|s, d| {
            d[0] = s[0] * 2;
            Ok(())
        });
        assert_eq!(run(ok, &[21], &[0, 1]), [42, 1]);
        let bad = Command::rust_callback(|_, _| Err(7));
        assert_eq!(bad.execute(&[0], &mut [0]), Err(7));
    }

    #[test]
    fn serde_keeps_declarative_commands_and_marks_callbacks() {
        let list = CommandList::new()
            .with(Command::Copy { src_off: 1, dst_off: 2, len: 3 })
            .with(Command::Fill { dst_off: 0, len: 1, value: 0xAB })
            .with(Command::Op { op: SemiOp::Max, lane: Lane::F32, src_off: 0, dst_off: 4, len: 8 });
        let bytes = postcard::to_allocvec(&list).unwrap();
        let back: CommandList = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back, list);
        assert!(back.is_restorable());

        let with_cb = list.clone().with(Command::rust_callback(|_, _| Ok(())));
        let json = serde_json::to_string(&with_cb).unwrap();
        assert!(json.contains("Callback"), "{json}");
        let back: CommandList = postcard::from_bytes(&postcard::to_allocvec(&with_cb).unwrap()).unwrap();
        assert_eq!(back.commands().last(), Some(&Command::Callback(Callback::NotRestorable)));
        assert!(back.validate(100, 100).is_err());
    }
}
