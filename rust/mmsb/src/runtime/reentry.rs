//! Re-entry detection: a call into a state from code that runs under that state's lock on the
//! same thread (a transform callback during a propagation round) would wait for a lock its own
//! thread holds, forever. Such calls are refused with `StateError::Reentrant` instead.
//!
//! While a state runs callbacks under its lock, this thread lists the state (by the address of
//! its lock); entry points check the list before taking the lock. With no callback running on
//! the thread the check is one thread-local load and a compare, so the route path pays nothing
//! measurable for it.

use std::cell::{Cell, RefCell};

use crate::types::error::{Result, StateError};

thread_local! {
    /// Entries in `HELD`: the fast test.
    static DEPTH: Cell<usize> = const { Cell::new(0) };
    /// States (lock addresses) running callbacks under their lock on this thread, innermost last.
    static HELD: RefCell<Vec<usize>> = const { RefCell::new(Vec::new()) };
    /// Set when a call was refused; the round whose callback made it reports `Reentrant`.
    static REFUSED: Cell<bool> = const { Cell::new(false) };
}

/// The message of every refusal.
const MESSAGE: &str = "a callback running under this state's lock (a transform during propagate) called back into \
                       the same state on the same thread, which would deadlock; make such calls after propagate \
                       returns";

/// Lists the state whose lock is at `key` as running callbacks on this thread, until dropped.
pub(crate) struct CallbackScope {
    key: usize,
}

impl CallbackScope {
    pub(crate) fn enter(key: usize) -> CallbackScope {
        HELD.with(|h| h.borrow_mut().push(key));
        DEPTH.with(|d| d.set(d.get() + 1));
        CallbackScope { key }
    }
}

impl Drop for CallbackScope {
    fn drop(&mut self) {
        HELD.with(|h| {
            let mut h = h.borrow_mut();
            if let Some(i) = h.iter().rposition(|&k| k == self.key) {
                h.remove(i);
            }
        });
        DEPTH.with(|d| d.set(d.get().saturating_sub(1)));
    }
}

/// True when this thread runs callbacks under the lock at `key`.
#[inline]
pub(crate) fn is_held(key: usize) -> bool {
    DEPTH.with(Cell::get) != 0 && held_slow(key)
}

#[cold]
fn held_slow(key: usize) -> bool {
    HELD.with(|h| h.borrow().contains(&key))
}

/// Fails with `Reentrant` when this thread runs callbacks under the lock at `key` (and notes
/// the refusal for the round, see [`take_refused`]).
#[inline]
pub(crate) fn check(key: usize) -> Result<()> {
    if is_held(key) {
        return Err(refuse());
    }
    Ok(())
}

#[cold]
fn refuse() -> crate::types::error::Error {
    REFUSED.with(|r| r.set(true));
    StateError::Reentrant(MESSAGE.into()).into()
}

/// For the infallible lock paths (`lsn`, `close`, statistics): a re-entrant call cannot
/// return an error there, so it panics with the same message rather than deadlocking.
#[inline]
pub(crate) fn assert_not_held(key: usize) {
    if is_held(key) {
        panic!("re-entrant call: {MESSAGE}");
    }
}

/// Whether a call was refused on this thread since the last `take_refused`; clears the flag.
pub(crate) fn take_refused() -> bool {
    REFUSED.with(|r| r.replace(false))
}

/// The re-entrant error for a round whose callback on `from -> to` made a refused call.
pub(crate) fn round_error(
    from: crate::types::page::PageId,
    to: crate::types::page::PageId,
) -> crate::types::error::Error {
    StateError::Reentrant(format!("the transform of edge {from} -> {to}: {MESSAGE}")).into()
}

impl crate::runtime::state::MMSBState {
    /// Fails with `StateError::Reentrant` when this thread runs callbacks under this state's
    /// lock (a transform during `propagate`): the C ABI checks it before any entry point that
    /// would wait for that lock.
    pub fn check_reentry(&self) -> Result<()> {
        check(self.core.key())
    }
}
