//! Key files and the server's keyring: reading secrets from owner-only files, and the
//! keys the gateway opens requests with. The formats themselves (PKCS#8, SPKI, raw,
//! Tink keysets) are the envelope crate's [`hpke_envelope::formats`], re-exported here.

use std::time::SystemTime;

use bytes::{Bytes, BytesMut};
use zeroize::{Zeroize, ZeroizeOnDrop};

pub use hpke_envelope::formats::{
    FormatError, LoadedPrivateKey, parse_private_key, parse_private_key_for, parse_public_key,
    parse_public_key_for, private_key_encrypted_pem, private_key_pem, private_keyset_json,
    public_key_pem, public_key_raw_base64, public_keyset_json, public_keyset_json_of,
};

pub use hpke_keyfiles::{
    FileError, read_passphrase, read_public_file, read_secret_file, write_secret_file,
};

use crate::envelope::{self, OpenError, Prefix, PrivateKey, PublicKey, TINK_PREFIX_LEN};

/// Why a key could not be used. Messages name the problem, never key bytes.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The file could not be read, or is not owner-only.
    #[error(transparent)]
    File(#[from] FileError),
    /// The bytes are not a usable key.
    #[error(transparent)]
    Format(#[from] FormatError),
}

/// Where a server key is in its rotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyState {
    /// The key clients should encrypt to: published first, and decrypts.
    #[default]
    Primary,
    /// Still decrypts and is still published (until its `not_after`), but is not the
    /// one clients should pick: the overlap after a rotation.
    DecryptOnly,
    /// Neither decrypts nor is published; kept in the configuration as a record.
    Retired,
}

impl KeyState {
    /// The name used in the configuration file.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Primary => "primary",
            Self::DecryptOnly => "decrypt-only",
            Self::Retired => "retired",
        }
    }
}

/// One of the gateway's own key pairs.
#[derive(Debug)]
pub struct ServerKey {
    id: Option<u32>,
    ohttp_key_id: u8,
    key: PrivateKey,
    state: KeyState,
    not_after: Option<SystemTime>,
    written_at: SystemTime,
}

impl ServerKey {
    /// A primary key with a Tink key id (`None` accepts any id in a Tink prefix, for
    /// the CLI) and no expiry.
    pub fn new(id: Option<u32>, key: PrivateKey) -> Self {
        Self {
            id,
            ohttp_key_id: default_ohttp_key_id(id),
            key,
            state: KeyState::Primary,
            not_after: None,
            written_at: SystemTime::now(),
        }
    }

    /// The same key, noting when its file was last written (for a key that `keys rotate`
    /// made, when it was made); without it, the key counts from when it was made here.
    #[must_use]
    pub fn with_written_at(mut self, written_at: SystemTime) -> Self {
        self.written_at = written_at;
        self
    }

    /// The same key with a rotation state and an optional end of validity.
    #[must_use]
    pub fn with_lifecycle(mut self, state: KeyState, not_after: Option<SystemTime>) -> Self {
        self.state = state;
        self.not_after = not_after;
        self
    }

    /// The same key with its Oblivious HTTP key id (`ohttp_key_id`).
    #[must_use]
    pub fn with_ohttp_key_id(mut self, key_id: u8) -> Self {
        self.ohttp_key_id = key_id;
        self
    }

    /// The Tink key id.
    pub fn id(&self) -> Option<u32> {
        self.id
    }

    /// The private key.
    pub(crate) fn private_key(&self) -> &PrivateKey {
        &self.key
    }

    /// The key's id in Oblivious HTTP key configurations (RFC 9458 §3.1).
    pub fn ohttp_key_id(&self) -> u8 {
        self.ohttp_key_id
    }

    /// The public half.
    pub fn public_key(&self) -> PublicKey {
        self.key.public_key()
    }

    /// The rotation state.
    pub fn state(&self) -> KeyState {
        self.state
    }

    /// After this instant the key neither decrypts nor is published.
    pub fn not_after(&self) -> Option<SystemTime> {
        self.not_after
    }

    /// When its file was last written, if known; else when the key was loaded.
    pub fn written_at(&self) -> SystemTime {
        self.written_at
    }

    /// True if the key decrypts at `now`: not retired and not past its `not_after`.
    pub fn valid_at(&self, now: SystemTime) -> bool {
        self.state != KeyState::Retired && self.not_after.is_none_or(|end| now < end)
    }

    fn matches(&self, id: u32) -> bool {
        self.id.is_none_or(|own| own == id)
    }
}

/// A key's Oblivious HTTP key id when `ohttp_key_id` is not set: the low eight bits of
/// its Tink id (keys 1, 2, 3 are OHTTP keys 1, 2, 3), 0 without one.
pub fn default_ohttp_key_id(id: Option<u32>) -> u8 {
    id.map_or(0, |id| (id & 0xff) as u8)
}

/// How many keys of one KEM a RAW envelope (no Tink prefix) is tried against, at most:
/// each try costs a decapsulation, and X-Wing's is the dearer. More live keys of a KEM
/// than this are refused by the configuration.
pub const RAW_TRIALS_PER_KEM: usize = 8;

/// The gateway's private keys, several during a rotation.
#[derive(Debug, Default)]
pub struct ServerKeys {
    keys: Vec<ServerKey>,
}

impl ServerKeys {
    /// A keyring of the given keys.
    pub fn new(keys: Vec<ServerKey>) -> Self {
        Self { keys }
    }

    /// The keys, in configuration order.
    pub fn iter(&self) -> impl Iterator<Item = &ServerKey> {
        self.keys.iter()
    }

    /// True if a key has this Tink key id.
    pub fn has_id(&self, id: u32) -> bool {
        self.keys.iter().any(|k| k.id == Some(id))
    }

    /// The key that decrypts at `now` with Oblivious HTTP key id `key_id` (the
    /// configuration keeps them unique among keys that are not retired).
    pub fn by_ohttp_key_id(&self, key_id: u8, now: SystemTime) -> Option<&ServerKey> {
        self.keys
            .iter()
            .find(|k| k.ohttp_key_id == key_id && k.valid_at(now))
    }

    /// The keys to publish at `now`: the primary first, then the other keys that still
    /// decrypt, in configuration order.
    pub fn published(&self, now: SystemTime) -> Vec<&ServerKey> {
        let mut keys: Vec<&ServerKey> = self.keys.iter().filter(|k| k.valid_at(now)).collect();
        keys.sort_by_key(|k| k.state != KeyState::Primary);
        keys
    }

    /// Opens a request envelope, as Tink's keyset `HybridDecrypt` does: a ciphertext
    /// whose first five bytes are a Tink prefix is tried with the keys of that id; then
    /// the whole ciphertext is tried as RAW against the keys whose KEM it is long enough
    /// for (an X-Wing envelope is at least 1,136 bytes), the primary first, at most
    /// [`RAW_TRIALS_PER_KEM`] keys of each KEM. The plaintext is decrypted in place and
    /// returned as a slice of `sealed`'s allocation.
    ///
    /// That allocation is wiped (all of its capacity) when the last `Bytes` sharing it
    /// drops, and on failure before this returns: callers need not wipe anything. A copy
    /// a caller makes (`to_vec`, `BytesMut::from`) is the caller's to wipe.
    ///
    /// Keys that are retired or past their `not_after` are not tried.
    pub fn open(&self, info: &[u8], sealed: BytesMut) -> Result<Bytes, OpenError> {
        self.open_at(SystemTime::now(), info, sealed)
    }

    /// [`ServerKeys::open`] as of `now`.
    pub fn open_at(
        &self,
        now: SystemTime,
        info: &[u8],
        sealed: BytesMut,
    ) -> Result<Bytes, OpenError> {
        self.open_at_with_suite(now, info, sealed)
            .map(|(plaintext, _)| plaintext)
    }

    /// [`ServerKeys::open`], also saying the suite of the key that opened it (for an
    /// account's `request_suites`).
    pub fn open_with_suite(
        &self,
        info: &[u8],
        sealed: BytesMut,
    ) -> Result<(Bytes, envelope::Suite), OpenError> {
        self.open_at_with_suite(SystemTime::now(), info, sealed)
    }

    /// [`ServerKeys::open_with_suite`] as of `now`.
    pub fn open_at_with_suite(
        &self,
        now: SystemTime,
        info: &[u8],
        sealed: BytesMut,
    ) -> Result<(Bytes, envelope::Suite), OpenError> {
        // A uniquely owned `BytesMut` (as the middleware builds it) gives up its
        // allocation without a copy.
        let mut sealed = WipedOnDrop(Vec::from(sealed));
        let attempts = self.attempts(now, &sealed.0);
        // A backend that may write into the buffer on a failed open gets a pristine copy
        // back before the next try (only when there is a next try).
        let pristine = (!envelope::OPEN_KEEPS_INPUT_ON_FAILURE && attempts.len() > 1)
            .then(|| sealed.0.clone());
        let mut last = OpenError::Authentication;
        for (i, (key, offset)) in attempts.iter().enumerate() {
            match envelope::open_in_place(&key.key, info, &mut sealed.0[*offset..]) {
                Ok(pt) => {
                    let suite = key.key.suite();
                    let start = offset + suite.kem.enc_len();
                    let end = start + pt.len();
                    return Ok((Bytes::from_owner(sealed).slice(start..end), suite));
                }
                Err(e) => last = e,
            }
            if let Some(copy) = &pristine
                && i + 1 < attempts.len()
            {
                sealed.0.copy_from_slice(copy);
            }
        }
        Err(last)
    }
}

impl ServerKeys {
    /// The keys [`ServerKeys::open_at_with_suite`] tries on `sealed`, in order, each with
    /// the offset of the envelope after a Tink prefix: the keys a Tink prefix names,
    /// then the RAW trials (primary first, keys whose KEM `sealed` is long enough for, at
    /// most [`RAW_TRIALS_PER_KEM`] per KEM).
    fn attempts(&self, now: SystemTime, sealed: &[u8]) -> Vec<(&ServerKey, usize)> {
        let usable = || self.keys.iter().filter(move |k| k.valid_at(now));
        let mut attempts: Vec<(&ServerKey, usize)> = Vec::with_capacity(self.keys.len() + 1);
        if let (Prefix::Tink(id), _) = envelope::split_prefix(sealed) {
            attempts.extend(
                usable()
                    .filter(|k| k.matches(id))
                    .map(|k| (k, TINK_PREFIX_LEN)),
            );
        }
        let mut raw: Vec<&ServerKey> = usable()
            .filter(|k| sealed.len() >= k.key.suite().min_sealed_len())
            .collect();
        raw.sort_by_key(|k| k.state != KeyState::Primary);
        for key in raw {
            let kem = key.key.suite().kem;
            let tried = attempts
                .iter()
                .filter(|(k, offset)| *offset == 0 && k.key.suite().kem == kem)
                .count();
            if tried < RAW_TRIALS_PER_KEM {
                attempts.push((key, 0));
            }
        }
        attempts
    }
}

/// A decrypted body's allocation, wiped when dropped: as the owner behind the `Bytes`
/// that [`ServerKeys::open`] returns, when the last clone of that `Bytes` drops.
struct WipedOnDrop(Vec<u8>);

impl Zeroize for WipedOnDrop {
    /// Zeroes every byte of the allocation, spare capacity included. Not
    /// `Vec::zeroize`, which writes element by element (volatile); this is one memset
    /// per part behind an optimization barrier, at memcpy speed.
    fn zeroize(&mut self) {
        self.0.as_mut_slice().zeroize();
        self.0.spare_capacity_mut().zeroize();
    }
}

impl Drop for WipedOnDrop {
    fn drop(&mut self) {
        self.zeroize();
    }
}

impl ZeroizeOnDrop for WipedOnDrop {}

impl AsRef<[u8]> for WipedOnDrop {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyring_picks_by_prefix_then_tries_raw() {
        let a = PrivateKey::generate();
        let b = PrivateKey::generate();
        let (pa, pb) = (a.public_key(), b.public_key());
        let ring = ServerKeys::new(vec![ServerKey::new(Some(1), a), ServerKey::new(Some(2), b)]);
        for (pk, prefix) in [
            (&pa, Prefix::Tink(1)),
            (&pb, Prefix::Tink(2)),
            (&pa, Prefix::Raw),
            (&pb, Prefix::Raw),
        ] {
            let ct = envelope::seal(pk, prefix, b"acct", b"plain").unwrap();
            let pt = ring.open(b"acct", BytesMut::from(&ct[..])).unwrap();
            assert_eq!(&pt[..], b"plain");
        }
        // A prefix naming key 2 on a ciphertext sealed to key 1 fails.
        let mut ct = envelope::seal(&pa, Prefix::Tink(1), b"acct", b"plain").unwrap();
        ct[4] = 2;
        assert!(ring.open(b"acct", BytesMut::from(&ct[..])).is_err());
    }

    fn tried_prefixed(ring: &ServerKeys, now: SystemTime, sealed: &[u8]) -> Vec<u32> {
        ring.attempts(now, sealed)
            .iter()
            .map(|(k, _)| k.id().unwrap())
            .collect()
    }

    /// RAW trials: only keys whose KEM the envelope is long enough for, the primary
    /// first, at most [`RAW_TRIALS_PER_KEM`] of each KEM.
    #[test]
    fn raw_envelopes_are_tried_by_kem_primary_first_within_the_bound() {
        use envelope::Suite;
        let x = |i: u32, state| {
            ServerKey::new(Some(i), PrivateKey::generate()).with_lifecycle(state, None)
        };
        // Nine X25519 keys, the primary last in configuration order, and an X-Wing key.
        let mut keys: Vec<ServerKey> = (1..=8).map(|i| x(i, KeyState::DecryptOnly)).collect();
        keys.push(x(9, KeyState::Primary));
        keys.push(
            ServerKey::new(Some(10), PrivateKey::generate_for(Suite::XWING_AES_256_GCM))
                .with_lifecycle(KeyState::DecryptOnly, None),
        );
        let publics: Vec<PublicKey> = keys.iter().map(ServerKey::public_key).collect();
        let ring = ServerKeys::new(keys);
        let opens = |pk: &PublicKey, pt: &[u8]| {
            let ct = envelope::seal(pk, Prefix::Raw, b"acct", pt).unwrap();
            ring.open(b"acct", BytesMut::from(&ct[..])).is_ok()
        };
        assert!(opens(&publics[8], b"p"), "the primary is tried first");
        for (i, pk) in publics[..7].iter().enumerate() {
            assert!(opens(pk, b"p"), "key {}", i + 1);
        }
        assert!(
            !opens(&publics[7], b"p"),
            "the ninth X25519 key is past the bound"
        );
        // A TINK prefix still reaches it.
        let ct = envelope::seal(&publics[7], Prefix::Tink(8), b"acct", b"p").unwrap();
        assert!(ring.open(b"acct", BytesMut::from(&ct[..])).is_ok());
        // The X-Wing key counts apart.
        assert!(opens(&publics[9], b""));
        // What is tried: an envelope shorter than any X-Wing one (an X25519 envelope of
        // 1,000 bytes of plaintext is 1,048 bytes) is not tried against the X-Wing key;
        // a longer one is, after the eight X25519 keys the bound allows.
        let now = SystemTime::now();
        let tried = |len: usize| -> Vec<u32> {
            ring.attempts(now, &vec![0x80; len])
                .iter()
                .map(|(k, _)| k.id().unwrap())
                .collect()
        };
        let short = Suite::XWING_AES_256_GCM.min_sealed_len() - 1;
        assert_eq!(tried(short), [9, 1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(tried(short + 1), [9, 1, 2, 3, 4, 5, 6, 7, 10]);
        assert_eq!(tried(47), Vec::<u32>::new(), "shorter than any envelope");
        let mut tink = vec![0x80; short];
        tink[..5].copy_from_slice(&[1, 0, 0, 0, 8]);
        assert_eq!(
            tried_prefixed(&ring, now, &tink),
            [8, 9, 1, 2, 3, 4, 5, 6, 7]
        );
    }

    #[test]
    fn retired_and_expired_keys_neither_open_nor_publish() {
        use std::time::Duration;
        let now = SystemTime::now();
        let day = Duration::from_secs(86_400);
        let keys: Vec<PrivateKey> = (0..4).map(|_| PrivateKey::generate()).collect();
        let publics: Vec<PublicKey> = keys.iter().map(PrivateKey::public_key).collect();
        let mut it = keys.into_iter();
        let mut next = || it.next().unwrap();
        let ring = ServerKeys::new(vec![
            ServerKey::new(Some(1), next()).with_lifecycle(KeyState::DecryptOnly, Some(now + day)),
            ServerKey::new(Some(2), next()).with_lifecycle(KeyState::Primary, None),
            ServerKey::new(Some(3), next()).with_lifecycle(KeyState::Retired, None),
            ServerKey::new(Some(4), next()).with_lifecycle(KeyState::DecryptOnly, Some(now - day)),
        ]);
        let opens = |at: SystemTime, pk: &PublicKey, prefix| {
            let ct = envelope::seal(pk, prefix, b"acct", b"plain").unwrap();
            ring.open_at(at, b"acct", BytesMut::from(&ct[..])).is_ok()
        };
        for prefix in [Prefix::Raw, Prefix::Tink(1), Prefix::Tink(2)] {
            let pk = if prefix == Prefix::Tink(1) {
                &publics[0]
            } else {
                &publics[1]
            };
            assert!(opens(now, pk, prefix));
        }
        assert!(
            opens(now, &publics[0], Prefix::Raw),
            "decrypt-only key in its overlap"
        );
        assert!(
            !opens(now + 2 * day, &publics[0], Prefix::Raw),
            "past not_after"
        );
        assert!(!opens(now, &publics[2], Prefix::Tink(3)), "retired");
        assert!(!opens(now, &publics[3], Prefix::Raw), "expired");
        let ids: Vec<_> = ring.published(now).iter().map(|k| k.id()).collect();
        assert_eq!(ids, [Some(2), Some(1)]);
        let ids: Vec<_> = ring
            .published(now + 2 * day)
            .iter()
            .map(|k| k.id())
            .collect();
        assert_eq!(ids, [Some(2)]);
    }

    /// The wipe zeroes the bytes in place and keeps the allocation (its spare capacity
    /// is zeroed as well, which safe code cannot read back).
    #[test]
    fn wiped_on_drop_zeroes_the_plaintext() {
        let mut v = Vec::with_capacity(64);
        v.extend_from_slice(b"secret plaintext");
        let ptr = v.as_ptr();
        let mut buf = WipedOnDrop(v);
        buf.zeroize();
        assert_eq!(buf.0, [0u8; 16]);
        assert_eq!(buf.0.as_ptr(), ptr);
        assert_eq!(buf.0.capacity(), 64);
    }

    /// Compile-time: the plaintext's owner is wiped when dropped.
    #[test]
    fn plaintext_owner_zeroizes_on_drop() {
        fn wipes<T: ZeroizeOnDrop>() {}
        wipes::<WipedOnDrop>();
    }

    /// The plaintext outlives the keyring call and every clone reads it; the
    /// allocation is shared, not copied, so only one owner wipes it.
    #[test]
    fn opened_plaintext_is_a_shared_slice_of_the_wiped_owner() {
        let a = PrivateKey::generate();
        let pa = a.public_key();
        let ring = ServerKeys::new(vec![ServerKey::new(Some(1), a)]);
        let ct = envelope::seal(&pa, Prefix::Tink(1), b"acct", b"plain text").unwrap();
        let pt = ring.open(b"acct", BytesMut::from(&ct[..])).unwrap();
        let clone = pt.clone();
        assert_eq!(pt.as_ptr(), clone.as_ptr());
        drop(pt);
        assert_eq!(&clone[..], b"plain text");
    }

    #[test]
    fn a_tink_prefix_for_another_key_fails() {
        let a = PrivateKey::generate();
        let pa = a.public_key();
        let ring = ServerKeys::new(vec![ServerKey::new(Some(1), a)]);
        let mut ct = envelope::seal(&pa, Prefix::Tink(1), b"acct", b"plain").unwrap();
        ct[4] = 2;
        assert!(ring.open(b"acct", BytesMut::from(&ct[..])).is_err());
    }
}
