//! The embedded default: `hpke-gateway demo` makes fresh keys in a temporary folder,
//! starts the built-in sample upstream and the gateway in front of it, does one
//! encrypted round trip, and prints the commands to try it by hand (unless `--once`:
//! the folder those commands name is gone when it exits).
//!
//! `hpke-gateway demo --intake` does the same for the file intake: see [`intake`].
//!
//! Standard output closing early (`demo | head -1`) ends the demo quietly, with the
//! status a shell gives a process that SIGPIPE ended ([`crate::cli::EXIT_BROKEN_PIPE`]).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use tokio::net::TcpListener;

use crate::BoxError;
use crate::cli::say;
use crate::config::Config;
use crate::envelope::{self, Prefix, PrivateKey, Suite};
use crate::keys::{self, ServerKey, ServerKeys};

#[cfg(feature = "intake")]
pub mod intake;

/// The demo's encrypted account.
pub const DEMO_ACCOUNT: &str = "ACCT-DEMO";
/// The demo's post-quantum account: X-Wing keys both ways, and it requires them.
pub const DEMO_PQ_ACCOUNT: &str = "ACCT-DEMO-PQ";
/// The demo's passcode (the sample upstream only checks that one is sent).
pub const DEMO_PASSCODE: &str = "demo-passcode";
/// The seeds' profile upload payload.
pub const PROFILE_PAYLOAD: &str = r#"{"d":[{"identity":"18121994201671","type":"profile","profileData":{"Name":"Test Name","Email":"test@example.com","Phone":"+14155551235","Gender":"M","Customer Type":"Gold","KYC Document":"PAN","Game Level":"Intermediate"}}]}"#;

/// Runs the demo. With `once`, stops after the round trip. With `intake`, runs the file
/// intake's demo instead ([`intake`]).
pub async fn run(
    listen: SocketAddr,
    once: bool,
    intake: bool,
) -> Result<std::process::ExitCode, BoxError> {
    if intake {
        #[cfg(feature = "intake")]
        return intake::run(listen, once).await;
        #[cfg(not(feature = "intake"))]
        return Err(
            "this hpke-gateway was built without the file intake (cargo feature `intake`)".into(),
        );
    }
    let dir = tempfile::Builder::new()
        .prefix("hpke-gateway-demo-")
        .tempdir()?;
    let files = write_keys(dir.path())?;
    let running = Running::start(dir.path(), listen, "").await?;
    let (upstream_addr, listen) = (running.upstream, running.listen);

    say!("hpke-gateway demo")?;
    say!(
        "  keys and config in {}  (removed when the demo ends)",
        dir.path().display()
    )?;
    say!("  sample upstream   http://{upstream_addr}")?;
    say!("  gateway           http://{listen}  (account {DEMO_ACCOUNT}, encryption on;")?;
    say!("                    account {DEMO_PQ_ACCOUNT}, post-quantum X-Wing only)\n")?;

    round_trip(listen, &files.classical, 1).await?;
    say!("\nThe same for {DEMO_PQ_ACCOUNT}, with X-Wing (ML-KEM-768 + X25519) keys:")?;
    round_trip(listen, &files.pq, 2).await?;

    if once {
        // The by-hand commands would name keys in a folder removed on the way out.
        say!("\nRun the demo without --once to try it by hand while it serves.")?;
    } else {
        // The handlers are in place before the line that invites Ctrl-C: a signal right
        // after it still ends the demo cleanly (and removes its keys).
        let stopping = crate::server::shutdown_signal_installed();
        print_walkthrough(listen, &files)?;
        say!("\nServing until Ctrl-C.")?;
        stopping.await;
    }
    running.stop().await?;
    Ok(std::process::ExitCode::SUCCESS)
}

/// The sample upstream and the gateway in front of it, serving, with the demo's
/// configuration (`gateway.toml` in `dir`, `extra` appended to it).
struct Running {
    upstream: SocketAddr,
    listen: SocketAddr,
    #[cfg_attr(not(feature = "intake"), allow(dead_code))]
    gateway: crate::server::Gateway,
    stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Running {
    async fn start(dir: &Path, listen: SocketAddr, extra: &str) -> Result<Self, BoxError> {
        let upstream = TcpListener::bind("127.0.0.1:0").await?;
        let upstream_addr = upstream.local_addr()?;
        tokio::spawn(async move {
            let _ = axum::serve(upstream, crate::sample_upstream::router()).await;
        });

        let config_path = dir.join("gateway.toml");
        std::fs::write(&config_path, config_text(listen, upstream_addr) + extra)?;
        let config = Config::load(&config_path)?;
        let listener = TcpListener::bind(listen).await.map_err(|e| {
            format!("cannot listen on {listen}: {e} (choose another address with --listen)")
        })?;
        let listen = listener.local_addr()?;
        let gateway = crate::server::Gateway::new(config)?;
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        // The accept loop `serve` runs, with its default timeouts and limits.
        let server = tokio::spawn(crate::server::serve_connections(
            listener,
            gateway.router(),
            None,
            crate::server::ConnectionTimeouts::default(),
            crate::server::ConnectionLimits::default(),
            async move {
                let _ = stop_rx.await;
            },
        ));
        Ok(Self {
            upstream: upstream_addr,
            listen,
            gateway,
            stop,
            server,
        })
    }

    async fn stop(self) -> Result<(), BoxError> {
        let _ = self.stop.send(());
        self.server.await??;
        Ok(())
    }
}

/// One account's keys: the gateway's key clients seal to and the customer's own.
struct AccountFiles {
    account: &'static str,
    server_public: PathBuf,
    customer_private: PathBuf,
    customer_key: PrivateKey,
    server_key: PrivateKey,
}

struct DemoFiles {
    classical: AccountFiles,
    pq: AccountFiles,
}

fn write_keys(dir: &Path) -> Result<DemoFiles, BoxError> {
    let server_key = PrivateKey::generate();
    let customer_key = PrivateKey::generate();
    let server_public = dir.join("server-1.tink.json");
    let customer_private = dir.join("customer.pem");
    keys::write_secret_file(
        &dir.join("server-1.pem"),
        keys::private_key_pem(&server_key)?.as_bytes(),
    )?;
    std::fs::write(
        &server_public,
        keys::public_keyset_json(&server_key.public_key(), Prefix::Tink(1), 1),
    )?;
    keys::write_secret_file(
        &customer_private,
        keys::private_key_pem(&customer_key)?.as_bytes(),
    )?;
    std::fs::write(
        dir.join("customer.pub.pem"),
        keys::public_key_pem(&customer_key.public_key())?,
    )?;
    let classical = AccountFiles {
        account: DEMO_ACCOUNT,
        server_public,
        customer_private,
        customer_key,
        server_key,
    };

    // Post-quantum: the gateway's X-Wing key 2 (PEM, its suite declared in the config)
    // and the customer's X-Wing Tink keyset (which names its suite).
    let server_key = PrivateKey::generate_for(Suite::XWING_AES_256_GCM);
    let customer_key = PrivateKey::generate_for(Suite::XWING_AES_256_GCM);
    let server_public = dir.join("server-2-pq.tink.json");
    let customer_private = dir.join("customer-pq.json");
    keys::write_secret_file(
        &dir.join("server-2-pq.pem"),
        keys::private_key_pem(&server_key)?.as_bytes(),
    )?;
    std::fs::write(
        &server_public,
        keys::public_keyset_json(&server_key.public_key(), Prefix::Tink(2), 2),
    )?;
    keys::write_secret_file(
        &customer_private,
        keys::private_keyset_json(&customer_key, Prefix::Raw, 7).as_bytes(),
    )?;
    std::fs::write(
        dir.join("customer-pq.pub.json"),
        keys::public_keyset_json(&customer_key.public_key(), Prefix::Raw, 7),
    )?;
    let pq = AccountFiles {
        account: DEMO_PQ_ACCOUNT,
        server_public,
        customer_private,
        customer_key,
        server_key,
    };
    Ok(DemoFiles { classical, pq })
}

fn config_text(listen: SocketAddr, upstream: SocketAddr) -> String {
    format!(
        r#"listen = "{listen}"
upstream = "http://{upstream}"

[[server_keys]]
id = 1
private_key = "server-1.pem"

[[server_keys]]
id = 2
private_key = "server-2-pq.pem"
suite = "xwing-aes-256-gcm"

[[accounts]]
id = "{DEMO_ACCOUNT}"
encryption = true
public_keys = ["customer.pub.pem"]

[[accounts]]
id = "{DEMO_PQ_ACCOUNT}"
encryption = true
public_keys = ["customer-pq.pub.json"]
request_suites = ["xwing-aes-256-gcm"]

[[accounts]]
id = "ACCT-PLAIN"
encryption = false
"#
    )
}

async fn round_trip(listen: SocketAddr, files: &AccountFiles, key_id: u32) -> Result<(), BoxError> {
    let account = files.account;
    let sealed = envelope::seal(
        &files.server_key.public_key(),
        Prefix::Tink(key_id),
        account.as_bytes(),
        PROFILE_PAYLOAD.as_bytes(),
    )?;
    say!(
        "1. The client seals the seeds' profile upload ({} bytes of JSON)",
        PROFILE_PAYLOAD.len()
    )?;
    say!(
        "   to the gateway's key {key_id} ({}) with info {account}: {} bytes on the wire.",
        files.server_key.suite(),
        sealed.len()
    )?;
    let response = reqwest::Client::new()
        .post(format!("http://{listen}/1/upload"))
        .header("Content-Type", crate::HPKE_MEDIA_TYPE)
        .header("Accept", crate::HPKE_MEDIA_TYPE)
        .header("X-CleverTap-Account-Id", account)
        .header("X-CleverTap-Passcode", DEMO_PASSCODE)
        .body(sealed)
        .send()
        .await?;
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = response.bytes().await?;
    say!(
        "2. POST /1/upload answered {status} with {} bytes of {content_type}.",
        body.len()
    )?;
    if content_type != crate::HPKE_MEDIA_TYPE {
        return Err(format!(
            "expected an encrypted response, got: {}",
            String::from_utf8_lossy(&body)
        )
        .into());
    }
    let ring = ServerKeys::new(vec![ServerKey::new(None, files.customer_key.clone())]);
    let plaintext = ring.open(account.as_bytes(), body.as_ref().into())?;
    say!("3. The client opens it with its own private key:")?;
    say!("   {}", String::from_utf8_lossy(&plaintext))?;
    Ok(())
}

fn print_walkthrough(listen: SocketAddr, files: &DemoFiles) -> Result<(), BoxError> {
    let exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "hpke-gateway".into());
    let media = crate::HPKE_MEDIA_TYPE;
    say!("\nTry it by hand (in another terminal while the demo runs):\n")?;
    for (title, f) in [
        ("", &files.classical),
        (
            "\nPost-quantum: the same with X-Wing keys (the keysets name their suite):\n\n",
            &files.pq,
        ),
    ] {
        say!(
            "{title}echo -n '{{\"d\":[{{\"identity\":\"1\",\"type\":\"profile\",\"profileData\":{{\"Name\":\"Ada\"}}}}]}}' \\\n  | {exe} seal --recipient {} --info {account} \\\n  | curl -sS --data-binary @- \\\n      -H 'Content-Type: {media}' -H 'Accept: {media}' \\\n      -H 'X-CleverTap-Account-Id: {account}' -H 'X-CleverTap-Passcode: {DEMO_PASSCODE}' \\\n      http://{listen}/1/upload \\\n  | {exe} open --key {} --info {account}",
            f.server_public.display(),
            f.customer_private.display(),
            account = f.account,
        )?;
    }
    say!(
        "\nAn encrypted response to a GET (no body, only Accept):\n\ncurl -sS -H 'Content-Type: application/json' -H 'Accept: {media}' \\\n    -H 'X-CleverTap-Account-Id: {DEMO_ACCOUNT}' -H 'X-CleverTap-Passcode: {DEMO_PASSCODE}' \\\n    'http://{listen}/1/profile.json?email=jack%40gmail.com' \\\n  | {exe} open --key {} --info {DEMO_ACCOUNT}",
        files.classical.customer_private.display(),
    )?;
    say!(
        "\nPlaintext still works, untouched:\n\ncurl -sS -H 'Content-Type: application/json' \\\n    -H 'X-CleverTap-Account-Id: ACCT-PLAIN' -H 'X-CleverTap-Passcode: {DEMO_PASSCODE}' \\\n    --data '{{\"d\":[]}}' http://{listen}/1/upload"
    )?;
    Ok(())
}
