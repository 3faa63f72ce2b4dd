//! HPKE cipher suites: which KEM, KDF and AEAD an envelope uses, with their RFC 9180
//! identifiers, their lengths and the enum values Tink's `HpkeParams` gives them.
//!
//! Four suites are offered (Google Tink's HPKE templates: [`Suite::ALL`]); the types are
//! enums so that a new KEM or AEAD is a new variant whose every use the compiler points
//! at, not a constant to hunt for.

use std::fmt;
use std::str::FromStr;

/// A key encapsulation mechanism (RFC 9180 §7.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kem {
    /// DHKEM(X25519, HKDF-SHA256), `0x0020`.
    X25519HkdfSha256,
    /// X-Wing (ML-KEM-768 + X25519, draft-connolly-cfrg-xwing-kem-06), `0x647a`
    /// (draft-ietf-hpke-pq).
    XWing,
}

impl Kem {
    /// The RFC 9180 identifier.
    pub const fn id(self) -> u16 {
        match self {
            Kem::X25519HkdfSha256 => 0x0020,
            Kem::XWing => 0x647a,
        }
    }

    /// `Nenc`: the length of the encapsulated key.
    pub const fn enc_len(self) -> usize {
        match self {
            Kem::X25519HkdfSha256 => 32,
            Kem::XWing => 1120,
        }
    }

    /// `Npk`: the length of a serialized public key.
    pub const fn public_key_len(self) -> usize {
        match self {
            Kem::X25519HkdfSha256 => 32,
            Kem::XWing => 1216,
        }
    }

    /// `Nsk`: the length of a serialized private key (an X25519 scalar, or X-Wing's
    /// 32-byte seed).
    pub const fn private_key_len(self) -> usize {
        match self {
            Kem::X25519HkdfSha256 | Kem::XWing => 32,
        }
    }

    /// The suite a key of this KEM has when nothing names one (PEM and raw keys, which
    /// record only the KEM).
    pub const fn default_suite(self) -> Suite {
        match self {
            Kem::X25519HkdfSha256 => Suite::X25519_AES_256_GCM,
            Kem::XWing => Suite::XWING_AES_256_GCM,
        }
    }

    /// A short name for logs and metrics.
    pub const fn name(self) -> &'static str {
        match self {
            Kem::X25519HkdfSha256 => "x25519",
            Kem::XWing => "xwing",
        }
    }

    /// `suite_id = concat("KEM", I2OSP(kem_id, 2))` (RFC 9180 §4.1).
    pub const fn suite_id(self) -> [u8; 5] {
        let id = self.id().to_be_bytes();
        [b'K', b'E', b'M', id[0], id[1]]
    }

    /// The value of Tink's `HpkeKem` enum (`proto/hpke.proto`).
    pub const fn tink_value(self) -> i32 {
        match self {
            Kem::X25519HkdfSha256 => 1,
            Kem::XWing => 5,
        }
    }
}

/// A key derivation function (RFC 9180 §7.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kdf {
    /// HKDF-SHA256, `0x0001`.
    HkdfSha256,
}

impl Kdf {
    /// The RFC 9180 identifier.
    pub const fn id(self) -> u16 {
        match self {
            Kdf::HkdfSha256 => 0x0001,
        }
    }

    /// The value of Tink's `HpkeKdf` enum.
    pub const fn tink_value(self) -> i32 {
        match self {
            Kdf::HkdfSha256 => 1,
        }
    }
}

/// An AEAD (RFC 9180 §7.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Aead {
    /// AES-128-GCM, `0x0001`.
    Aes128Gcm,
    /// AES-256-GCM, `0x0002`.
    Aes256Gcm,
    /// ChaCha20-Poly1305, `0x0003`.
    ChaCha20Poly1305,
}

impl Aead {
    /// The RFC 9180 identifier.
    pub const fn id(self) -> u16 {
        match self {
            Aead::Aes128Gcm => 0x0001,
            Aead::Aes256Gcm => 0x0002,
            Aead::ChaCha20Poly1305 => 0x0003,
        }
    }

    /// `Nk`: the key length.
    pub const fn key_len(self) -> usize {
        match self {
            Aead::Aes128Gcm => 16,
            Aead::Aes256Gcm | Aead::ChaCha20Poly1305 => 32,
        }
    }

    /// `Nn`: the nonce length.
    pub const fn nonce_len(self) -> usize {
        match self {
            Aead::Aes128Gcm | Aead::Aes256Gcm | Aead::ChaCha20Poly1305 => 12,
        }
    }

    /// `Nt`: the tag length.
    pub const fn tag_len(self) -> usize {
        match self {
            Aead::Aes128Gcm | Aead::Aes256Gcm | Aead::ChaCha20Poly1305 => 16,
        }
    }

    /// The value of Tink's `HpkeAead` enum.
    pub const fn tink_value(self) -> i32 {
        match self {
            Aead::Aes128Gcm => 1,
            Aead::Aes256Gcm => 2,
            Aead::ChaCha20Poly1305 => 3,
        }
    }
}

/// An HPKE suite: one KEM, one KDF, one AEAD.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Suite {
    /// The KEM.
    pub kem: Kem,
    /// The KDF.
    pub kdf: Kdf,
    /// The AEAD.
    pub aead: Aead,
}

impl Suite {
    /// DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-256-GCM: the suite the vendor's
    /// Tink clients use, and the default.
    pub const X25519_AES_256_GCM: Suite = Suite {
        kem: Kem::X25519HkdfSha256,
        kdf: Kdf::HkdfSha256,
        aead: Aead::Aes256Gcm,
    };

    /// DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-128-GCM.
    pub const X25519_AES_128_GCM: Suite = Suite {
        kem: Kem::X25519HkdfSha256,
        kdf: Kdf::HkdfSha256,
        aead: Aead::Aes128Gcm,
    };

    /// DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, ChaCha20-Poly1305.
    pub const X25519_CHACHA20_POLY1305: Suite = Suite {
        kem: Kem::X25519HkdfSha256,
        kdf: Kdf::HkdfSha256,
        aead: Aead::ChaCha20Poly1305,
    };

    /// X-Wing, HKDF-SHA256, AES-256-GCM: Tink's post-quantum HPKE template.
    pub const XWING_AES_256_GCM: Suite = Suite {
        kem: Kem::XWing,
        kdf: Kdf::HkdfSha256,
        aead: Aead::Aes256Gcm,
    };

    /// Every suite offered by name (keys, configuration, command line): the four that
    /// Tink has templates for. Other combinations of the KEMs and AEADs above work in
    /// [`crate::seal`] and [`crate::open`] (the published X-Wing vectors use X-Wing with
    /// ChaCha20-Poly1305) but are not offered.
    pub const ALL: &'static [Suite] = &[
        Suite::X25519_AES_256_GCM,
        Suite::X25519_AES_128_GCM,
        Suite::X25519_CHACHA20_POLY1305,
        Suite::XWING_AES_256_GCM,
    ];

    /// The name used on the command line and in the configuration.
    pub const fn name(self) -> &'static str {
        match (self.kem, self.kdf, self.aead) {
            (Kem::X25519HkdfSha256, Kdf::HkdfSha256, Aead::Aes256Gcm) => "x25519-aes-256-gcm",
            (Kem::X25519HkdfSha256, Kdf::HkdfSha256, Aead::Aes128Gcm) => "x25519-aes-128-gcm",
            (Kem::X25519HkdfSha256, Kdf::HkdfSha256, Aead::ChaCha20Poly1305) => {
                "x25519-chacha20-poly1305"
            }
            (Kem::XWing, Kdf::HkdfSha256, Aead::Aes256Gcm) => "xwing-aes-256-gcm",
            (Kem::XWing, Kdf::HkdfSha256, Aead::Aes128Gcm) => "xwing-aes-128-gcm",
            (Kem::XWing, Kdf::HkdfSha256, Aead::ChaCha20Poly1305) => "xwing-chacha20-poly1305",
        }
    }

    /// The shortest envelope of this suite without a prefix: `enc` and a tag.
    pub const fn min_sealed_len(self) -> usize {
        self.kem.enc_len() + self.aead.tag_len()
    }

    /// This suite with another AEAD (keys belong to a KEM; a suite adds the AEAD).
    pub const fn with_aead(self, aead: Aead) -> Suite {
        Suite {
            kem: self.kem,
            kdf: self.kdf,
            aead,
        }
    }

    /// The Tink template names (Python `hybrid_key_templates`) of this suite, TINK prefix
    /// first, then RAW.
    pub fn tink_templates(self) -> Option<[&'static str; 2]> {
        Some(match self.name() {
            "x25519-aes-256-gcm" => [
                "DHKEM_X25519_HKDF_SHA256_HKDF_SHA256_AES_256_GCM",
                "DHKEM_X25519_HKDF_SHA256_HKDF_SHA256_AES_256_GCM_RAW",
            ],
            "x25519-aes-128-gcm" => [
                "DHKEM_X25519_HKDF_SHA256_HKDF_SHA256_AES_128_GCM",
                "DHKEM_X25519_HKDF_SHA256_HKDF_SHA256_AES_128_GCM_RAW",
            ],
            "x25519-chacha20-poly1305" => [
                "DHKEM_X25519_HKDF_SHA256_HKDF_SHA256_CHACHA20_POLY1305",
                "DHKEM_X25519_HKDF_SHA256_HKDF_SHA256_CHACHA20_POLY1305_RAW",
            ],
            "xwing-aes-256-gcm" => [
                "X_WING_HKDF_SHA256_HKDF_SHA256_AES_256_GCM",
                "X_WING_HKDF_SHA256_HKDF_SHA256_AES_256_GCM_RAW",
            ],
            _ => return None,
        })
    }

    /// `suite_id = concat("HPKE", I2OSP(kem_id, 2), I2OSP(kdf_id, 2), I2OSP(aead_id, 2))`
    /// (RFC 9180 §5.1).
    pub const fn hpke_suite_id(self) -> [u8; 10] {
        let kem = self.kem.id().to_be_bytes();
        let kdf = self.kdf.id().to_be_bytes();
        let aead = self.aead.id().to_be_bytes();
        [
            b'H', b'P', b'K', b'E', kem[0], kem[1], kdf[0], kdf[1], aead[0], aead[1],
        ]
    }

    /// The suite a Tink `HpkeParams` names, if it is one of [`Suite::ALL`].
    pub fn from_tink(kem: i32, kdf: i32, aead: i32) -> Option<Suite> {
        Suite::ALL.iter().copied().find(|s| {
            s.kem.tink_value() == kem && s.kdf.tink_value() == kdf && s.aead.tink_value() == aead
        })
    }
}

impl Default for Suite {
    fn default() -> Self {
        Suite::X25519_AES_256_GCM
    }
}

impl fmt::Display for Suite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A suite name that is not one of [`Suite::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown suite {0:?} (known: x25519-aes-256-gcm, x25519-aes-128-gcm, x25519-chacha20-poly1305, xwing-aes-256-gcm)"
)]
pub struct UnknownSuite(pub String);

impl FromStr for Suite {
    type Err = UnknownSuite;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Suite::ALL
            .iter()
            .copied()
            .find(|suite| suite.name() == s)
            .ok_or_else(|| UnknownSuite(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suite_ids_are_rfc_9180s() {
        let s = Suite::X25519_AES_256_GCM;
        assert_eq!(&s.kem.suite_id(), b"KEM\x00\x20");
        assert_eq!(&s.hpke_suite_id(), b"HPKE\x00\x20\x00\x01\x00\x02");
    }

    #[test]
    fn names_round_trip_and_unknown_names_are_refused() {
        for s in Suite::ALL {
            assert_eq!(s.name().parse::<Suite>(), Ok(*s));
            assert_eq!(
                Suite::from_tink(s.kem.tink_value(), s.kdf.tink_value(), s.aead.tink_value()),
                Some(*s)
            );
        }
        assert!("x25519-aes-512-gcm".parse::<Suite>().is_err());
        assert!("xwing-chacha20-poly1305".parse::<Suite>().is_err());
        assert_eq!(Suite::from_tink(1, 1, 1), Some(Suite::X25519_AES_128_GCM));
        assert_eq!(Suite::from_tink(5, 1, 2), Some(Suite::XWING_AES_256_GCM));
        assert_eq!(Suite::from_tink(5, 1, 3), None);
        assert_eq!(Suite::from_tink(2, 1, 2), None);
        assert_eq!(Suite::ALL.len(), 4);
        for s in Suite::ALL {
            assert!(s.tink_templates().is_some(), "{s}");
        }
    }

    #[test]
    fn xwing_lengths_are_the_drafts() {
        let k = Kem::XWing;
        assert_eq!(
            (k.id(), k.enc_len(), k.public_key_len()),
            (0x647a, 1120, 1216)
        );
        assert_eq!(
            &Suite::XWING_AES_256_GCM.hpke_suite_id(),
            b"HPKE\x64\x7a\x00\x01\x00\x02"
        );
    }
}
