//! Replay defence: the encapsulated keys (`enc`) of requests already answered, kept for
//! a window, so that a captured request sent again within it is refused instead of
//! forwarded twice.
//!
//! Oblivious HTTP uses it with a `Date` window ([`window`], RFC 9458 §6.5); the
//! Tink-format API path uses it per account when the account sets `replay_window_s`.
//! Either way a request is entered only after it decrypted, so a forger, who cannot
//! produce a request that decrypts, cannot poison the entry of a real one.
//!
//! The [`Store`] is in memory for one replica ([`memory`]) or Valkey/Redis shared by
//! every replica ([`valkey`]: `SET key 1 NX PX lifetime`). When the shared store cannot
//! be reached, `store_unavailable` decides: refuse every request, let idempotent
//! methods through (the default: a non-idempotent request is never forwarded unchecked),
//! or let everything through.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use http::Method;
use sha2::{Digest as _, Sha256};

pub mod memory;
pub mod valkey;
pub mod window;

/// What the replay check decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// First time seen, now remembered: forward it.
    Fresh,
    /// The store could not be asked, and `store_unavailable` lets this method through.
    Unchecked,
    /// Answered before within the window.
    Replayed,
    /// `Date` outside the window, unparseable, or missing while required (OHTTP only).
    DateOutside,
    /// The in-memory store is full of live entries.
    Full,
    /// The store could not be asked, and `store_unavailable` refuses this method.
    StoreUnavailable,
}

impl Verdict {
    /// Whether the request may go on to the upstream.
    pub fn forwards(self) -> bool {
        matches!(self, Verdict::Fresh | Verdict::Unchecked)
    }
}

/// What to do with a request when the shared store cannot be reached in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Unavailable {
    /// Refuse every request (503, code 5007).
    Refuse,
    /// Forward idempotent methods (RFC 9110 §9.2.2: GET, HEAD, OPTIONS, TRACE, PUT,
    /// DELETE) unchecked; refuse the others.
    #[default]
    AllowIdempotent,
    /// Forward every request unchecked.
    Allow,
}

impl Unavailable {
    /// The configuration spelling.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "refuse" => Some(Self::Refuse),
            "allow_idempotent" => Some(Self::AllowIdempotent),
            "allow" => Some(Self::Allow),
            _ => None,
        }
    }

    fn lets_through(self, method: &Method) -> bool {
        match self {
            Self::Refuse => false,
            Self::Allow => true,
            Self::AllowIdempotent => method.is_idempotent(),
        }
    }
}

/// Where seen keys are kept.
#[derive(Debug)]
enum Backend {
    Memory(memory::Memory),
    Valkey(valkey::Valkey),
}

/// The seen-key store every worker (and, through Valkey/Redis, every replica) shares.
#[derive(Debug)]
pub struct Store {
    backend: Backend,
    unavailable: Unavailable,
    /// Whether the last request to the shared store failed (logged on each change).
    down: AtomicBool,
}

impl Store {
    /// An in-memory store, for one replica.
    pub fn memory() -> Self {
        Self::with(
            Backend::Memory(memory::Memory::default()),
            Unavailable::default(),
        )
    }

    /// The store `[replay]` configures.
    pub fn from_config(config: &crate::config::ReplayStore) -> Self {
        let backend = match &config.url {
            None => Backend::Memory(memory::Memory::default()),
            Some(url) => Backend::Valkey(valkey::Valkey::new(
                url.clone(),
                config.timeout,
                config.key_prefix.clone(),
            )),
        };
        Self::with(backend, config.unavailable)
    }

    fn with(backend: Backend, unavailable: Unavailable) -> Self {
        Self {
            backend,
            unavailable,
            down: AtomicBool::new(false),
        }
    }

    /// Enters `enc` under `scope` (`ohttp`, or `tink:` and the account id) for
    /// `lifetime`, unless it is already there.
    pub async fn enter(
        &self,
        scope: &str,
        enc: &[u8],
        lifetime: Duration,
        method: &Method,
    ) -> Verdict {
        let digest = digest(enc);
        let answer = match &self.backend {
            Backend::Memory(m) => return m.enter(scope, &digest, lifetime),
            Backend::Valkey(v) => v.enter(scope, &digest, lifetime).await,
        };
        match answer {
            Ok(fresh) => {
                if self.down.swap(false, Ordering::Relaxed) {
                    tracing::info!("replay store reachable again");
                }
                if fresh {
                    Verdict::Fresh
                } else {
                    Verdict::Replayed
                }
            }
            Err(reason) => {
                if !self.down.swap(true, Ordering::Relaxed) {
                    tracing::warn!(%reason, policy = ?self.unavailable, "replay store unreachable");
                }
                if self.unavailable.lets_through(method) {
                    Verdict::Unchecked
                } else {
                    Verdict::StoreUnavailable
                }
            }
        }
    }
}

/// The first 16 bytes of SHA-256 of `enc`: what is kept instead of the key itself.
fn digest(enc: &[u8]) -> [u8; 16] {
    let mut out = [0u8; 16];
    out.copy_from_slice(&Sha256::digest(enc)[..16]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_idempotent_methods_pass_an_unreachable_store_by_default() {
        let policy = Unavailable::default();
        for m in [Method::GET, Method::HEAD, Method::PUT, Method::DELETE] {
            assert!(policy.lets_through(&m), "{m}");
        }
        for m in [Method::POST, Method::PATCH] {
            assert!(!policy.lets_through(&m), "{m}");
        }
        assert!(!Unavailable::Refuse.lets_through(&Method::GET));
        assert!(Unavailable::Allow.lets_through(&Method::POST));
        assert_eq!(Unavailable::parse("refuse"), Some(Unavailable::Refuse));
        assert_eq!(Unavailable::parse("open"), None);
    }

    #[test]
    fn store_urls_never_show_a_password() {
        use crate::config::StoreUrl;
        for (url, shown) in [
            (
                "redis://:hunter2@valkey.internal:6379/0",
                "redis://valkey.internal:6379",
            ),
            ("redis://user:p%40ss@host/1", "redis://host"),
            (
                "unix:///run/valkey.sock?pass=hunter2@prod",
                "unix:///run/valkey.sock",
            ),
            (
                "valkey+unix:///run/v.sock#hunter2",
                "valkey+unix:///run/v.sock",
            ),
            ("redis://:hunt?er2@host", "redis://<unparsed>"),
            ("redis://:hunter2@[::1", "redis://<unparsed>"),
            ("garbage-hunter2", "<unparsed>"),
        ] {
            let debug = format!("{:?}", StoreUrl(url.into()));
            assert_eq!(debug, shown);
            assert!(
                !debug.contains("hunter2") && !debug.contains("prod"),
                "{debug}"
            );
        }
    }

    /// The shared store's timeout path, with nothing listening: a POST is refused, a GET
    /// goes through unchecked (the default policy), and neither waits long.
    #[tokio::test]
    async fn an_unreachable_valkey_answers_by_policy_within_its_timeout() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let config = crate::config::ReplayStore {
            url: Some(crate::config::StoreUrl(format!("redis://127.0.0.1:{port}"))),
            timeout: Duration::from_millis(200),
            unavailable: Unavailable::AllowIdempotent,
            key_prefix: "t:".into(),
        };
        let store = Store::from_config(&config);
        let started = std::time::Instant::now();
        let life = Duration::from_secs(10);
        assert_eq!(
            store.enter("ohttp", b"enc", life, &Method::POST).await,
            Verdict::StoreUnavailable
        );
        assert_eq!(
            store.enter("ohttp", b"enc", life, &Method::GET).await,
            Verdict::Unchecked
        );
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}
