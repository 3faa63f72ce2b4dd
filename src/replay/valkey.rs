//! The seen-key store shared by every replica: Valkey or Redis, one
//! `SET <prefix><scope>:<hex digest> 1 NX PX <lifetime>` per request (the key is set only
//! if absent, and expires on its own, so the store needs no cleaning).
//!
//! Each worker thread keeps its own connection (a `ConnectionManager`, which reconnects
//! after a failure), created on first use on that worker's runtime. Every command is
//! bounded by `store_timeout_ms`; a failure or a timeout is an `Err` the caller turns
//! into the `store_unavailable` policy.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::thread::ThreadId;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::config::StoreUrl;

/// A Valkey/Redis server and the connections to it.
pub struct Valkey {
    url: StoreUrl,
    timeout: Duration,
    prefix: String,
    connections: Mutex<HashMap<ThreadId, ConnectionManager>>,
}

impl std::fmt::Debug for Valkey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Valkey")
            .field("url", &self.url)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Valkey {
    /// The store at `url` (checked by the configuration), asked within `timeout`.
    pub fn new(url: StoreUrl, timeout: Duration, prefix: String) -> Self {
        Self {
            url,
            timeout,
            prefix,
            connections: Mutex::default(),
        }
    }

    /// `Ok(true)` if the key was absent and is now set, `Ok(false)` if it was there.
    pub async fn enter(
        &self,
        scope: &str,
        digest: &[u8; 16],
        lifetime: Duration,
    ) -> Result<bool, String> {
        let key = self.key(scope, digest);
        let millis = u64::try_from(lifetime.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        let mut cmd = redis::cmd("SET");
        cmd.arg(key).arg(1).arg("NX").arg("PX").arg(millis);
        let mut connection = self.connection()?;
        let reply = tokio::time::timeout(
            self.timeout,
            cmd.query_async::<redis::Value>(&mut connection),
        )
        .await
        .map_err(|_| format!("no answer in {:?}", self.timeout))?
        .map_err(|e| e.to_string())?;
        match reply {
            redis::Value::Okay | redis::Value::SimpleString(_) => Ok(true),
            redis::Value::Nil => Ok(false),
            other => Err(format!("unexpected reply to SET NX: {other:?}")),
        }
    }

    fn key(&self, scope: &str, digest: &[u8; 16]) -> String {
        let mut key = String::with_capacity(self.prefix.len() + scope.len() + 33);
        key.push_str(&self.prefix);
        key.push_str(scope);
        key.push(':');
        for b in digest {
            let _ = write!(key, "{b:02x}");
        }
        key
    }

    /// This worker's connection, made (lazily: it connects on first command) if it has
    /// none yet.
    fn connection(&self) -> Result<ConnectionManager, String> {
        let mut connections = self
            .connections
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let thread = std::thread::current().id();
        if let Some(c) = connections.get(&thread) {
            return Ok(c.clone());
        }
        let client = redis::Client::open(self.url.0.as_str()).map_err(|e| e.to_string())?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_secs(1));
        let manager =
            ConnectionManager::new_lazy_with_config(client, config).map_err(|e| e.to_string())?;
        connections.insert(thread, manager.clone());
        Ok(manager)
    }
}
