//! The in-memory seen-key store, for one replica: bounded ([`MAX_ENTRIES`]); when it is
//! full of live entries new requests are refused (fail closed) rather than remembered
//! badly.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};

use super::Verdict;

/// Most remembered requests (about 80 bytes each).
pub const MAX_ENTRIES: usize = 1 << 20;

/// Seen keys and when each expires.
#[derive(Debug, Default)]
pub struct Memory {
    seen: Mutex<Seen>,
}

#[derive(Debug, Default)]
struct Seen {
    /// In the order entered; lifetimes differ by scope, so an entry may outlive one
    /// behind it, which only delays that one's removal.
    order: VecDeque<(Instant, [u8; 16])>,
    expiry: HashMap<[u8; 16], Instant>,
    /// The earliest time the next sweep may run.
    next_sweep: Option<Instant>,
}

impl Memory {
    /// Enters `digest` under `scope` for `lifetime`, unless a live entry has it.
    pub fn enter(&self, scope: &str, digest: &[u8; 16], lifetime: Duration) -> Verdict {
        self.enter_at(scope, digest, lifetime, Instant::now())
    }

    fn enter_at(
        &self,
        scope: &str,
        digest: &[u8; 16],
        lifetime: Duration,
        now: Instant,
    ) -> Verdict {
        let key = scoped(scope, digest);
        let mut seen = self
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        while let Some(&(expires, old)) = seen.order.front() {
            if expires > now {
                break;
            }
            seen.order.pop_front();
            if seen.expiry.get(&old).is_some_and(|&e| e <= now) {
                seen.expiry.remove(&old);
            }
        }
        if seen.expiry.get(&key).is_some_and(|&e| e > now) {
            return Verdict::Replayed;
        }
        // Entries of a short-lived scope may be dead behind a long-lived one at the front
        // of the queue, and a key entered again leaves its old place in the queue behind:
        // when the store looks full, or the queue has grown past twice the bound, drop
        // every dead entry, at most once a second (a store full of live entries then
        // answers `Full` without sweeping on every request).
        let crowded = seen.expiry.len() >= MAX_ENTRIES || seen.order.len() > 2 * MAX_ENTRIES;
        if crowded && seen.next_sweep.is_none_or(|at| now >= at) {
            seen.next_sweep = Some(now + Duration::from_secs(1));
            seen.expiry.retain(|_, e| *e > now);
            let Seen { order, expiry, .. } = &mut *seen;
            order.retain(|(e, k)| expiry.get(k) == Some(e));
        }
        if seen.expiry.len() >= MAX_ENTRIES {
            return Verdict::Full;
        }
        let expires = now + lifetime;
        seen.expiry.insert(key, expires);
        seen.order.push_back((expires, key));
        Verdict::Fresh
    }
}

/// One key for a scope and a digest: the same `enc` under two accounts is two entries.
fn scoped(scope: &str, digest: &[u8; 16]) -> [u8; 16] {
    let mut h = Sha256::new();
    h.update(scope.as_bytes());
    h.update([0]);
    h.update(digest);
    let mut out = [0u8; 16];
    out.copy_from_slice(&h.finalize()[..16]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_sight_within_the_lifetime_is_a_replay_and_entries_expire() {
        let memory = Memory::default();
        let life = Duration::from_secs(4);
        let t0 = Instant::now();
        let (a, b) = ([1u8; 16], [2u8; 16]);
        assert_eq!(memory.enter_at("ohttp", &a, life, t0), Verdict::Fresh);
        let t3 = t0 + Duration::from_secs(3);
        assert_eq!(memory.enter_at("ohttp", &a, life, t3), Verdict::Replayed);
        assert_eq!(memory.enter_at("ohttp", &b, life, t3), Verdict::Fresh);
        // The same enc under another scope (account) is another entry.
        assert_eq!(memory.enter_at("tink:B", &a, life, t3), Verdict::Fresh);
        // After its lifetime, a's entry is gone.
        let t5 = t0 + Duration::from_secs(5);
        assert_eq!(memory.enter_at("ohttp", &a, life, t5), Verdict::Fresh);
        assert_eq!(memory.enter_at("ohttp", &a, life, t5), Verdict::Replayed);
    }

    #[test]
    fn dead_entries_behind_a_long_lived_one_do_not_fill_the_store() {
        let memory = Memory::default();
        let t0 = Instant::now();
        assert_eq!(
            memory.enter_at("long", &[0; 16], Duration::from_secs(3600), t0),
            Verdict::Fresh
        );
        for i in 1..MAX_ENTRIES as u32 {
            let mut d = [0u8; 16];
            d[..4].copy_from_slice(&i.to_be_bytes());
            assert_eq!(
                memory.enter_at("short", &d, Duration::from_secs(2), t0),
                Verdict::Fresh
            );
        }
        let t3 = t0 + Duration::from_secs(3);
        assert_eq!(
            memory.enter_at("short", &[9; 16], Duration::from_secs(2), t3),
            Verdict::Fresh
        );
        assert_eq!(
            memory.enter_at("long", &[0; 16], Duration::from_secs(3600), t3),
            Verdict::Replayed
        );
    }

    #[test]
    fn a_short_lived_entry_behind_a_long_lived_one_still_expires() {
        let memory = Memory::default();
        let t0 = Instant::now();
        let (a, b) = ([1u8; 16], [2u8; 16]);
        assert_eq!(
            memory.enter_at("x", &a, Duration::from_secs(60), t0),
            Verdict::Fresh
        );
        assert_eq!(
            memory.enter_at("y", &b, Duration::from_secs(2), t0),
            Verdict::Fresh
        );
        let t3 = t0 + Duration::from_secs(3);
        assert_eq!(
            memory.enter_at("y", &b, Duration::from_secs(2), t3),
            Verdict::Fresh
        );
        assert_eq!(
            memory.enter_at("x", &a, Duration::from_secs(60), t3),
            Verdict::Replayed
        );
    }
}
