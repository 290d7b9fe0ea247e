//! The DeltaRouter: validates deltas against the registry, then applies them as masked writes,
//! assigning LSNs and bumping page epochs. Both steps run under the state's exclusive lock;
//! validation finishes before the first byte is written, so a rejected batch changes nothing.

use crate::runtime::state::Core;
use crate::types::error::{PageError, Result, StateError};

pub use crate::types::route::RouteOp;

/// Checks every op against the registry (existence, bounds, epochs as they will be when the op
/// runs, counting earlier ops of the same batch).
pub(crate) fn validate(core: &Core, ops: &[RouteOp<'_>]) -> Result<()> {
    for (i, op) in ops.iter().enumerate() {
        // The size from the registry's slot: no trip through the buffer handle (issue 21).
        let size = core.pages.size_of(op.page).ok_or(PageError::UnknownPage(op.page))?;
        op.delta.check_bounds(size)?;
        op.delta.check_encodable()?;
        if let Some(expected) = op.expected_epoch {
            let page = core.pages.get(&op.page).ok_or(PageError::UnknownPage(op.page))?;
            let earlier = ops[..i].iter().filter(|o| o.page == op.page).count() as u64;
            let actual = page.epoch + earlier;
            if actual != expected {
                return Err(StateError::EpochConflict { page: op.page, expected, actual }.into());
            }
        }
    }
    Ok(())
}

/// Applies ops already accepted by [`validate`], whose LSNs the caller has assigned (one per
/// op, through `Txn::log`; `Txn::route` in runtime/commit.rs is the one caller).
pub(crate) fn apply(core: &mut Core, ops: &[RouteOp<'_>]) {
    for op in ops {
        let e = core.pages.entry(op.page).expect("validated page exists");
        let page = e.page;
        // SAFETY: `e.data` and `e.len` are the page's buffer (the registry's slot caches them;
        // the mapping lives as long as the page), and the caller holds the state's exclusive
        // lock (we have `&mut Core`), so no other reader or writer of it runs; bounds were checked.
        op.delta.apply_unchecked(unsafe { std::slice::from_raw_parts_mut(e.data, e.len) });
        // Device layer hook: the mirror of a non-CPU page is now behind on these bytes.
        if let Some(dirty) = page.dirty.as_mut() {
            dirty.mark_delta(op.delta);
        }
        page.epoch += 1;
    }
}
