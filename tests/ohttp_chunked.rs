//! Chunked Oblivious HTTP (draft-ietf-ohai-chunked-ohttp) through the real router:
//! requests streamed chunk by chunk to the upstream, answers streamed back, the `ohttp`
//! crate's own chunked client, and truncated, tampered and oversized streams.

mod support;

use std::time::Duration;

use hpke_gateway::envelope::Suite;
use hpke_gateway::envelope::ohttp::chunked::{self, Deframer, write_varint};
use support::{Gateway, Options};

async fn ohttp_gateway() -> Gateway {
    Gateway::start_ohttp(Options::default()).await
}

/// An indeterminate-length Binary HTTP request to api.example.com.
fn inner_request(method: &str, path: &str, body: &[u8]) -> Vec<u8> {
    let mut m = bhttp::Message::request(
        method.as_bytes().to_vec(),
        b"https".to_vec(),
        b"api.example.com".to_vec(),
        path.as_bytes().to_vec(),
    );
    m.put_header("content-type", "application/octet-stream");
    m.write_content(body);
    let mut out = Vec::new();
    m.write_bhttp(bhttp::Mode::IndeterminateLength, &mut out)
        .unwrap();
    out
}

/// `inner` sealed as a chunked request to server key 1 in pieces of `chunk` bytes: the
/// pieces of the outer stream (header and `enc` first) and the client.
fn sealed_pieces(
    gw: &Gateway,
    inner: &[u8],
    chunk: usize,
) -> (Vec<Vec<u8>>, chunked::ClientRequest) {
    let public = gw.keys.server[0].1.public_key();
    let (start, mut client) =
        chunked::seal_request_header(1, &public, Suite::X25519_AES_128_GCM).unwrap();
    let mut pieces = vec![start];
    let parts: Vec<&[u8]> = inner.chunks(chunk).collect();
    for (i, part) in parts.iter().enumerate() {
        pieces.push(client.seal_chunk(part, i + 1 == parts.len()).unwrap());
    }
    (pieces, client)
}

/// Posts `pieces` as a streamed body, `pause` between pieces; the status, media type
/// and body of the answer.
async fn post_pieces(
    gw: &Gateway,
    pieces: Vec<Vec<u8>>,
    pause: Duration,
) -> (u16, String, Vec<u8>) {
    let stream = futures_util::stream::iter(pieces).then(move |p| async move {
        tokio::time::sleep(pause).await;
        Ok::<_, std::io::Error>(p)
    });
    let res = support::post_ohttp(
        &gw.client,
        &gw.url,
        "message/ohttp-chunked-req",
        reqwest::Body::wrap_stream(stream),
    )
    .await;
    let status = res.status().as_u16();
    let media = res
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, media, res.bytes().await.unwrap().to_vec())
}

/// Opens a chunked response: the Binary HTTP message and how many chunks carried it.
fn open_response(client: &chunked::ClientRequest, body: &[u8]) -> (bhttp::Message, usize) {
    let n = client.response_nonce_len();
    let mut opener = client.response_opener(&body[..n]).unwrap();
    let mut deframer = Deframer::new();
    deframer.push(&body[n..]).unwrap();
    let mut plain = Vec::new();
    let mut chunks = 1;
    while let Some(chunk) = deframer.next_chunk().unwrap() {
        plain.extend(opener.open_chunk(&chunk, false).unwrap());
        chunks += 1;
    }
    plain.extend(
        opener
            .open_chunk(&deframer.finish().unwrap(), true)
            .unwrap(),
    );
    let message = bhttp::Message::read_bhttp(&mut std::io::Cursor::new(&plain)).unwrap();
    (message, chunks)
}

use futures_util::StreamExt as _;

/// A buffer the `ohttp` crate's stream writes into while the test keeps a handle.
#[derive(Clone, Default)]
struct Shared(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl futures_util::io::AsyncWrite for Shared {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.0.lock().unwrap().extend_from_slice(buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_close(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

#[tokio::test]
async fn a_chunked_request_streams_to_the_upstream_and_its_answer_streams_back() {
    let gw = ohttp_gateway().await;
    let body: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    let inner = inner_request("POST", "/1/upload", &body);
    let (pieces, client) = sealed_pieces(&gw, &inner, 16 * 1024);
    assert!(pieces.len() > 60);
    let (status, media, answer) = post_pieces(&gw, pieces, Duration::from_millis(1)).await;
    assert_eq!((status, media.as_str()), (200, "message/ohttp-chunked-res"));
    let (message, chunks) = open_response(&client, &answer);
    assert_eq!(message.control().status().unwrap().code(), 200);
    assert_eq!(message.content(), &body[..], "the upstream echoes the body");
    assert!(chunks > 2, "the answer came in {chunks} chunks");
    let seen = gw.upstream.last();
    assert_eq!(
        (seen.method.as_str(), seen.uri.as_str()),
        ("POST", "/1/upload")
    );
    assert_eq!(seen.body, &body[..]);
    assert_eq!(seen.headers["content-type"], "application/octet-stream");

    // A small request in one final chunk goes whole, with its length.
    let inner = inner_request("PUT", "/1/profile", b"small");
    let (pieces, client) = sealed_pieces(&gw, &inner, 4096);
    assert_eq!(pieces.len(), 2);
    let (status, _, answer) = post_pieces(&gw, pieces.clone(), Duration::ZERO).await;
    assert_eq!(status, 200);
    assert_eq!(open_response(&client, &answer).0.content(), b"small");
    let seen = gw.upstream.last();
    assert_eq!(seen.headers["content-length"], "5");

    // The same stream again: a replay, refused inside the encapsulation.
    let before = gw.upstream.count();
    let (status, _, answer) = post_pieces(&gw, pieces, Duration::ZERO).await;
    assert_eq!(status, 200);
    let (message, _) = open_response(&client, &answer);
    assert_eq!(message.control().status().unwrap().code(), 400);
    let v: serde_json::Value = serde_json::from_slice(message.content()).unwrap();
    assert_eq!(v["code"], 4023);
    assert_eq!(gw.upstream.count(), before);
}

#[tokio::test]
async fn the_ohttp_crates_chunked_client_round_trips_through_the_gateway() {
    use futures_util::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let gw = ohttp_gateway().await;
    let keys = gw
        .client
        .get(format!("{}/.well-known/ohttp-keys", gw.url))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let body = vec![b'x'; 100_000];
    let inner = inner_request("POST", "/1/upload", &body);
    let client = ::ohttp::ClientRequest::from_encoded_config_list(&keys).unwrap();
    let sealed = Shared::default();
    let mut writer = client.encapsulate_stream(sealed.clone()).unwrap();
    writer.write_all(&inner).await.unwrap();
    writer.close().await.unwrap();
    let sealed = sealed.0.lock().unwrap().clone();
    let res = support::post_ohttp(&gw.client, &gw.url, "message/ohttp-chunked-req", sealed).await;
    assert_eq!(res.status(), 200);
    let answer = res.bytes().await.unwrap();
    let mut reader = writer
        .response(futures_util::io::Cursor::new(answer))
        .unwrap();
    let mut plain = Vec::new();
    reader.read_to_end(&mut plain).await.unwrap();
    let message = bhttp::Message::read_bhttp(&mut std::io::Cursor::new(&plain)).unwrap();
    assert_eq!(message.control().status().unwrap().code(), 200);
    assert_eq!(message.content(), &body[..]);
    assert_eq!(gw.upstream.last().body, &body[..]);
}

#[tokio::test]
async fn truncated_tampered_and_oversized_chunked_requests_are_never_forwarded_whole() {
    let gw = ohttp_gateway().await;
    let body = vec![7u8; 200_000];
    let inner = inner_request("POST", "/1/upload", &body);

    // Without its final chunk, cut before the head is whole: refused in the clear.
    let (pieces, _) = sealed_pieces(&gw, &inner[..40], 8);
    let cut = pieces[..pieces.len() - 1].to_vec();
    let (status, media, answer) = post_pieces(&gw, cut, Duration::ZERO).await;
    assert_eq!((status, media.as_str()), (400, "application/problem+json"));
    assert!(String::from_utf8_lossy(&answer).contains("truncated"));
    assert_eq!(gw.upstream.count(), 0);

    // Without its final chunk, after the head and some content: the upstream's request
    // is aborted, never completed; the client learns it failed.
    let (pieces, client) = sealed_pieces(&gw, &inner, 16 * 1024);
    let cut = pieces[..pieces.len() - 1].to_vec();
    let (status, _, answer) = post_pieces(&gw, cut, Duration::from_millis(1)).await;
    assert_eq!(status, 200);
    let (message, _) = open_response(&client, &answer);
    assert!(message.control().status().unwrap().code() >= 500);
    assert_eq!(
        gw.upstream.count(),
        0,
        "the upstream never took it as whole"
    );

    // A chunk with a flipped bit before the head is whole: "decryption failed".
    let (mut pieces, _) = sealed_pieces(&gw, &inner, 8);
    let last = pieces[1].len() - 1;
    pieces[1][last] ^= 1;
    let (status, _, answer) = post_pieces(&gw, pieces, Duration::ZERO).await;
    assert_eq!(status, 400);
    assert!(String::from_utf8_lossy(&answer).contains("decryption failed"));

    // A chunk length beyond the largest chunk: refused before its bytes come.
    let (mut pieces, _) = sealed_pieces(&gw, &inner, 16 * 1024);
    pieces.truncate(1);
    let mut huge = Vec::new();
    write_varint(&mut huge, 1 << 40);
    pieces.push(huge);
    let (status, _, answer) = post_pieces(&gw, pieces, Duration::ZERO).await;
    assert_eq!(status, 400);
    assert!(String::from_utf8_lossy(&answer).contains("malformed"));

    // An unknown key id: RFC 9458's 422; a stream too short for its header: 400.
    let (mut pieces, _) = sealed_pieces(&gw, &inner, 16 * 1024);
    pieces[0][0] = 99;
    assert_eq!(post_pieces(&gw, pieces, Duration::ZERO).await.0, 422);
    assert_eq!(
        post_pieces(&gw, vec![vec![1, 0]], Duration::ZERO).await.0,
        400
    );
    assert_eq!(gw.upstream.count(), 0);

    // And the next good request works.
    let (pieces, client) = sealed_pieces(&gw, &inner_request("POST", "/1/upload", b"ok"), 64);
    let (status, _, answer) = post_pieces(&gw, pieces, Duration::ZERO).await;
    assert_eq!(status, 200);
    assert_eq!(open_response(&client, &answer).0.content(), b"ok");
}

/// A head that trickles in (each piece within the idle timeout) is cut off at
/// `request_body_timeout` with a 408 in the clear, and nothing is forwarded.
#[tokio::test]
async fn a_head_that_trickles_in_meets_the_request_body_timeout() {
    let gw = Gateway::start_ohttp(Options {
        request_body_timeout_ms: 1000,
        ..Options::default()
    })
    .await;
    let inner = inner_request("POST", "/1/upload", b"slow");
    let (pieces, _) = sealed_pieces(&gw, &inner, 1);
    let started = std::time::Instant::now();
    let (status, _, _) = post_pieces(&gw, pieces, Duration::from_millis(300)).await;
    assert_eq!(status, 408);
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(gw.upstream.count(), 0);
}
