//! The vendor's documented flows, end to end through the gateway in front of the
//! built-in sample upstream: profile upload, the two-step events query, profile GET.

mod support;

use support::{ACCOUNT_HEADER, Gateway, MEDIA, Options, PASSCODE, open_with};

async fn gateway_before_sample_upstream() -> Gateway {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        async move { axum::serve(listener, hpke_gateway::sample_upstream::router()).await },
    );
    Gateway::start_with(Options {
        upstream: Some(addr),
        ..Options::default()
    })
    .await
}

#[tokio::test]
async fn upload_then_two_step_events_then_profile() {
    let gw = gateway_before_sample_upstream().await;

    // 1. POST /1/upload with the seeds' profile payload.
    let payload = hpke_gateway::demo::PROFILE_PAYLOAD.as_bytes();
    let res = gw
        .encrypted_post("/1/upload", "ACCT-1", gw.seal(1, true, "ACCT-1", payload))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body = open_with(&gw.keys.acct1, "ACCT-1", &res.bytes().await.unwrap());
    assert_eq!(
        body,
        br#"{"processed":1,"status":"success","unprocessed":[]}"#
    );

    // 2. POST /1/events.json for a cursor.
    let query = br#"{"event_name":"App Launched","from":20240101,"to":20240131}"#;
    let res = gw
        .encrypted_post(
            "/1/events.json?batch_size=50",
            "ACCT-1",
            gw.seal(2, false, "ACCT-1", query),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let cursor: serde_json::Value = serde_json::from_slice(&open_with(
        &gw.keys.acct1,
        "ACCT-1",
        &res.bytes().await.unwrap(),
    ))
    .unwrap();
    let cursor = cursor["cursor"].as_str().unwrap().to_owned();
    assert_eq!(cursor, hpke_gateway::sample_upstream::SAMPLE_CURSOR);

    // 3. GET /1/events.json?cursor=... with only Accept set, as the seeds do.
    let res = gw
        .client
        .get(format!("{}/1/events.json?cursor={cursor}", gw.url))
        .header(ACCOUNT_HEADER, "ACCT-1")
        .header("X-CleverTap-Passcode", PASSCODE)
        .header("Content-Type", "application/json")
        .header("Accept", MEDIA)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let page: serde_json::Value = serde_json::from_slice(&open_with(
        &gw.keys.acct1,
        "ACCT-1",
        &res.bytes().await.unwrap(),
    ))
    .unwrap();
    assert_eq!(page["status"], "success");
    assert_eq!(page["records"][0]["event_props"]["value"], "pizza");

    // 4. GET /1/profile.json?email=...
    let res = gw
        .client
        .get(format!("{}/1/profile.json?email=jack%40gmail.com", gw.url))
        .header(ACCOUNT_HEADER, "ACCT-1")
        .header("X-CleverTap-Passcode", PASSCODE)
        .header("Content-Type", "application/json")
        .header("Accept", MEDIA)
        .send()
        .await
        .unwrap();
    let profile: serde_json::Value = serde_json::from_slice(&open_with(
        &gw.keys.acct1,
        "ACCT-1",
        &res.bytes().await.unwrap(),
    ))
    .unwrap();
    assert_eq!(profile["record"]["email"], "jack@gmail.com");
}

#[tokio::test]
async fn upstream_auth_failures_come_back_encrypted_with_their_status() {
    let gw = gateway_before_sample_upstream().await;
    // No passcode: the upstream (not the gateway) refuses, and its answer is sealed.
    let res = gw
        .client
        .post(format!("{}/1/upload", gw.url))
        .header("Content-Type", MEDIA)
        .header("Accept", MEDIA)
        .header(ACCOUNT_HEADER, "ACCT-1")
        .body(gw.seal(1, true, "ACCT-1", b"{\"d\":[]}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    assert_eq!(res.headers()["content-type"], MEDIA);
    let body = open_with(&gw.keys.acct1, "ACCT-1", &res.bytes().await.unwrap());
    assert!(String::from_utf8_lossy(&body).contains("Passcode missing"));
}
