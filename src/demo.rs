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
use crate::envelope::{self, Prefix, PrivateKey};
use crate::keys::{self, ServerKey, ServerKeys};

#[cfg(feature = "intake")]
pub mod intake;

/// The demo's encrypted account.
pub const DEMO_ACCOUNT: &str = "ACCT-DEMO";
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
    say!("  gateway           http://{listen}  (account {DEMO_ACCOUNT}, encryption on)\n")?;

    round_trip(listen, &files).await?;

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

struct DemoFiles {
    server_public: PathBuf,
    customer_private: PathBuf,
    customer_key: PrivateKey,
    server_key: PrivateKey,
}

fn write_keys(dir: &Path) -> Result<DemoFiles, BoxError> {
    let server_key = PrivateKey::generate();
    let customer_key = PrivateKey::generate();
    let server_private = dir.join("server-1.pem");
    let server_public = dir.join("server-1.tink.json");
    let customer_private = dir.join("customer.pem");
    let customer_public = dir.join("customer.pub.pem");
    keys::write_secret_file(
        &server_private,
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
        &customer_public,
        keys::public_key_pem(&customer_key.public_key())?,
    )?;
    Ok(DemoFiles {
        server_public,
        customer_private,
        customer_key,
        server_key,
    })
}

fn config_text(listen: SocketAddr, upstream: SocketAddr) -> String {
    format!(
        r#"listen = "{listen}"
upstream = "http://{upstream}"

[[server_keys]]
id = 1
private_key = "server-1.pem"

[[accounts]]
id = "{DEMO_ACCOUNT}"
encryption = true
public_keys = ["customer.pub.pem"]

[[accounts]]
id = "ACCT-PLAIN"
encryption = false
"#
    )
}

async fn round_trip(listen: SocketAddr, files: &DemoFiles) -> Result<(), BoxError> {
    let sealed = envelope::seal(
        &files.server_key.public_key(),
        Prefix::Tink(1),
        DEMO_ACCOUNT.as_bytes(),
        PROFILE_PAYLOAD.as_bytes(),
    )?;
    say!(
        "1. The client seals the seeds' profile upload ({} bytes of JSON)",
        PROFILE_PAYLOAD.len()
    )?;
    say!(
        "   to the gateway's key 1 with info {DEMO_ACCOUNT}: {} bytes on the wire.",
        sealed.len()
    )?;
    let response = reqwest::Client::new()
        .post(format!("http://{listen}/1/upload"))
        .header("Content-Type", crate::HPKE_MEDIA_TYPE)
        .header("Accept", crate::HPKE_MEDIA_TYPE)
        .header("X-CleverTap-Account-Id", DEMO_ACCOUNT)
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
    let plaintext = ring.open(DEMO_ACCOUNT.as_bytes(), body.as_ref().into())?;
    say!("3. The client opens it with its own private key:")?;
    say!("   {}", String::from_utf8_lossy(&plaintext))?;
    Ok(())
}

fn print_walkthrough(listen: SocketAddr, files: &DemoFiles) -> Result<(), BoxError> {
    let exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "hpke-gateway".into());
    say!("\nTry it by hand (in another terminal while the demo runs):\n")?;
    say!(
        "echo -n '{{\"d\":[{{\"identity\":\"1\",\"type\":\"profile\",\"profileData\":{{\"Name\":\"Ada\"}}}}]}}' \\\n  | {exe} seal --recipient {} --info {DEMO_ACCOUNT} \\\n  | curl -sS --data-binary @- \\\n      -H 'Content-Type: {media}' -H 'Accept: {media}' \\\n      -H 'X-CleverTap-Account-Id: {DEMO_ACCOUNT}' -H 'X-CleverTap-Passcode: {DEMO_PASSCODE}' \\\n      http://{listen}/1/upload \\\n  | {exe} open --key {} --info {DEMO_ACCOUNT}",
        files.server_public.display(),
        files.customer_private.display(),
        media = crate::HPKE_MEDIA_TYPE,
    )?;
    say!(
        "\nAn encrypted response to a GET (no body, only Accept):\n\ncurl -sS -H 'Content-Type: application/json' -H 'Accept: {media}' \\\n    -H 'X-CleverTap-Account-Id: {DEMO_ACCOUNT}' -H 'X-CleverTap-Passcode: {DEMO_PASSCODE}' \\\n    'http://{listen}/1/profile.json?email=jack%40gmail.com' \\\n  | {exe} open --key {} --info {DEMO_ACCOUNT}",
        files.customer_private.display(),
        media = crate::HPKE_MEDIA_TYPE,
    )?;
    say!(
        "\nPlaintext still works, untouched:\n\ncurl -sS -H 'Content-Type: application/json' \\\n    -H 'X-CleverTap-Account-Id: ACCT-PLAIN' -H 'X-CleverTap-Passcode: {DEMO_PASSCODE}' \\\n    --data '{{\"d\":[]}}' http://{listen}/1/upload"
    )?;
    Ok(())
}
