//! Replay defence for Oblivious HTTP (RFC 9458 §6.5), for one replica: a window around
//! the gateway's clock that an inner request's `Date` must fall in, and the encapsulated
//! keys (`enc`) of the requests answered within it.
//!
//! A request is entered only after it decrypted, so a forger, who cannot produce a
//! request that decrypts, cannot poison the entry of a real one. An entry lives twice
//! the window: a request dated at the window's far edge stays refusable until its `Date`
//! leaves the window. Without a `Date` (RFC 9458 makes it a SHOULD), a request is
//! accepted and remembered for the same time unless `require_date` is set; a replay after
//! that is not caught, which `require_date = true` closes.
//!
//! The set is bounded ([`MAX_ENTRIES`]): when it is full of live entries, new requests
//! are refused (fail closed) rather than remembered badly.

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use sha2::{Digest as _, Sha256};

/// Most remembered requests (about 64 bytes each).
pub const MAX_ENTRIES: usize = 1 << 20;

/// What the replay check decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// First time seen, now remembered: forward it.
    Fresh,
    /// Answered before within the window.
    Replayed,
    /// `Date` outside the window, unparseable, or missing while required.
    DateOutside,
    /// Too many live entries to remember another.
    Full,
}

/// The window and what was seen in it.
#[derive(Debug)]
pub struct Replay {
    window: Duration,
    require_date: bool,
    seen: Mutex<Seen>,
}

#[derive(Debug, Default)]
struct Seen {
    order: VecDeque<(Instant, [u8; 16])>,
    keys: HashSet<[u8; 16]>,
}

impl Replay {
    /// A defence with `window` (each side of the gateway's clock).
    pub fn new(window: Duration, require_date: bool) -> Self {
        Self {
            window,
            require_date,
            seen: Mutex::default(),
        }
    }

    /// Checks an inner request's `Date` field, then its `enc`, entering it if fresh.
    pub fn check(&self, date: Option<&[u8]>, enc: &[u8], now: SystemTime) -> Verdict {
        match date {
            Some(value) => {
                let Some(date) = std::str::from_utf8(value)
                    .ok()
                    .and_then(|v| httpdate::parse_http_date(v.trim()).ok())
                else {
                    return Verdict::DateOutside;
                };
                let skew = match date.duration_since(now) {
                    Ok(ahead) => ahead,
                    Err(behind) => behind.duration(),
                };
                if skew > self.window {
                    return Verdict::DateOutside;
                }
            }
            None if self.require_date => return Verdict::DateOutside,
            None => {}
        }
        self.enter(enc, Instant::now())
    }

    fn enter(&self, enc: &[u8], now: Instant) -> Verdict {
        let mut key = [0u8; 16];
        key.copy_from_slice(&Sha256::digest(enc)[..16]);
        let mut seen = self
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let lifetime = self.window * 2;
        while let Some(&(at, old)) = seen.order.front() {
            if now.duration_since(at) <= lifetime {
                break;
            }
            seen.order.pop_front();
            seen.keys.remove(&old);
        }
        if seen.keys.contains(&key) {
            return Verdict::Replayed;
        }
        if seen.keys.len() >= MAX_ENTRIES {
            return Verdict::Full;
        }
        seen.keys.insert(key);
        seen.order.push_back((now, key));
        Verdict::Fresh
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_sight_within_the_window_is_a_replay_and_entries_expire() {
        let replay = Replay::new(Duration::from_secs(2), false);
        let t0 = Instant::now();
        assert_eq!(replay.enter(b"enc-1", t0), Verdict::Fresh);
        assert_eq!(
            replay.enter(b"enc-1", t0 + Duration::from_secs(3)),
            Verdict::Replayed
        );
        assert_eq!(
            replay.enter(b"enc-2", t0 + Duration::from_secs(3)),
            Verdict::Fresh
        );
        // Twice the window later, enc-1's entry is gone (its Date would be refused).
        assert_eq!(
            replay.enter(b"enc-1", t0 + Duration::from_secs(5)),
            Verdict::Fresh
        );
    }

    #[test]
    fn dates_outside_the_window_unparseable_or_missing_when_required_are_refused() {
        let now = SystemTime::now();
        let replay = Replay::new(Duration::from_secs(30), false);
        let date = |t: SystemTime| httpdate::fmt_http_date(t).into_bytes();
        assert_eq!(replay.check(Some(&date(now)), b"a", now), Verdict::Fresh);
        let late = now - Duration::from_secs(31);
        let early = now + Duration::from_secs(31);
        assert_eq!(
            replay.check(Some(&date(late)), b"b", now),
            Verdict::DateOutside
        );
        assert_eq!(
            replay.check(Some(&date(early)), b"c", now),
            Verdict::DateOutside
        );
        assert_eq!(
            replay.check(Some(b"yesterday"), b"d", now),
            Verdict::DateOutside
        );
        assert_eq!(replay.check(None, b"e", now), Verdict::Fresh);
        let strict = Replay::new(Duration::from_secs(30), true);
        assert_eq!(strict.check(None, b"f", now), Verdict::DateOutside);
        // A refused date does not enter its enc: the same enc with a good date is fresh.
        assert_eq!(replay.check(Some(&date(now)), b"b", now), Verdict::Fresh);
    }
}
