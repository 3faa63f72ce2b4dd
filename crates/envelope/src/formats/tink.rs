//! Google Tink keysets in Tink's JSON format, for the HPKE suites the gateway speaks
//! ([`crate::Suite::ALL`]); a key's `HpkeParams` name its suite.
//!
//! A keyset is `{"primaryKeyId": N, "key": [{"keyData": {"typeUrl", "value", "keyMaterialType"},
//! "status", "keyId", "outputPrefixType"}]}` where `value` is the base64 of a serialized
//! `google.crypto.tink.HpkePublicKey` or `HpkePrivateKey` protobuf (Tink's `proto/hpke.proto`).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use prost::Message as _;
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use super::FormatError as KeyError;
use crate::{Prefix, PrivateKey, PublicKey, Suite};

const PUBLIC_TYPE_URL: &str = "type.googleapis.com/google.crypto.tink.HpkePublicKey";
const PRIVATE_TYPE_URL: &str = "type.googleapis.com/google.crypto.tink.HpkePrivateKey";

impl HpkeParams {
    fn of(suite: Suite) -> Self {
        Self {
            kem: suite.kem.tink_value(),
            kdf: suite.kdf.tink_value(),
            aead: suite.aead.tink_value(),
        }
    }
}

/// `google.crypto.tink.HpkeParams`.
#[derive(Clone, PartialEq, prost::Message)]
struct HpkeParams {
    #[prost(int32, tag = "1")]
    kem: i32,
    #[prost(int32, tag = "2")]
    kdf: i32,
    #[prost(int32, tag = "3")]
    aead: i32,
}

/// `google.crypto.tink.HpkePublicKey`.
#[derive(Clone, PartialEq, prost::Message)]
struct HpkePublicKey {
    #[prost(uint32, tag = "1")]
    version: u32,
    #[prost(message, optional, tag = "2")]
    params: Option<HpkeParams>,
    #[prost(bytes = "vec", tag = "3")]
    public_key: Vec<u8>,
}

/// `google.crypto.tink.HpkePrivateKey`.
#[derive(Clone, PartialEq, prost::Message)]
struct HpkePrivateKey {
    #[prost(uint32, tag = "1")]
    version: u32,
    #[prost(message, optional, tag = "2")]
    public_key: Option<HpkePublicKey>,
    #[prost(bytes = "vec", tag = "3")]
    private_key: Vec<u8>,
}

#[derive(Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
struct Keyset {
    #[serde(default)]
    primary_key_id: Option<i64>,
    key: Vec<KeysetKey>,
}

#[derive(Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
struct KeysetKey {
    key_data: KeyData,
    status: String,
    key_id: i64,
    output_prefix_type: String,
}

// Its `key_data` wipes itself; the rest is public.
impl ZeroizeOnDrop for KeysetKey {}

/// One key's material. In a private keyset `value` is a private key, so it is wiped on
/// drop: the primary key's after it is decoded, every other key's as soon as the keyset
/// is read.
#[derive(Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
struct KeyData {
    type_url: String,
    value: String,
    key_material_type: String,
}

impl Drop for KeyData {
    fn drop(&mut self) {
        self.value.zeroize();
    }
}

impl ZeroizeOnDrop for KeyData {}

/// Reads the primary key of a Tink public keyset.
pub(crate) fn parse_public_keyset(json: &[u8]) -> Result<(PublicKey, Prefix), KeyError> {
    let (key, prefix) = primary_key(json, PUBLIC_TYPE_URL)?;
    let proto = HpkePublicKey::decode(decode_value(&key.key_data.value)?.as_slice())
        .map_err(|e| tink_error(format!("HpkePublicKey does not decode: {e}")))?;
    let public = check_public(&proto)?;
    Ok((public, prefix))
}

/// Reads the primary key of a cleartext Tink private keyset.
pub(crate) fn parse_private_keyset(json: &[u8]) -> Result<(PrivateKey, Prefix), KeyError> {
    let (key, prefix) = primary_key(json, PRIVATE_TYPE_URL)?;
    let bytes = Zeroizing::new(decode_value(&key.key_data.value)?);
    drop(key);
    let mut proto = HpkePrivateKey::decode(bytes.as_slice())
        .map_err(|_| tink_error("HpkePrivateKey does not decode".into()))?;
    let private_bytes = Zeroizing::new(std::mem::take(&mut proto.private_key));
    let public = proto
        .public_key
        .as_ref()
        .ok_or_else(|| tink_error("HpkePrivateKey has no public_key".into()))
        .and_then(check_public)?;
    let private = PrivateKey::from_bytes_for(public.suite(), &private_bytes)
        .map_err(|e| tink_error(e.to_string()))?;
    if private.public_key() != public {
        return Err(tink_error(
            "the private key does not match the public key stored beside it".into(),
        ));
    }
    Ok((private, prefix))
}

/// Writes a one-key Tink public keyset for `public`. `Prefix::Tink(id)` makes a
/// `TINK` key with that id; `Prefix::Raw` a `RAW` key with `raw_key_id`.
pub fn public_keyset_json(public: &PublicKey, prefix: Prefix, raw_key_id: u32) -> String {
    let (key_id, prefix) = match prefix {
        Prefix::Tink(id) => (id, Prefix::Tink(id)),
        Prefix::Raw => (raw_key_id, Prefix::Raw),
    };
    public_keyset_json_of(&[(key_id, public, prefix)], key_id)
}

/// Writes a Tink public keyset of several keys, each `(key id, key, output prefix)`,
/// with `primary` as the primary key id.
pub fn public_keyset_json_of(keys: &[(u32, &PublicKey, Prefix)], primary: u32) -> String {
    let key = keys
        .iter()
        .map(|(key_id, public, prefix)| {
            let proto = HpkePublicKey {
                version: 0,
                params: Some(HpkeParams::of(public.suite())),
                public_key: public.to_bytes(),
            };
            KeysetKey {
                key_data: KeyData {
                    type_url: PUBLIC_TYPE_URL.into(),
                    value: STANDARD.encode(proto.encode_to_vec()),
                    key_material_type: "ASYMMETRIC_PUBLIC".into(),
                },
                status: "ENABLED".into(),
                key_id: i64::from(*key_id),
                output_prefix_type: match prefix {
                    Prefix::Tink(_) => "TINK",
                    Prefix::Raw => "RAW",
                }
                .into(),
            }
        })
        .collect();
    let keyset = Keyset {
        primary_key_id: Some(i64::from(primary)),
        key,
    };
    // A struct of strings and integers always serializes.
    serde_json::to_string_pretty(&keyset).unwrap_or_default()
}

/// Writes a one-key cleartext Tink private keyset for `key` (what Tink's
/// `cleartext_keyset_handle.write` writes): `Prefix::Tink(id)` makes a `TINK` key with
/// that id, `Prefix::Raw` a `RAW` key with `raw_key_id`. The text holds the private key:
/// it is wiped on drop.
pub fn private_keyset_json(key: &PrivateKey, prefix: Prefix, raw_key_id: u32) -> Zeroizing<String> {
    let (key_id, output_prefix_type) = match prefix {
        Prefix::Tink(id) => (id, "TINK"),
        Prefix::Raw => (raw_key_id, "RAW"),
    };
    let secret = key.to_bytes();
    let proto = HpkePrivateKey {
        version: 0,
        public_key: Some(HpkePublicKey {
            version: 0,
            params: Some(HpkeParams::of(key.suite())),
            public_key: key.public_key().to_bytes(),
        }),
        private_key: secret.to_vec(),
    };
    let mut encoded = Zeroizing::new(proto.encode_to_vec());
    let mut proto = proto;
    proto.private_key.zeroize();
    let mut keyset = Keyset {
        primary_key_id: Some(i64::from(key_id)),
        key: vec![KeysetKey {
            key_data: KeyData {
                type_url: PRIVATE_TYPE_URL.into(),
                value: STANDARD.encode(encoded.as_slice()),
                key_material_type: "ASYMMETRIC_PRIVATE".into(),
            },
            status: "ENABLED".into(),
            key_id: i64::from(key_id),
            output_prefix_type: output_prefix_type.into(),
        }],
    };
    encoded.zeroize();
    // Written into a buffer large enough from the start: a growing buffer would leave
    // copies of the key in the memory it gives back on each reallocation.
    let mut out = Zeroizing::new(Vec::with_capacity(
        keyset.key[0].key_data.value.len() + 1024,
    ));
    // A struct of strings and integers always serializes.
    let _ = serde_json::to_writer_pretty(&mut *out, &keyset);
    keyset.key[0].key_data.value.zeroize();
    Zeroizing::new(String::from_utf8(std::mem::take(&mut *out)).unwrap_or_default())
}

fn primary_key(json: &[u8], type_url: &str) -> Result<(KeysetKey, Prefix), KeyError> {
    let keyset: Keyset = serde_json::from_slice(json)
        .map_err(|e| tink_error(format!("not a Tink JSON keyset: {e}")))?;
    let count = keyset.key.len();
    let key = match (keyset.primary_key_id, count) {
        (_, 0) => return Err(tink_error("the keyset has no key".into())),
        (Some(primary), _) => keyset
            .key
            .into_iter()
            .find(|k| k.key_id == primary)
            .ok_or_else(|| tink_error(format!("primaryKeyId {primary} names no key")))?,
        (None, 1) => keyset
            .key
            .into_iter()
            .next()
            .ok_or_else(|| tink_error("empty".into()))?,
        (None, _) => {
            return Err(tink_error(
                "the keyset has several keys and no primaryKeyId".into(),
            ));
        }
    };
    if key.key_data.type_url != type_url {
        return Err(tink_error(format!(
            "key type {} is not supported here (expected {type_url})",
            key.key_data.type_url
        )));
    }
    if key.status != "ENABLED" {
        return Err(tink_error(format!(
            "the primary key's status is {}",
            key.status
        )));
    }
    let id = u32_key_id(key.key_id)?;
    let prefix = match key.output_prefix_type.as_str() {
        "TINK" => Prefix::Tink(id),
        "RAW" => Prefix::Raw,
        other => {
            return Err(tink_error(format!(
                "output prefix type {other} is not supported (use TINK or RAW)"
            )));
        }
    };
    Ok((key, prefix))
}

/// Tink writes key ids as unsigned 32-bit numbers; some writers print them signed.
fn u32_key_id(id: i64) -> Result<u32, KeyError> {
    if let Ok(v) = u32::try_from(id) {
        return Ok(v);
    }
    if let Ok(v) = i32::try_from(id) {
        return Ok(v as u32);
    }
    Err(tink_error(format!("keyId {id} is out of range")))
}

fn check_public(proto: &HpkePublicKey) -> Result<PublicKey, KeyError> {
    let params = proto
        .params
        .as_ref()
        .ok_or_else(|| tink_error("HpkePublicKey has no params".into()))?;
    let suite = Suite::from_tink(params.kem, params.kdf, params.aead).ok_or_else(|| {
        KeyError::UnsupportedParameters(format!(
            "kem {}, kdf {}, aead {}; supported: DHKEM_X25519_HKDF_SHA256 with AES_128_GCM, AES_256_GCM or CHACHA20_POLY1305, and X_WING with AES_256_GCM, all with HKDF_SHA256",
            kem_name(params.kem),
            kdf_name(params.kdf),
            aead_name(params.aead)
        ))
    })?;
    PublicKey::from_bytes_for(suite, &proto.public_key).map_err(KeyError::from)
}

fn decode_value(value: &str) -> Result<Vec<u8>, KeyError> {
    STANDARD
        .decode(value.trim())
        .map_err(|_| tink_error("keyData.value is not base64".into()))
}

fn tink_error(msg: String) -> KeyError {
    KeyError::Tink(msg)
}

fn kem_name(v: i32) -> String {
    match v {
        1 => "DHKEM_X25519_HKDF_SHA256".into(),
        2 => "DHKEM_P256_HKDF_SHA256".into(),
        3 => "DHKEM_P384_HKDF_SHA384".into(),
        4 => "DHKEM_P521_HKDF_SHA512".into(),
        5 => "X_WING".into(),
        6 => "ML_KEM768".into(),
        7 => "ML_KEM1024".into(),
        other => format!("KEM_UNKNOWN({other})"),
    }
}

fn kdf_name(v: i32) -> String {
    match v {
        1 => "HKDF_SHA256".into(),
        2 => "HKDF_SHA384".into(),
        3 => "HKDF_SHA512".into(),
        other => format!("KDF_UNKNOWN({other})"),
    }
}

fn aead_name(v: i32) -> String {
    match v {
        1 => "AES_128_GCM".into(),
        2 => "AES_256_GCM".into(),
        3 => "CHACHA20_POLY1305".into(),
        other => format!("AEAD_UNKNOWN({other})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keyset_with_params(kem: i32, kdf: i32, aead: i32) -> String {
        let pk = PrivateKey::generate().public_key();
        let proto = HpkePublicKey {
            version: 0,
            params: Some(HpkeParams { kem, kdf, aead }),
            public_key: pk.to_bytes(),
        };
        serde_json::json!({
            "primaryKeyId": 42,
            "key": [{
                "keyData": {
                    "typeUrl": PUBLIC_TYPE_URL,
                    "value": STANDARD.encode(proto.encode_to_vec()),
                    "keyMaterialType": "ASYMMETRIC_PUBLIC"
                },
                "status": "ENABLED",
                "keyId": 42,
                "outputPrefixType": "TINK"
            }]
        })
        .to_string()
    }

    #[test]
    fn other_parameters_are_refused_by_name() {
        let err = parse_public_keyset(keyset_with_params(6, 1, 2).as_bytes()).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("ML_KEM768"), "{msg}");
        let err = parse_public_keyset(keyset_with_params(2, 1, 2).as_bytes()).unwrap_err();
        assert!(err.to_string().contains("DHKEM_P256_HKDF_SHA256"));
        let err = parse_public_keyset(keyset_with_params(1, 3, 3).as_bytes()).unwrap_err();
        assert!(err.to_string().contains("HKDF_SHA512"));
        assert!(err.to_string().contains("CHACHA20_POLY1305"));
    }

    #[test]
    fn supported_parameters_parse_with_prefix_and_suite() {
        for (aead, suite) in [
            (1, Suite::X25519_AES_128_GCM),
            (2, Suite::X25519_AES_256_GCM),
            (3, Suite::X25519_CHACHA20_POLY1305),
        ] {
            let (pk, prefix) =
                parse_public_keyset(keyset_with_params(1, 1, aead).as_bytes()).unwrap();
            assert_eq!(prefix, Prefix::Tink(42));
            assert_eq!(pk.suite(), suite);
        }
    }

    #[test]
    fn written_keysets_read_back_in_every_suite() {
        for suite in Suite::ALL {
            let sk = PrivateKey::generate_for(*suite);
            let pk = sk.public_key();
            for prefix in [Prefix::Raw, Prefix::Tink(u32::MAX)] {
                let json = public_keyset_json(&pk, prefix, 7);
                let (got, got_prefix) = parse_public_keyset(json.as_bytes()).unwrap();
                assert_eq!(got, pk);
                assert_eq!(got.suite(), *suite);
                assert_eq!(got_prefix, prefix);
                let json = private_keyset_json(&sk, prefix, 7);
                let (got, got_prefix) = parse_private_keyset(json.as_bytes()).unwrap();
                assert_eq!(got.public_key(), pk);
                assert_eq!(*got.to_bytes(), *sk.to_bytes());
                assert_eq!(got_prefix, prefix);
            }
        }
    }

    /// Compile-time: every key of a keyset read (primary or not) is wiped when dropped.
    #[test]
    fn keyset_key_material_zeroizes_on_drop() {
        fn wipes<T: ZeroizeOnDrop>() {}
        wipes::<KeyData>();
        wipes::<KeysetKey>();
    }

    #[test]
    fn a_private_keyset_with_several_keys_reads_its_primary() {
        let keys: Vec<PrivateKey> = (0..3).map(|_| PrivateKey::generate()).collect();
        let entry = |id: u32, key: &PrivateKey| {
            let proto = HpkePrivateKey {
                version: 0,
                public_key: Some(HpkePublicKey {
                    version: 0,
                    params: Some(HpkeParams::of(key.suite())),
                    public_key: key.public_key().to_bytes(),
                }),
                private_key: key.to_bytes().to_vec(),
            };
            serde_json::json!({
                "keyData": {
                    "typeUrl": PRIVATE_TYPE_URL,
                    "value": STANDARD.encode(proto.encode_to_vec()),
                    "keyMaterialType": "ASYMMETRIC_PRIVATE"
                },
                "status": "ENABLED",
                "keyId": id,
                "outputPrefixType": "TINK"
            })
        };
        let json = serde_json::json!({
            "primaryKeyId": 11,
            "key": [entry(10, &keys[0]), entry(11, &keys[1]), entry(12, &keys[2])]
        })
        .to_string();
        let (key, prefix) = parse_private_keyset(json.as_bytes()).unwrap();
        assert_eq!(prefix, Prefix::Tink(11));
        assert_eq!(key.public_key(), keys[1].public_key());
    }

    #[test]
    fn signed_key_ids_are_read_as_unsigned() {
        assert_eq!(u32_key_id(-1).unwrap(), u32::MAX);
        assert_eq!(u32_key_id(4_294_967_295).unwrap(), u32::MAX);
        assert!(u32_key_id(1 << 40).is_err());
    }
}
