//! The EventSystem: tuple events to subscribers over bounded channels.
//!
//! Each [`Subscription`] has a bounded channel, a mask of the [`EventKind`]s it wants and an
//! [`OverflowPolicy`] saying what happens when it falls behind; memory never grows without
//! bound. Emitting checks one atomic (the union of all live masks) first, so with no interested
//! subscriber an emit costs a load and a branch: it sits on the route path.
//!
//! Events are delivered in emission order per subscription. Deltas are emitted under the
//! state's write lock, so `DeltaApplied` events arrive in LSN order; a `Block` subscriber
//! therefore stalls writers for up to its timeout.
//!
//! A subscription outlives its state harmlessly: once the state is closed or dropped, it
//! reports [`Subscription::is_closed`], still drains what was queued, and then stays empty.
//!
//! A consumer that must not block a thread on [`Subscription::recv_timeout`] (an event loop,
//! Julia's tasks) registers a wake-up with [`Subscription::set_notify`]: it is called after
//! events are queued for the subscription and when the state closes, outside the hub's lock,
//! so the consumer waits on its own primitive instead of polling.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, TrySendError};
use parking_lot::Mutex;

use crate::runtime::state::Core;
use crate::types::error::{Error, Result, StateError};
use crate::types::lsn::Lsn;
use crate::types::page::PageId;
use crate::types::route::RouteOp;

pub use crate::types::event::{Event, EventKind, SyncDirection};

/// What happens when a subscriber's channel is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverflowPolicy {
    /// The emitter waits up to `timeout` for room; if none comes, the new event is dropped,
    /// counted and the subscription marked lagged. Emitters (writers, holding the state's
    /// lock) stall meanwhile, so the consumer must not wait for a write of the same state
    /// before draining, and subscribing or unsubscribing waits for the stalled emit.
    Block {
        /// How long the emitter waits for room.
        timeout: Duration,
    },
    /// The oldest queued event is discarded (and counted) to make room: the subscriber always
    /// sees the most recent events.
    DropOldest,
    /// The "error" policy: the new event is dropped, counted, and the subscription is marked
    /// lagged, so the subscriber knows its view has a gap (emitters never fail or wait).
    DropNewest,
}

impl OverflowPolicy {
    /// Decodes the C ABI representation: 0 block (with `timeout`), 1 drop oldest, 2 drop newest.
    pub fn from_u32(v: u32, timeout: Duration) -> Option<OverflowPolicy> {
        match v {
            0 => Some(OverflowPolicy::Block { timeout }),
            1 => Some(OverflowPolicy::DropOldest),
            2 => Some(OverflowPolicy::DropNewest),
            _ => None,
        }
    }
}

/// A subscriber's wake-up (see [`Subscription::set_notify`]).
pub type NotifyFn = Box<dyn Fn() + Send + Sync>;

/// The wake-up of one subscription. `set` mirrors `f.is_some()` so that emitters holding the
/// hub's lock skip subscriptions without one at the cost of a load.
#[derive(Default)]
struct NotifyCell {
    set: AtomicBool,
    /// Held while the wake-up runs: replacing or clearing it waits for a call in flight, so
    /// whatever the wake-up refers to may be freed once `set_notify(None)` returns.
    f: Mutex<Option<NotifyFn>>,
}

impl NotifyCell {
    fn wake(&self) {
        if let Some(f) = self.f.lock().as_ref() {
            f();
        }
    }
}

impl std::fmt::Debug for NotifyCell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NotifyCell").field("set", &self.set.load(Ordering::Relaxed)).finish()
    }
}

#[derive(Debug, Default)]
struct Counters {
    dropped: AtomicU64,
    lagged: AtomicBool,
    closed: AtomicBool,
    notify: NotifyCell,
}

/// Calls the wake-ups of `woken` (collected under the hub's lock, called after releasing it:
/// a wake-up must never run under a lock its consumer could need).
fn wake_all(woken: Vec<Arc<Counters>>) {
    for c in woken {
        c.notify.wake();
    }
}

#[derive(Debug)]
struct Slot {
    id: u64,
    mask: u32,
    policy: OverflowPolicy,
    tx: Sender<Event>,
    /// The emitter's own receiver, used to discard the oldest event under `DropOldest`.
    rx: Receiver<Event>,
    counters: Arc<Counters>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Union of the masks of live subscriptions: the emit fast path reads only this.
    active: AtomicU32,
    slots: Mutex<Vec<Slot>>,
    closed: AtomicBool,
    next_id: AtomicU64,
}

impl Inner {
    fn refresh_mask(&self, slots: &[Slot]) {
        self.active.store(slots.iter().fold(0, |m, s| m | s.mask), Ordering::Release);
    }

    #[cold]
    fn deliver(&self, events: &mut dyn Iterator<Item = Event>, bit: u32) {
        let woken = {
            let slots = self.slots.lock();
            let mut any = false;
            for ev in events {
                any = true;
                for s in slots.iter().filter(|s| s.mask & bit != 0) {
                    send(s, ev);
                }
            }
            if !any {
                return;
            }
            slots
                .iter()
                .filter(|s| s.mask & bit != 0 && s.counters.notify.set.load(Ordering::Acquire))
                .map(|s| s.counters.clone())
                .collect::<Vec<_>>()
        };
        wake_all(woken);
    }
}

fn send(s: &Slot, ev: Event) {
    let dropped = |lagged: bool| {
        s.counters.dropped.fetch_add(1, Ordering::Relaxed);
        if lagged {
            s.counters.lagged.store(true, Ordering::Relaxed);
        }
    };
    match s.policy {
        OverflowPolicy::Block { timeout } => {
            if s.tx.send_timeout(ev, timeout).is_err() {
                dropped(true);
            }
        }
        OverflowPolicy::DropNewest => {
            if let Err(TrySendError::Full(_)) = s.tx.try_send(ev) {
                dropped(true);
            }
        }
        OverflowPolicy::DropOldest => {
            let mut ev = ev;
            loop {
                match s.tx.try_send(ev) {
                    Ok(()) | Err(TrySendError::Disconnected(_)) => break,
                    Err(TrySendError::Full(back)) => {
                        // The subscriber may drain concurrently: then there is room already.
                        if s.rx.try_recv().is_ok() {
                            dropped(false);
                        }
                        ev = back;
                    }
                }
            }
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        for s in self.slots.get_mut().iter() {
            s.counters.closed.store(true, Ordering::Release);
            s.counters.notify.wake();
        }
    }
}

/// The state's event hub.
/// Cloning gives another handle on the same subscribers.
#[derive(Debug, Default, Clone)]
pub struct EventSystem {
    inner: Arc<Inner>,
}

impl EventSystem {
    /// The largest channel capacity a subscription may ask for (events are 32 bytes; channels
    /// allocate their capacity up front).
    pub const MAX_CAPACITY: usize = 1 << 20;

    /// A hub with no subscribers.
    pub fn new() -> EventSystem {
        EventSystem::default()
    }

    /// Subscribes to the kinds in `mask` (bits of [`EventKind`]) with a channel of `capacity`
    /// events (1..=[`EventSystem::MAX_CAPACITY`]).
    pub fn subscribe(&self, capacity: usize, policy: OverflowPolicy, mask: u32) -> Result<Subscription> {
        if capacity == 0 || capacity > EventSystem::MAX_CAPACITY {
            return Err(Error::InvalidArgument(format!(
                "subscription capacity {capacity} is not in 1..={}",
                EventSystem::MAX_CAPACITY
            )));
        }
        if mask == 0 || mask & !EventKind::MASK_ALL != 0 {
            return Err(Error::InvalidArgument(format!("event mask {mask:#x} is empty or has unknown bits")));
        }
        let mut slots = self.inner.slots.lock();
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(StateError::Closed.into());
        }
        let (tx, rx) = crossbeam_channel::bounded(capacity);
        let counters = Arc::new(Counters::default());
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        slots.push(Slot { id, mask, policy, tx, rx: rx.clone(), counters: counters.clone() });
        self.inner.refresh_mask(&slots);
        Ok(Subscription { id, mask, rx, counters, system: Arc::downgrade(&self.inner) })
    }

    /// True when some subscriber wants events of `kind` (one atomic load).
    #[inline]
    pub fn wants(&self, kind: EventKind) -> bool {
        self.inner.active.load(Ordering::Acquire) & kind as u32 != 0
    }

    /// Sends `ev` to every subscriber whose mask includes its kind.
    #[inline]
    pub fn emit(&self, ev: Event) {
        let bit = ev.kind() as u32;
        if self.inner.active.load(Ordering::Acquire) & bit != 0 {
            self.inner.deliver(&mut std::iter::once(ev), bit);
        }
    }

    /// Emits `DeltaApplied` for a batch just applied with LSNs `lsns` (the route path's one
    /// hook). Costs one atomic load when nobody listens.
    #[inline]
    pub(crate) fn emit_deltas(&self, core: &Core, lsns: std::ops::Range<Lsn>, ops: &[RouteOp<'_>]) {
        let bit = EventKind::DeltaApplied as u32;
        if self.inner.active.load(Ordering::Acquire) & bit != 0 {
            self.emit_deltas_slow(core, lsns, ops, bit);
        }
    }

    #[cold]
    fn emit_deltas_slow(&self, core: &Core, lsns: std::ops::Range<Lsn>, ops: &[RouteOp<'_>], bit: u32) {
        // The registry holds each page's epoch after the whole batch; walk the batch backwards
        // to recover the epoch after each op.
        let mut later: std::collections::HashMap<PageId, u64> = std::collections::HashMap::new();
        let mut events: Vec<Event> = Vec::with_capacity(ops.len());
        for (i, op) in ops.iter().enumerate().rev() {
            let n = later.entry(op.page).or_insert(0);
            let epoch = core.pages.get(&op.page).map_or(0, |p| p.epoch) - *n;
            *n += 1;
            events.push(Event::DeltaApplied { lsn: lsns.start + i as u64, page: op.page, epoch });
        }
        self.inner.deliver(&mut events.into_iter().rev(), bit);
    }

    /// Number of live subscriptions.
    pub fn subscribers(&self) -> usize {
        self.inner.slots.lock().len()
    }

    /// Closes every subscription (they drain what they hold, then stay empty) and refuses new
    /// ones. Called when the state closes.
    pub fn close(&self) {
        let woken = {
            let mut slots = self.inner.slots.lock();
            self.inner.closed.store(true, Ordering::Release);
            for s in slots.iter() {
                s.counters.closed.store(true, Ordering::Release);
            }
            let woken = slots.iter().map(|s| s.counters.clone()).collect::<Vec<_>>();
            slots.clear();
            self.inner.refresh_mask(&slots);
            woken
        };
        // Waiters learn that no event will come any more.
        wake_all(woken);
    }
}

/// A subscriber's end: poll it (non-blocking) or wait on it. Dropping it unsubscribes.
#[derive(Debug)]
pub struct Subscription {
    id: u64,
    mask: u32,
    rx: Receiver<Event>,
    counters: Arc<Counters>,
    system: Weak<Inner>,
}

impl Subscription {
    /// The next queued event, if any (never blocks).
    pub fn try_recv(&self) -> Option<Event> {
        self.rx.try_recv().ok()
    }

    /// Waits up to `timeout` for an event. Returns `None` on timeout or once closed and empty.
    pub fn recv_timeout(&self, timeout: Duration) -> Option<Event> {
        self.rx.recv_timeout(timeout).ok()
    }

    /// Moves queued events into `out` without blocking; returns how many were written.
    pub fn drain_into(&self, out: &mut [Event]) -> usize {
        let mut n = 0;
        while n < out.len() {
            match self.rx.try_recv() {
                Ok(ev) => {
                    out[n] = ev;
                    n += 1;
                }
                Err(_) => break,
            }
        }
        n
    }

    /// Moves every queued event into a vector (never blocks).
    pub fn drain(&self) -> Vec<Event> {
        self.rx.try_iter().collect()
    }

    /// Events dropped by the overflow policy so far.
    pub fn dropped(&self) -> u64 {
        self.counters.dropped.load(Ordering::Relaxed)
    }

    /// True once an event was dropped under `Block` or `DropNewest` (the stream has a gap).
    pub fn is_lagged(&self) -> bool {
        self.counters.lagged.load(Ordering::Relaxed)
    }

    /// True once the state closed (or was dropped): no more events will come.
    pub fn is_closed(&self) -> bool {
        self.counters.closed.load(Ordering::Acquire)
    }

    /// The kinds this subscription receives.
    pub fn mask(&self) -> u32 {
        self.mask
    }

    /// Registers `f` as the subscription's wake-up (replacing any earlier one; `None` removes
    /// it). `f` is called on the emitting thread after events are queued for this subscription
    /// (once per emit, however many events it queued) and once when the state closes; it may
    /// run while the state's write lock is held, so it must return quickly and must not call
    /// into the state. If events are already queued, or the state already closed, `f` is
    /// called once before this returns, so a consumer that registers and then waits misses
    /// nothing. When this returns with `None`, no call of the old wake-up is in flight.
    pub fn set_notify(&self, f: Option<NotifyFn>) {
        let cell = &self.counters.notify;
        let mut slot = cell.f.lock();
        cell.set.store(f.is_some(), Ordering::Release);
        *slot = f;
        drop(slot);
        if !self.rx.is_empty() || self.is_closed() {
            cell.wake();
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        // First: once this returns no emitter is inside the wake-up, whose target the owner
        // may free right after dropping the subscription.
        self.set_notify(None);
        if let Some(inner) = self.system.upgrade() {
            let mut slots = inner.slots.lock();
            slots.retain(|s| s.id != self.id);
            inner.refresh_mask(&slots);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delta_ev(i: u64) -> Event {
        Event::DeltaApplied { lsn: i, page: PageId(1), epoch: i }
    }

    #[test]
    fn masks_filter_and_no_subscriber_means_inactive() {
        let es = EventSystem::new();
        assert!(!es.wants(EventKind::DeltaApplied));
        es.emit(delta_ev(1)); // nobody listens: dropped silently
        let s = es.subscribe(8, OverflowPolicy::DropNewest, EventKind::Checkpoint as u32).unwrap();
        assert!(es.wants(EventKind::Checkpoint) && !es.wants(EventKind::DeltaApplied));
        es.emit(delta_ev(2));
        es.emit(Event::Checkpoint { lsn: 5 });
        assert_eq!(s.drain(), vec![Event::Checkpoint { lsn: 5 }]);
        drop(s);
        assert!(!es.wants(EventKind::Checkpoint));
        assert_eq!(es.subscribers(), 0);
    }

    #[test]
    fn bad_arguments_are_rejected() {
        let es = EventSystem::new();
        assert!(es.subscribe(0, OverflowPolicy::DropOldest, EventKind::MASK_ALL).is_err());
        assert!(es.subscribe(EventSystem::MAX_CAPACITY + 1, OverflowPolicy::DropOldest, EventKind::MASK_ALL).is_err());
        assert!(es.subscribe(4, OverflowPolicy::DropOldest, 0).is_err());
        assert!(es.subscribe(4, OverflowPolicy::DropOldest, 0x40).is_err());
    }

    #[test]
    fn drop_oldest_keeps_the_latest() {
        let es = EventSystem::new();
        let s = es.subscribe(3, OverflowPolicy::DropOldest, EventKind::MASK_ALL).unwrap();
        for i in 1..=5 {
            es.emit(delta_ev(i));
        }
        assert_eq!(s.drain(), vec![delta_ev(3), delta_ev(4), delta_ev(5)]);
        assert_eq!(s.dropped(), 2);
        assert!(!s.is_lagged());
    }

    #[test]
    fn drop_newest_keeps_the_first_and_marks_lag() {
        let es = EventSystem::new();
        let s = es.subscribe(3, OverflowPolicy::DropNewest, EventKind::MASK_ALL).unwrap();
        for i in 1..=5 {
            es.emit(delta_ev(i));
        }
        assert_eq!(s.drain(), vec![delta_ev(1), delta_ev(2), delta_ev(3)]);
        assert_eq!(s.dropped(), 2);
        assert!(s.is_lagged());
    }

    #[test]
    fn block_waits_for_the_consumer_then_times_out() {
        let es = Arc::new(EventSystem::new());
        let s =
            es.subscribe(1, OverflowPolicy::Block { timeout: Duration::from_secs(10) }, EventKind::MASK_ALL).unwrap();
        es.emit(delta_ev(1));
        // The second emit blocks until the consumer takes the first.
        let es2 = es.clone();
        let t = std::thread::spawn(move || es2.emit(delta_ev(2)));
        assert_eq!(s.recv_timeout(Duration::from_secs(10)), Some(delta_ev(1)));
        t.join().unwrap();
        assert_eq!(s.recv_timeout(Duration::from_secs(10)), Some(delta_ev(2)));
        assert_eq!(s.dropped(), 0);

        // A consumer that never comes: the emit gives up after the timeout and counts it.
        let s2 =
            es.subscribe(1, OverflowPolicy::Block { timeout: Duration::from_millis(20) }, EventKind::MASK_ALL).unwrap();
        drop(s);
        es.emit(delta_ev(3));
        let t0 = std::time::Instant::now();
        es.emit(delta_ev(4));
        assert!(t0.elapsed() >= Duration::from_millis(20));
        assert_eq!(s2.drain(), vec![delta_ev(3)]);
        assert_eq!((s2.dropped(), s2.is_lagged()), (1, true));
    }

    #[test]
    fn notify_fires_after_events_are_queued_and_on_close() {
        use std::sync::atomic::AtomicUsize;
        let es = Arc::new(EventSystem::new());
        let s = es.subscribe(8, OverflowPolicy::DropOldest, EventKind::DeltaApplied as u32).unwrap();
        let calls = Arc::new(AtomicUsize::new(0));
        // The wake-up sees the event already queued: it runs after the send.
        let (tx, rx) = crossbeam_channel::unbounded();
        let (c, peek) = (calls.clone(), s.rx.clone());
        s.set_notify(Some(Box::new(move || {
            c.fetch_add(1, Ordering::SeqCst);
            tx.send(peek.len()).unwrap();
        })));
        assert_eq!(calls.load(Ordering::SeqCst), 0, "nothing queued yet: no call on registration");
        es.emit(delta_ev(1));
        assert_eq!((calls.load(Ordering::SeqCst), rx.try_recv().unwrap()), (1, 1));
        es.emit(Event::Checkpoint { lsn: 1 }); // a kind it does not receive: no wake-up
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        // From another thread, and a subscription without a wake-up is not affected.
        let other = es.subscribe(8, OverflowPolicy::DropOldest, EventKind::MASK_ALL).unwrap();
        let es2 = es.clone();
        std::thread::spawn(move || es2.emit(delta_ev(2))).join().unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        assert_eq!(other.drain(), vec![delta_ev(2)]);
        // Registering while events are queued calls it at once.
        let again = calls.clone();
        s.set_notify(Some(Box::new(move || {
            again.fetch_add(1, Ordering::SeqCst);
        })));
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        assert_eq!(s.drain(), vec![delta_ev(1), delta_ev(2)]);
        // Closing the state wakes it too.
        es.close();
        assert_eq!(calls.load(Ordering::SeqCst), 4);
        // Removed: no more calls, not even for a closed subscription.
        s.set_notify(None);
        assert_eq!(calls.load(Ordering::SeqCst), 4);
    }

    #[test]
    fn dropping_the_subscription_removes_its_notify() {
        let es = EventSystem::new();
        let s = es.subscribe(8, OverflowPolicy::DropOldest, EventKind::MASK_ALL).unwrap();
        let flag = Arc::new(AtomicBool::new(false));
        let f = flag.clone();
        s.set_notify(Some(Box::new(move || f.store(true, Ordering::SeqCst))));
        drop(s);
        es.emit(delta_ev(1));
        assert!(!flag.load(Ordering::SeqCst));
        assert_eq!(Arc::strong_count(&flag), 1, "the wake-up was released with the subscription");
    }

    #[test]
    fn subscriptions_survive_the_hub() {
        let es = EventSystem::new();
        let s = es.subscribe(4, OverflowPolicy::DropOldest, EventKind::MASK_ALL).unwrap();
        es.emit(delta_ev(1));
        es.close();
        assert!(s.is_closed());
        assert!(es.subscribe(4, OverflowPolicy::DropOldest, EventKind::MASK_ALL).is_err());
        assert_eq!(s.try_recv(), Some(delta_ev(1)));
        assert_eq!(s.try_recv(), None);

        let es = EventSystem::new();
        let s = es.subscribe(4, OverflowPolicy::DropOldest, EventKind::MASK_ALL).unwrap();
        drop(es);
        assert!(s.is_closed());
        assert_eq!(s.try_recv(), None);
        drop(s); // unsubscribing from a dropped hub is a no-op
    }
}
