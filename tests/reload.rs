//! A reload applies each reloadable setting (`LiveState`, docs/operations.md "Reload")
//! to every part of the request path at once: one test per setting, each against the
//! real binary, the old value observed before the reload and the new one after it.

mod support;

use std::time::Duration;

use hpke_gateway::envelope;
use support::served::Served;
use support::{MEDIA, Upstream, open_with};

/// A gateway with `extra` top-level settings in front of a recording upstream.
async fn start(extra: &str) -> (Served, Upstream) {
    let (up, addr) = Upstream::start().await;
    (Served::start(addr, extra).await, up)
}

/// An encrypted POST of `body` to `path` with the account in `header`; the status and
/// the answer's plaintext (empty unless 200).
async fn sealed_post(gw: &Served, header: &str, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
    let (server, prefix) = gw.published_primary().await;
    let sealed = envelope::seal(&server, prefix, b"ACCT-1", body).unwrap();
    let res = gw
        .client
        .post(format!("{}{path}", gw.url))
        .header("content-type", MEDIA)
        .header("accept", MEDIA)
        .header(header, "ACCT-1")
        .body(sealed)
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    let bytes = res.bytes().await.unwrap();
    let plain = if status == 200 {
        open_with(gw.customer(), "ACCT-1", &bytes)
    } else {
        Vec::new()
    };
    (status, plain)
}

#[tokio::test(flavor = "multi_thread")]
async fn account_header_reloads_for_the_middleware_and_the_access_log() {
    let (gw, _up) = start("account_header = \"X-CleverTap-Account-Id\"").await;
    assert_eq!(
        sealed_post(&gw, "X-Tenant", "/1/upload", b"{}").await.0,
        400
    );
    gw.reload_after(|| gw.edit_config("\"X-CleverTap-Account-Id\"", "\"X-Tenant\""))
        .await;
    let (status, plain) = sealed_post(&gw, "X-Tenant", "/1/upload", b"{\"d\":1}").await;
    assert_eq!((status, plain.as_slice()), (200, &b"{\"d\":1}"[..]));
    // The access log names the account from the renamed header too (before the fix it
    // kept reading the old header and logged "-").
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !gw
        .log
        .lock()
        .unwrap()
        .iter()
        .any(|l| l.contains("hpke_gateway::access") && l.contains("ACCT-1"))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no access line names ACCT-1"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_timeout_reloads_for_the_answer_head() {
    // `/slow` answers its head after 3 s.
    let (gw, _up) = start("upstream_timeout_ms = 10000").await;
    assert_eq!(
        sealed_post(&gw, "X-CleverTap-Account-Id", "/slow", b"{}")
            .await
            .0,
        200
    );
    gw.reload_after(|| gw.edit_config("upstream_timeout_ms = 10000", "upstream_timeout_ms = 1000"))
        .await;
    assert_eq!(
        sealed_post(&gw, "X-CleverTap-Account-Id", "/slow", b"{}")
            .await
            .0,
        504
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn body_limits_reload() {
    let (gw, _up) =
        start("max_encrypted_body_bytes = 1000000\nmax_response_body_bytes = 1000000").await;
    let big = vec![b'a'; 4000];
    assert_eq!(
        sealed_post(&gw, "X-CleverTap-Account-Id", "/1/upload", &big)
            .await
            .0,
        200
    );
    assert_eq!(
        sealed_post(&gw, "X-CleverTap-Account-Id", "/big/5000", b"")
            .await
            .0,
        200
    );
    gw.reload_after(|| {
        gw.edit_config(
            "max_encrypted_body_bytes = 1000000",
            "max_encrypted_body_bytes = 1000",
        );
        gw.edit_config(
            "max_response_body_bytes = 1000000",
            "max_response_body_bytes = 1000",
        );
    })
    .await;
    assert_eq!(
        sealed_post(&gw, "X-CleverTap-Account-Id", "/1/upload", &big)
            .await
            .0,
        413
    );
    assert_eq!(
        sealed_post(&gw, "X-CleverTap-Account-Id", "/big/5000", b"")
            .await
            .0,
        502
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn underscores_in_headers_reloads() {
    let (gw, up) = start("underscores_in_headers = false").await;
    let send = || async {
        let res = gw
            .client
            .get(format!("{}/plain", gw.url))
            .header("x_note", "1")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        up.last().headers.contains_key("x_note")
    };
    assert!(!send().await, "dropped by default");
    gw.reload_after(|| {
        gw.edit_config(
            "underscores_in_headers = false",
            "underscores_in_headers = true",
        )
    })
    .await;
    assert!(send().await, "kept once allowed");
}

#[tokio::test(flavor = "multi_thread")]
async fn plaintext_content_type_reloads() {
    let (gw, up) = start("plaintext_content_type = \"application/json\"").await;
    let seen = || {
        up.last().headers["content-type"]
            .to_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(
        sealed_post(&gw, "X-CleverTap-Account-Id", "/1/upload", b"{}")
            .await
            .0,
        200
    );
    assert_eq!(seen(), "application/json");
    gw.reload_after(|| gw.edit_config("\"application/json\"", "\"text/plain\""))
        .await;
    assert_eq!(
        sealed_post(&gw, "X-CleverTap-Account-Id", "/1/upload", b"{}")
            .await
            .0,
        200
    );
    assert_eq!(seen(), "text/plain");
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_max_age_reloads() {
    let (gw, _up) = start("keys_max_age_s = 3600").await;
    let max_age = || async {
        let res = gw
            .client
            .get(format!("{}/.well-known/hpke-keys", gw.url))
            .send()
            .await
            .unwrap();
        res.headers()["cache-control"].to_str().unwrap().to_owned()
    };
    assert_eq!(max_age().await, "public, max-age=3600");
    gw.reload_after(|| gw.edit_config("keys_max_age_s = 3600", "keys_max_age_s = 60"))
        .await;
    assert_eq!(max_age().await, "public, max-age=60");
}

#[tokio::test(flavor = "multi_thread")]
async fn request_body_timeouts_reload() {
    let (gw, _up) =
        start("request_body_idle_timeout_ms = 10000\nrequest_body_timeout_ms = 30000").await;
    // A plaintext body in two parts, 1.5 s apart.
    let slow_post = || async {
        let parts = futures_util::stream::unfold(0, |i| async move {
            match i {
                0 => Some((
                    Ok::<_, std::io::Error>(bytes::Bytes::from_static(b"{\"a\":")),
                    1,
                )),
                1 => {
                    tokio::time::sleep(Duration::from_millis(1500)).await;
                    Some((Ok(bytes::Bytes::from_static(b"1}")), 2))
                }
                _ => None,
            }
        });
        gw.client
            .post(format!("{}/echo", gw.url))
            .header("content-type", "application/json")
            .body(reqwest::Body::wrap_stream(parts))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(slow_post().await, 200);
    gw.reload_after(|| {
        gw.edit_config(
            "request_body_idle_timeout_ms = 10000",
            "request_body_idle_timeout_ms = 500",
        )
    })
    .await;
    assert_eq!(slow_post().await, 408);
    gw.reload_after(|| {
        gw.edit_config(
            "request_body_idle_timeout_ms = 500",
            "request_body_idle_timeout_ms = 10000",
        );
        gw.edit_config(
            "request_body_timeout_ms = 30000",
            "request_body_timeout_ms = 1000",
        );
    })
    .await;
    assert_eq!(slow_post().await, 408);
}

/// A setting that needs a restart is named in the reload's warning and keeps its value.
#[tokio::test(flavor = "multi_thread")]
async fn a_restart_only_setting_is_named_and_kept() {
    let (gw, _up) = start("max_concurrent_requests = 100").await;
    gw.reload_after(|| {
        gw.edit_config(
            "max_concurrent_requests = 100",
            "max_concurrent_requests = 1",
        )
    })
    .await;
    gw.wait_log("settings=max_concurrent_requests", 1).await;
    // Still 100 slots: two requests at once both pass.
    let (a, b) = tokio::join!(
        sealed_post(&gw, "X-CleverTap-Account-Id", "/slow", b"{}"),
        sealed_post(&gw, "X-CleverTap-Account-Id", "/slow", b"{}")
    );
    assert_eq!((a.0, b.0), (200, 200));
}
