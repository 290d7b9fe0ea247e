//! The clock behind [`Timer`](super::Timer)s: the CPU's time-stamp counter where it is safe to
//! use, `Instant` elsewhere.
//!
//! Two `Instant::now()` calls cost about 40 ns, a fifth of an in-memory route; two `rdtsc`
//! reads cost a few nanoseconds. The TSC is used only on x86_64 Linux when the kernel reports it
//! invariant (`constant_tsc` and `nonstop_tsc`, or `tsc` as the kernel's own clocksource, which
//! the kernel only keeps when the TSC is synchronised across cores). Its rate is calibrated once
//! per process against `Instant` (a 2 ms spin on first use). `MMSB_CLOCK=instant` in the
//! environment forces the portable clock.

use std::sync::OnceLock;
use std::time::Instant;

use serde::Serialize;

/// Which clock timers read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ClockKind {
    /// The x86_64 time-stamp counter, calibrated against `Instant`.
    Tsc,
    /// `std::time::Instant` (portable fallback).
    Instant,
}

impl ClockKind {
    /// Short name used in exports.
    pub fn name(self) -> &'static str {
        match self {
            ClockKind::Tsc => "tsc",
            ClockKind::Instant => "instant",
        }
    }
}

/// A calibrated clock: `now` returns ticks, `ticks_to_ns` converts a difference of ticks.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    kind: ClockKind,
    /// Nanoseconds per tick in 32.32 fixed point (1 << 32 for `Instant`, whose ticks are ns).
    ns_per_tick_q32: u64,
}

static CLOCK: OnceLock<Clock> = OnceLock::new();
static EPOCH: OnceLock<Instant> = OnceLock::new();

impl Clock {
    /// The process-wide clock, calibrated on first use.
    pub(crate) fn get() -> Clock {
        *CLOCK.get_or_init(Clock::calibrate)
    }

    pub(crate) fn kind(self) -> ClockKind {
        self.kind
    }

    /// Current time in ticks.
    #[inline(always)]
    pub(crate) fn now(self) -> u64 {
        #[cfg(target_arch = "x86_64")]
        if self.kind == ClockKind::Tsc {
            // SAFETY: `rdtsc` has no preconditions on x86_64; it only reads the counter.
            return unsafe { core::arch::x86_64::_rdtsc() };
        }
        instant_ns()
    }

    /// Converts a tick difference to nanoseconds.
    #[inline(always)]
    pub(crate) fn ticks_to_ns(self, ticks: u64) -> u64 {
        u64::try_from((u128::from(ticks) * u128::from(self.ns_per_tick_q32)) >> 32).unwrap_or(u64::MAX)
    }

    fn portable() -> Clock {
        Clock { kind: ClockKind::Instant, ns_per_tick_q32: 1 << 32 }
    }

    fn calibrate() -> Clock {
        let _ = instant_ns(); // pin the epoch before any timer can start
        if std::env::var_os("MMSB_CLOCK").is_some_and(|v| v == "instant") || !tsc_is_invariant() {
            return Clock::portable();
        }
        Clock::calibrate_tsc().unwrap_or_else(Clock::portable)
    }

    #[cfg(target_arch = "x86_64")]
    fn calibrate_tsc() -> Option<Clock> {
        let tsc = || {
            // SAFETY: as in `now`.
            unsafe { core::arch::x86_64::_rdtsc() }
        };
        let (t0, c0) = (Instant::now(), tsc());
        let mut t1;
        let mut c1;
        loop {
            c1 = tsc();
            t1 = Instant::now();
            if t1 - t0 >= std::time::Duration::from_millis(2) {
                break;
            }
        }
        let ticks = c1.checked_sub(c0).filter(|&t| t > 0)?;
        let ns = (t1 - t0).as_nanos();
        let q32 = (ns << 32) / u128::from(ticks);
        // A TSC slower than 10 MHz or faster than 100 GHz means the reading is wrong.
        if !((1u128 << 32) / 100..=(100u128 << 32)).contains(&q32) {
            return None;
        }
        Some(Clock { kind: ClockKind::Tsc, ns_per_tick_q32: u64::try_from(q32).ok()? })
    }

    #[cfg(not(target_arch = "x86_64"))]
    fn calibrate_tsc() -> Option<Clock> {
        None
    }
}

/// Nanoseconds since a process-wide epoch.
#[inline]
fn instant_ns() -> u64 {
    // Saturates after 584 years of uptime.
    u64::try_from(EPOCH.get_or_init(Instant::now).elapsed().as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn tsc_is_invariant() -> bool {
    let clocksource = std::fs::read_to_string("/sys/devices/system/clocksource/clocksource0/current_clocksource")
        .is_ok_and(|s| s.trim() == "tsc");
    if clocksource {
        return true;
    }
    let Ok(info) = std::fs::read_to_string("/proc/cpuinfo") else { return false };
    let flags = info.lines().find(|l| l.starts_with("flags")).unwrap_or("");
    let has = |f: &str| flags.split_whitespace().any(|w| w == f);
    has("constant_tsc") && has("nonstop_tsc")
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
fn tsc_is_invariant() -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn clock_measures_a_sleep() {
        let c = Clock::get();
        let a = c.now();
        std::thread::sleep(Duration::from_millis(20));
        let ns = c.ticks_to_ns(c.now().saturating_sub(a));
        // Sleep overshoots, never undershoots; allow a loaded machine 1 s of slack.
        assert!((20_000_000..1_000_000_000).contains(&ns), "{ns} ns for a 20 ms sleep ({:?})", c.kind());
    }

    #[test]
    fn portable_clock_ticks_are_nanoseconds() {
        let c = Clock::portable();
        assert_eq!(c.ticks_to_ns(12_345), 12_345);
    }

    #[test]
    fn tick_conversion_saturates_instead_of_wrapping() {
        // 100 ns per tick (the slowest TSC calibration accepts): u64::MAX ticks overflow u64 ns.
        let slow = Clock { kind: ClockKind::Tsc, ns_per_tick_q32: 100 << 32 };
        assert_eq!(slow.ticks_to_ns(u64::MAX), u64::MAX);
        assert_eq!(slow.ticks_to_ns(3), 300);
    }
}
