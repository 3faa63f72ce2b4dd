//! Oblivious HTTP (RFC 9458), on the same server keys as the Tink-format envelope.
//!
//! With `[ohttp] enabled = true`, `GET /.well-known/ohttp-keys` serves the key
//! configurations (RFC 9540, `application/ohttp-keys`): one per server key that decrypts
//! now, the primary first, each under its `ohttp_key_id` and offering HKDF-SHA256 with
//! every AEAD the envelope has (AES-128-GCM, AES-256-GCM, ChaCha20-Poly1305), X-Wing keys
//! included. Its `Cache-Control` follows `/.well-known/hpke-keys`'s rule: `keys_max_age_s`
//! or, if sooner, the first published key's `not_after`, so rotation and overlap work as
//! for the envelope. The encapsulation itself is `hpke_envelope::ohttp`.

use std::time::SystemTime;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, header};

use crate::envelope::ohttp;
use crate::error::Error;
use crate::state::SharedState;

/// The path of the key configurations (RFC 9540 §3).
pub const KEYS_PATH: &str = "/.well-known/ohttp-keys";

/// The handler for [`KEYS_PATH`].
pub async fn keys(State(shared): State<SharedState>) -> Response {
    let state = shared.load();
    let now = SystemTime::now();
    let published = state.server_keys().published(now);
    if published.is_empty() {
        return Error::Internal("no server key is valid now: nothing to publish".into())
            .into_response();
    }
    let configs: Vec<Vec<u8>> = published
        .iter()
        .map(|k| ohttp::key_config(k.ohttp_key_id(), &k.public_key(), &ohttp::AEADS))
        .collect();
    let max_age = crate::publish::max_age(state.keys_max_age(), &published, now);
    let mut response = ohttp::key_configs(&configs).into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(ohttp::KEYS_MEDIA_TYPE),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_str(&format!("public, max-age={}", max_age.as_secs()))
            .unwrap_or(HeaderValue::from_static("no-cache")),
    );
    response
}
