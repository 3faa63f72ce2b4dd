//! A built-in sample upstream that answers like the vendor's API examples
//! (`/1/upload`, `/1/profile.json`, `/1/events.json`), for the demo and for trying the
//! gateway with no API of one's own. It is not a model of the vendor's validation.

use axum::extract::Query;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};
use std::collections::HashMap;

/// The cursor the sample hands out for an events query.
pub const SAMPLE_CURSOR: &str =
    "AfljfgIJBgBnamF5Kz8NegcBAwxhbCe%2Fbmhhe04BBAVlYjT4YG5reQEATQQrai57K2oue04FAUhnd38%3D";

/// The sample API's router.
pub fn router() -> Router {
    Router::new()
        .route("/1/upload", post(upload))
        .route("/1/profile.json", get(profile))
        .route("/1/events.json", post(events_cursor).get(events_page))
}

/// Every route requires the vendor's two authentication headers, in plaintext.
fn authenticate(headers: &HeaderMap) -> Result<(), Box<Response>> {
    let present = |name: &str| headers.get(name).is_some_and(|v| !v.is_empty());
    if present("x-clevertap-account-id") && present("x-clevertap-passcode") {
        Ok(())
    } else {
        Err(Box::new((
            StatusCode::UNAUTHORIZED,
            Json(json!({"status": "fail", "error": "Account ID or Passcode missing", "code": 401})),
        )
            .into_response()))
    }
}

fn bad_json() -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({"status": "fail", "error": "Invalid JSON payload", "code": 400})),
    )
        .into_response()
}

async fn upload(headers: HeaderMap, body: axum::body::Bytes) -> Response {
    if let Err(r) = authenticate(&headers) {
        return *r;
    }
    let Ok(payload) = serde_json::from_slice::<Value>(&body) else {
        return bad_json();
    };
    let Some(records) = payload.get("d").and_then(Value::as_array) else {
        return bad_json();
    };
    Json(json!({"status": "success", "processed": records.len(), "unprocessed": []}))
        .into_response()
}

async fn profile(headers: HeaderMap, Query(q): Query<HashMap<String, String>>) -> Response {
    if let Err(r) = authenticate(&headers) {
        return *r;
    }
    let email = q
        .get("email")
        .cloned()
        .unwrap_or_else(|| "jack@gmail.com".into());
    Json(json!({
        "status": "success",
        "record": {
            "email": email,
            "profileData": {"Last Score": 308, "High Score": 308, "Replayed": true},
            "events": {
                "App Launched": {"count": 10, "first_seen": 1457271567, "last_seen": 1458041215},
                "Charged": {"count": 6, "first_seen": 1457962417, "last_seen": 1458041276}
            },
            "platformInfo": [{
                "platform": "iOS", "os_version": "10.2", "app_version": "6.1.3",
                "make": "Apple", "model": "iPhone7,2",
                "objectId": "-1a063854f83a4c6484285039ecff87cb"
            }]
        }
    }))
    .into_response()
}

async fn events_cursor(headers: HeaderMap, body: axum::body::Bytes) -> Response {
    if let Err(r) = authenticate(&headers) {
        return *r;
    }
    match serde_json::from_slice::<Value>(&body) {
        Ok(q) if q.get("event_name").is_some() => {
            Json(json!({"cursor": SAMPLE_CURSOR, "status": "success"})).into_response()
        }
        _ => bad_json(),
    }
}

async fn events_page(headers: HeaderMap, Query(q): Query<HashMap<String, String>>) -> Response {
    if let Err(r) = authenticate(&headers) {
        return *r;
    }
    if !q.contains_key("cursor") {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"status": "fail", "error": "cursor is required", "code": 400})),
        )
            .into_response();
    }
    Json(json!({
        "status": "success",
        "next_cursor": "ZyZjfwYEAgdjYmZyKz8NegYFAwxmamF%2FZ21meU4BBQFlYmN7ZG5ifAYCTQQrai57K2ouegJMABl6",
        "records": [{
            "profile": {
                "objectId": "a8ffcbc9-a747-4ee3-a791-c5e58ad03097",
                "platform": "Web",
                "email": "peter@example.com",
                "identity": "5555555555"
            },
            "ts": 20240115140416u64,
            "event_props": {"value": "pizza"}
        }]
    }))
    .into_response()
}
