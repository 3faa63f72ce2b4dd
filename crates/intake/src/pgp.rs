//! OpenPGP with rPGP (the `pgp` crate): the customers' private keys, and streaming
//! decryption of uploaded files.
//!
//! Why rPGP and not Sequoia: both stream and both are maintained (rPGP by the Delta Chat
//! and rPGP teams, audited in 2019 and 2024; Sequoia by the p≡p/Sequoia team). rPGP is
//! pure Rust under MIT/Apache-2.0 like this crate, builds with no system library, and
//! reads GnuPG's output including its OCB ("AEAD") packets; Sequoia is LGPL-2.0-or-later
//! and by default links Nettle. Interop is tested against GnuPG and openpgp.js.
//!
//! Decryption streams in constant memory: the plaintext goes to a file the caller keeps
//! private until the whole message was read and its integrity checked (the MDC of a
//! SEIPDv1 packet is only known at the end, so rPGP's streaming mode releases
//! unauthenticated bytes; they go nowhere but that private file, which is deleted on
//! failure). AEAD packets (SEIPDv2, GnuPG's OCB) are checked chunk by chunk.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::time::SystemTime;

use pgp::composed::DecryptionOptions;
use pgp::composed::{
    ArmorOptions, Deserializable as _, Edata, Message, MessageBuilder, SignedSecretKey, TheRing,
};
use pgp::crypto::sym::SymmetricKeyAlgorithm;
use pgp::packet::{ProtectedDataConfig, SymEncryptedProtectedDataConfig};
use pgp::types::{KeyDetails as _, Password, Seipdv1ReadMode};
use zeroize::Zeroizing;

/// One customer key: an exported secret key, its passphrase, and the id manifests use.
pub struct PgpKey {
    id: String,
    key: SignedSecretKey,
    passphrase: Password,
    not_after: Option<SystemTime>,
}

impl std::fmt::Debug for PgpKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgpKey")
            .field("id", &self.id)
            .field("fingerprint", &self.fingerprint())
            .field("key", &"<redacted>")
            .finish()
    }
}

impl PgpKey {
    /// Reads an armored secret key (as `gpg --export-secret-key -a` writes it) and checks
    /// that it has an encryption-capable subkey and that `passphrase` unlocks it, by
    /// encrypting a probe message to it and decrypting it.
    pub fn load(
        id: String,
        armored: &[u8],
        passphrase: Zeroizing<Vec<u8>>,
        not_after: Option<SystemTime>,
    ) -> Result<Self, String> {
        let (key, _headers) = SignedSecretKey::from_armor_single(armored)
            .map_err(|e| format!("not an armored OpenPGP secret key ({e})"))?;
        key.verify_bindings()
            .map_err(|e| format!("the key's self-signatures do not verify ({e})"))?;
        let this = Self {
            id,
            key,
            passphrase: Password::from(passphrase.as_slice()),
            not_after,
        };
        this.probe()?;
        Ok(this)
    }

    /// The id manifests name in `keyId`.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The primary key's fingerprint, hex.
    pub fn fingerprint(&self) -> String {
        self.key.primary_key.fingerprint().to_string()
    }

    /// The end of the key's validity, if it has one.
    pub fn not_after(&self) -> Option<SystemTime> {
        self.not_after
    }

    /// True if the key decrypts at `now` (not past its `not_after`).
    pub fn valid_at(&self, now: SystemTime) -> bool {
        self.not_after.is_none_or(|end| now < end)
    }

    /// The public key, armored, for customers to encrypt to.
    pub fn public_armored(&self) -> Result<String, String> {
        self.key
            .to_public_key()
            .to_armored_string(ArmorOptions::default())
            .map_err(|e| e.to_string())
    }

    fn probe(&self) -> Result<(), String> {
        let probe = encrypt_to_subkeys(&self.key.to_public_key(), "", b"hpke-gateway key check")?;
        let mut out = Vec::new();
        decrypt_stream(&[self], &probe[..], &mut out, u64::MAX).map_err(|e| match e {
            DecryptError::NoKey => {
                "the passphrase does not unlock the key's encryption subkey".to_owned()
            }
            other => format!("the key cannot decrypt ({other})"),
        })?;
        if out != b"hpke-gateway key check" {
            return Err("the key decrypted a probe message to other bytes".into());
        }
        Ok(())
    }
}

/// Encrypts `data` to every encryption-capable subkey of `public`, as a binary OpenPGP
/// message (SEIPDv1, AES-256: what GnuPG 2.2 writes); `name` is the literal data's file
/// name. The key check at load and the demo's customer both use it.
pub fn encrypt_to_subkeys(
    public: &pgp::composed::SignedPublicKey,
    name: &str,
    data: &[u8],
) -> Result<Vec<u8>, String> {
    let subkeys: Vec<_> = public
        .public_subkeys
        .iter()
        .filter(|k| k.key.algorithm().can_encrypt())
        .collect();
    if subkeys.is_empty() {
        return Err("the key has no encryption-capable subkey".into());
    }
    let mut rng = rand::thread_rng();
    let mut builder = MessageBuilder::from_bytes(name.to_owned(), data.to_vec())
        .seipd_v1(&mut rng, SymmetricKeyAlgorithm::AES256);
    for subkey in subkeys {
        builder
            .encrypt_to_key(&mut rng, &subkey.key)
            .map_err(|e| format!("cannot encrypt to the subkey ({e})"))?;
    }
    builder
        .to_vec(&mut rng)
        .map_err(|e| format!("cannot build the message ({e})"))
}

/// Why a file did not decrypt. Messages are for the customer's notification and the
/// log: they name no key material or plaintext.
#[derive(Debug, thiserror::Error)]
pub enum DecryptError {
    /// Not an OpenPGP message at all (for example a plain CSV).
    #[error("the file is not an OpenPGP encrypted message ({0})")]
    NotPgp(String),
    /// An OpenPGP message that is not encrypted (only signed, compressed or literal).
    #[error("the file is an OpenPGP message but is not encrypted")]
    NotEncrypted,
    /// None of the keys could open it: encrypted to another key, or a wrong passphrase.
    #[error("the file is not encrypted to the key named by keyId (or its passphrase is wrong)")]
    NoKey,
    /// The integrity check failed, or the message is truncated or damaged.
    #[error("the encrypted file is damaged or was modified (integrity check failed: {0})")]
    Integrity(String),
    /// The plaintext is larger than allowed (a decompression bomb, or just too big).
    #[error("the decrypted content is larger than the limit of {0} bytes")]
    TooLarge(u64),
    /// Writing the plaintext failed.
    #[error("cannot write the decrypted file: {0}")]
    Io(#[from] std::io::Error),
}

fn options() -> DecryptionOptions {
    DecryptionOptions::new()
        .enable_gnupg_aead()
        .set_seipdv1_read_mode(Seipdv1ReadMode::Streaming)
}

/// Decrypts an armored or binary OpenPGP message from `input` with any of `keys`, through
/// any compression layers, into `out`, writing at most `limit` bytes. Reading in chunks,
/// memory stays constant whatever the size.
pub fn decrypt_stream<R: Read + Send>(
    keys: &[&PgpKey],
    input: R,
    out: &mut dyn Write,
    limit: u64,
) -> Result<u64, DecryptError> {
    let mut input = BufReader::with_capacity(64 * 1024, input);
    let starts_like_pgp = starts_like_encrypted_message(input.fill_buf()?);
    let reader = DebugRead(input);
    let (message, _) = Message::from_reader(reader).map_err(|e| {
        if starts_like_pgp {
            // It begins as an encrypted message but does not parse: cut short or damaged.
            DecryptError::Integrity(e.to_string())
        } else {
            DecryptError::NotPgp(e.to_string())
        }
    })?;
    if !message.is_encrypted() {
        return Err(DecryptError::NotEncrypted);
    }
    check_aead_mode(&message)?;
    let ring = TheRing {
        secret_keys: keys.iter().map(|k| &k.key).collect(),
        key_passwords: keys.iter().map(|k| &k.passphrase).collect(),
        decrypt_options: options(),
        ..Default::default()
    };
    // rPGP 0.21 reports every key-side failure (no secret key for the message, a
    // passphrase that does not unlock the one that matches) as `MissingKey` once no
    // session key was found; matched on the type, not on its message.
    let (mut message, _) = message.decrypt_the_ring(ring, true).map_err(|e| match e {
        pgp::errors::Error::MissingKey | pgp::errors::Error::NoMatchingPacket { .. } => {
            DecryptError::NoKey
        }
        other => DecryptError::Integrity(other.to_string()),
    })?;
    // Compression layers (a bounded number: each is a packet the sender chose).
    for _ in 0..4 {
        if !message.is_compressed() {
            break;
        }
        message = message
            .decompress()
            .map_err(|e| DecryptError::Integrity(e.to_string()))?;
    }
    copy_limited(&mut message, out, limit)
}

/// Refuses a SEIPDv2 packet whose AEAD mode is not one rPGP implements. rPGP 0.21 reads
/// the mode from the (unauthenticated) packet header and panics deriving the nonce for
/// an unknown one (`aead_setup_rfc9580`), once a session key was decrypted: any uploader
/// who has the account's public key could trigger it. Found by the `intake_pgp` fuzz
/// target; input kept in `fuzz/regressions/intake_pgp/`.
fn check_aead_mode(message: &Message<'_>) -> Result<(), DecryptError> {
    if let Message::Encrypted {
        edata: Edata::SymEncryptedProtectedData { reader },
        ..
    } = message
        && let ProtectedDataConfig::Seipd(SymEncryptedProtectedDataConfig::V2 { aead, .. }) =
            reader.config()
        && aead.tag_size().is_none()
    {
        return Err(DecryptError::Integrity(format!(
            "unsupported AEAD mode {}",
            u8::from(*aead)
        )));
    }
    Ok(())
}

/// True if `head` begins with an armor header or with the packet an encrypted message
/// starts with (a public-key or symmetric-key encrypted session key, RFC 9580 §10.3).
fn starts_like_encrypted_message(head: &[u8]) -> bool {
    if head.starts_with(b"-----BEGIN PGP MESSAGE-----") {
        return true;
    }
    let Some(&first) = head.first() else {
        return false;
    };
    if first & 0x80 == 0 {
        return false;
    }
    let tag = if first & 0x40 != 0 {
        first & 0x3f
    } else {
        (first >> 2) & 0x0f
    };
    matches!(tag, 1 | 3)
}

/// Copies with a ceiling; a read error is an integrity failure (rPGP reports a failed
/// MDC or AEAD tag, a truncated packet or a damaged compression stream as a read error).
fn copy_limited(
    input: &mut dyn Read,
    out: &mut dyn Write,
    limit: u64,
) -> Result<u64, DecryptError> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut total: u64 = 0;
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(DecryptError::Integrity(e.to_string())),
        };
        total += n as u64;
        if total > limit {
            return Err(DecryptError::TooLarge(limit));
        }
        out.write_all(&buf[..n])?;
    }
    Ok(total)
}

/// `Message::from_reader` wants a `Debug` reader.
struct DebugRead<R>(R);

impl<R> std::fmt::Debug for DebugRead<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("upload")
    }
}

impl<R: Read> Read for DebugRead<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(buf)
    }
}

impl<R: BufRead> BufRead for DebugRead<R> {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        self.0.fill_buf()
    }

    fn consume(&mut self, amt: usize) {
        self.0.consume(amt);
    }
}

/// Reads an armored secret key file (owner-only, like every private key file).
pub fn read_key_file(path: &Path) -> Result<Zeroizing<Vec<u8>>, String> {
    hpke_keyfiles::read_secret_file(path).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encrypted_message_starts_are_recognised() {
        // GnuPG's binary output starts with an old-format PKESK (0x85), newer tools use
        // the new format (0xc1); SKESK is tag 3.
        for head in [
            &[0x85u8, 0x01][..],
            &[0xc1, 0x5e],
            &[0x8c, 0x0d],
            &[0xc3, 0x0d],
        ] {
            assert!(starts_like_encrypted_message(head), "{head:02x?}");
        }
        for head in [
            &b"email,name\n"[..],
            &[0xef, 0xbb, 0xbf, b'a'],
            &[],
            &[0xcb, 0x00],
        ] {
            assert!(!starts_like_encrypted_message(head), "{head:02x?}");
        }
        assert!(starts_like_encrypted_message(
            b"-----BEGIN PGP MESSAGE-----\n"
        ));
    }
}
