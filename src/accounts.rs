//! Accounts: which customers have encryption enabled, and the public keys the
//! gateway seals their responses to.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::envelope::{self, Prefix, PublicKey, SealError, Suite};

/// The most public keys one account may register.
pub const MAX_PUBLIC_KEYS: usize = 20;

/// A customer's public key, with the Tink prefix its keyset declares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipientKey {
    /// The X25519 public key.
    pub key: PublicKey,
    /// `Prefix::Tink(id)` when the customer gave a Tink keyset of output prefix TINK.
    pub prefix: Prefix,
}

/// One account's encryption settings.
#[derive(Debug)]
pub struct Account {
    id: String,
    encryption: bool,
    public_keys: Vec<RecipientKey>,
    /// The suites a request may be sealed with; `None`: any server key's.
    request_suites: Option<Arc<[Suite]>>,
    /// How long a request's encapsulated key is remembered to refuse its replay.
    replay_window: Option<Duration>,
}

impl Account {
    /// An account. With `encryption` on, `public_keys` must not be empty (the config
    /// checks this); the first key seals responses.
    pub fn new(id: String, encryption: bool, public_keys: Vec<RecipientKey>) -> Self {
        Self {
            id,
            encryption,
            public_keys,
            request_suites: None,
            replay_window: None,
        }
    }

    /// Refuses a request whose encapsulated key was seen within `window`
    /// (`replay_window_s`).
    pub fn with_replay_window(mut self, window: Duration) -> Self {
        self.replay_window = Some(window);
        self
    }

    /// Restricts the suites a request may be sealed with (`request_suites`).
    pub fn with_request_suites(mut self, suites: Vec<Suite>) -> Self {
        self.request_suites = Some(suites.into());
        self
    }

    /// The account id, which is also the HPKE `info`.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Whether encrypted traffic is accepted for this account.
    pub fn encryption_enabled(&self) -> bool {
        self.encryption
    }

    /// The registered public keys, the response key first.
    pub fn public_keys(&self) -> &[RecipientKey] {
        &self.public_keys
    }

    /// The sealer for this account's responses, if encryption is enabled.
    pub fn response_sealer(&self) -> Option<ResponseSealer> {
        if !self.encryption {
            return None;
        }
        self.public_keys.first().map(|k| ResponseSealer {
            recipient: k.clone(),
            info: Bytes::copy_from_slice(self.id.as_bytes()),
            request_suites: self.request_suites.clone(),
            replay_window: self.replay_window,
        })
    }
}

/// Seals a response to the account that sent the request, with the same `info`.
/// The only way to get one is from the account, so a response cannot be sealed to
/// another account's key.
#[derive(Debug, Clone)]
pub struct ResponseSealer {
    recipient: RecipientKey,
    info: Bytes,
    request_suites: Option<Arc<[Suite]>>,
    replay_window: Option<Duration>,
}

impl ResponseSealer {
    /// The HPKE `info` (the account id bytes).
    pub fn info(&self) -> &[u8] {
        &self.info
    }

    /// The account's replay window, if it has one.
    pub fn replay_window(&self) -> Option<Duration> {
        self.replay_window
    }

    /// Whether the account accepts requests sealed with `suite`.
    pub fn allows_request_suite(&self, suite: Suite) -> bool {
        self.request_suites
            .as_deref()
            .is_none_or(|allowed| allowed.contains(&suite))
    }

    /// Seals a response body.
    pub fn seal(&self, plaintext: &[u8]) -> Result<Vec<u8>, SealError> {
        envelope::seal(
            &self.recipient.key,
            self.recipient.prefix,
            &self.info,
            plaintext,
        )
    }

    /// Bytes to reserve in front of a body for [`ResponseSealer::seal_in_place`].
    pub fn header_len(&self) -> usize {
        self.recipient.key.header_len(self.recipient.prefix)
    }

    /// Seals `buf` (`header_len()` reserved bytes, then the body) in place.
    pub fn seal_in_place(&self, buf: &mut Vec<u8>) -> Result<(), SealError> {
        envelope::seal_in_place(&self.recipient.key, self.recipient.prefix, &self.info, buf)
    }
}

/// All configured accounts, by id. An account that is not configured has encryption off.
#[derive(Debug, Default)]
pub struct Accounts {
    by_id: HashMap<String, Arc<Account>>,
}

impl Accounts {
    /// Builds the table. Ids are unique (the config checks this).
    pub fn new(accounts: impl IntoIterator<Item = Account>) -> Self {
        Self {
            by_id: accounts
                .into_iter()
                .map(|a| (a.id.clone(), Arc::new(a)))
                .collect(),
        }
    }

    /// Looks an account up by id.
    pub fn get(&self, id: &str) -> Option<&Arc<Account>> {
        self.by_id.get(id)
    }

    /// Number of accounts.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// True if no account is configured.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}
