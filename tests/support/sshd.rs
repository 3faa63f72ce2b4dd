//! A real OpenSSH `sshd` for integration tests of the encrypted file intake.
//!
//! [`Sshd::start`] runs the Debian package's `/usr/sbin/sshd` on 127.0.0.1 with a
//! throw-away host key and user key and a chrooted, SFTP-only account laid out like
//! production:
//!
//! ```text
//! root/
//!   sshd_config  sshd.log  sshd.pid  authorized_keys
//!   host_ed25519[.pub]  user_ed25519[.pub]  batch-N.txt
//!   chroot/          root:root 0755   (ChrootDirectory)
//!     upload/        owned by the login user, where a session starts and `put` lands
//! ```
//!
//! [`Sshd::sftp_batch`] then uploads with the real `sftp -b` client, as a customer does.
//!
//! # What the environment must provide
//!
//! * The `openssh-server` and `openssh-client` Debian packages (`/usr/sbin/sshd`,
//!   `sftp`, `ssh-keygen`, `id`).
//! * Root: sshd only chroots (and only lets a user's sessions run) when started as
//!   root, and it needs the privilege separation directory `/run/sshd`, which this
//!   module creates. [`Sshd::start`] panics with a clear message otherwise.
//! * `ChrootDirectory` is refused at login time unless EVERY component of its path,
//!   from `/` down, is owned by root and not group- or world-writable. `/tmp` (mode
//!   1777) is therefore unusable; [`scratch_root`] picks a base under
//!   `CARGO_TARGET_TMPDIR` (falling back to `/run`) and [`Sshd::start`] asserts the
//!   rule for the `root` it is given, naming the offending component.
#![allow(dead_code)]

use std::fs;
use std::io::{Read, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// The server binary from Debian's `openssh-server` package. An absolute path is
/// required: sshd re-executes itself for every connection.
pub const SSHD: &str = "/usr/sbin/sshd";

/// The privilege separation directory Debian's sshd insists on (root-owned, 0755).
pub const PRIVSEP_DIR: &str = "/run/sshd";

/// How long [`Sshd::start`] waits for the port to answer with an SSH banner.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);

/// How long one `sftp` run may take before it is killed and the test fails.
pub const SFTP_TIMEOUT: Duration = Duration::from_secs(60);

/// How many lines of `sshd.log` the panic messages quote.
const LOG_TAIL_LINES: usize = 40;

/// How many ports to try when another process grabs the chosen free port first.
const BIND_ATTEMPTS: usize = 5;

/// A fresh, empty directory suitable as the `root` of [`Sshd::start`], removed when
/// the returned guard drops.
///
/// It is created under `CARGO_TARGET_TMPDIR` when every component of that path is
/// root-owned and not group/world-writable (sshd's `ChrootDirectory` rule), else under
/// `/run` (root-owned 0755 on Debian). Panics naming the problem when neither fits.
pub fn scratch_root() -> tempfile::TempDir {
    let candidates = [
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")),
        PathBuf::from("/run"),
    ];
    let mut problems = Vec::new();
    for base in &candidates {
        if let Err(e) = fs::create_dir_all(base) {
            problems.push(format!("{}: cannot create: {e}", base.display()));
            continue;
        }
        match check_chroot_safe(base) {
            Ok(()) => {
                return tempfile::Builder::new()
                    .prefix("hpke-gateway-sshd-")
                    .tempdir_in(base)
                    .unwrap_or_else(|e| {
                        panic!("cannot create a temp dir in {}: {e}", base.display())
                    });
            }
            Err(why) => problems.push(why),
        }
    }
    panic!(
        "no base directory fits sshd's ChrootDirectory rule (every path component \
         root-owned and not group/world-writable): {}",
        problems.join("; ")
    );
}

/// Generates an ed25519 key pair with `ssh-keygen -q -N "" -t ed25519`: the private
/// key at `path` (mode 0600) and the public key at `path` + `.pub`.
pub fn generate_key(path: &Path) {
    let out = Command::new("ssh-keygen")
        .args([
            "-q",
            "-N",
            "",
            "-t",
            "ed25519",
            "-C",
            "hpke-gateway-test",
            "-f",
        ])
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run ssh-keygen (install openssh-client): {e}"));
    assert!(
        out.status.success(),
        "ssh-keygen -f {} failed: {}\n{}",
        path.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A running `sshd -D -e` child on 127.0.0.1 with an SFTP-only, chrooted login for
/// the current user. Killed (and reaped) on drop.
pub struct Sshd {
    child: Child,
    root: PathBuf,
    port: u16,
    user: String,
    user_key: PathBuf,
    log_path: PathBuf,
    batches: AtomicUsize,
}

impl Sshd {
    /// Lays out `root` (see the module docs), generates the keys, writes and checks
    /// (`sshd -t`) the config, starts `/usr/sbin/sshd -D -e -f root/sshd_config`, and
    /// returns once the port answers with an SSH banner.
    ///
    /// `root` must exist, and it and all its ancestors must be root-owned and not
    /// group/world-writable (use [`scratch_root`]). Panics with sshd's output when
    /// anything fails; panics at once when not running as root.
    pub fn start(root: &Path) -> Sshd {
        let uid = command_stdout("id", &["-u"]);
        assert!(
            uid == "0",
            "the sshd test harness must run as root (uid 0), but runs as uid {uid}: sshd \
             needs root to chroot SFTP sessions, to switch to the login user and to use \
             the privilege separation directory {PRIVSEP_DIR}"
        );
        let user = command_stdout("id", &["-un"]);
        let root = root
            .canonicalize()
            .unwrap_or_else(|e| panic!("sshd root {} is not usable: {e}", root.display()));

        // The chroot: root-owned 0755 all the way up, as sshd demands.
        let chroot = root.join("chroot");
        let upload = chroot.join("upload");
        fs::create_dir_all(&upload).unwrap();
        fs::set_permissions(&chroot, fs::Permissions::from_mode(0o755)).unwrap();
        fs::set_permissions(&upload, fs::Permissions::from_mode(0o755)).unwrap();
        if let Err(why) = check_chroot_safe(&chroot) {
            panic!(
                "sshd would refuse ChrootDirectory {}: {why}",
                chroot.display()
            );
        }
        // The login user writes here. (It is root in tests, so this is a no-op there.)
        let ids = (
            command_stdout("id", &["-u", &user]),
            command_stdout("id", &["-g", &user]),
        );
        let (Ok(login_uid), Ok(login_gid)) = (ids.0.parse::<u32>(), ids.1.parse::<u32>()) else {
            panic!("cannot parse the ids of {user}: {ids:?}");
        };
        std::os::unix::fs::chown(&upload, Some(login_uid), Some(login_gid)).unwrap();

        let host_key = root.join("host_ed25519");
        let user_key = root.join("user_ed25519");
        generate_key(&host_key);
        generate_key(&user_key);
        let authorized_keys = root.join("authorized_keys");
        fs::copy(user_key.with_extension("pub"), &authorized_keys).unwrap();
        fs::set_permissions(&authorized_keys, fs::Permissions::from_mode(0o600)).unwrap();

        fs::create_dir_all(PRIVSEP_DIR)
            .unwrap_or_else(|e| panic!("cannot create {PRIVSEP_DIR}: {e}"));
        fs::set_permissions(PRIVSEP_DIR, fs::Permissions::from_mode(0o755)).unwrap();

        let config_path = root.join("sshd_config");
        let log_path = root.join("sshd.log");
        let mut last_log = String::new();
        for _ in 0..BIND_ATTEMPTS {
            let port = free_port();
            let config = render_config(&ConfigParams {
                port,
                host_key: &host_key,
                pid_file: &root.join("sshd.pid"),
                authorized_keys: &authorized_keys,
                chroot: &chroot,
                user: &user,
            });
            fs::write(&config_path, config).unwrap();

            let check = Command::new(SSHD)
                .arg("-t")
                .arg("-f")
                .arg(&config_path)
                .stdin(Stdio::null())
                .output()
                .unwrap_or_else(|e| panic!("cannot run {SSHD} (install openssh-server): {e}"));
            assert!(
                check.status.success(),
                "`{SSHD} -t -f {}` rejected the config ({}):\n{}\n--- config ---\n{}",
                config_path.display(),
                check.status,
                String::from_utf8_lossy(&check.stderr),
                fs::read_to_string(&config_path).unwrap_or_default()
            );

            let log = fs::File::create(&log_path).unwrap();
            let child = Command::new(SSHD)
                .arg("-D")
                .arg("-e")
                .arg("-f")
                .arg(&config_path)
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {SSHD}: {e}"));
            let mut sshd = Sshd {
                child,
                root: root.clone(),
                port,
                user: user.clone(),
                user_key: user_key.clone(),
                log_path: log_path.clone(),
                batches: AtomicUsize::new(0),
            };
            match sshd.wait_ready() {
                Ok(()) => return sshd,
                Err(Retry::PortTaken) => {
                    last_log = sshd.log_tail();
                    drop(sshd);
                }
                Err(Retry::Fatal(why)) => {
                    panic!(
                        "sshd did not start: {why}\n--- sshd.log (tail) ---\n{}",
                        sshd.log_tail()
                    )
                }
            }
        }
        panic!("sshd could not bind a free port in {BIND_ATTEMPTS} tries; last log:\n{last_log}");
    }

    /// The TCP port sshd listens on (on 127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The login user (the current user, from `id -un`).
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The host path of the `root` given to [`Sshd::start`] (canonicalized).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The host path of the chroot (`root/chroot`); `/` inside an SFTP session.
    pub fn chroot_dir(&self) -> PathBuf {
        self.root.join("chroot")
    }

    /// The host path of `root/chroot/upload`, where a session starts (`internal-sftp -d
    /// /upload`, as the shipped snippet has it) and a bare `put` lands.
    pub fn upload_dir(&self) -> PathBuf {
        self.chroot_dir().join("upload")
    }

    /// The authorized user's private key (its public half is `<this>.pub`).
    pub fn user_key(&self) -> &Path {
        &self.user_key
    }

    /// The file sshd's `-e` output (its whole log, `LogLevel VERBOSE`) goes to.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The last lines of sshd's log, for assertion messages.
    pub fn log_tail(&self) -> String {
        let log = fs::read_to_string(&self.log_path).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
    }

    /// Runs the batch `commands` with the authorized [`user_key`](Sshd::user_key), as a
    /// customer would:
    ///
    /// `sftp -b <batchfile> -i <key> -P <port> -o StrictHostKeyChecking=no
    /// -o UserKnownHostsFile=/dev/null -o BatchMode=yes <user>@127.0.0.1`
    ///
    /// in the current directory `local_dir`, so `put file.csv.asc` takes a relative
    /// name. The session starts in `/upload` (the chroot's `upload/`), so a bare
    /// `put file.csv.asc` lands in [`upload_dir`](Sshd::upload_dir). sftp stops at the first failing command and then exits non-zero.
    /// Panics if sftp runs longer than [`SFTP_TIMEOUT`].
    pub fn sftp_batch(&self, local_dir: &Path, commands: &str) -> Output {
        self.sftp_batch_with_key(local_dir, commands, &self.user_key)
    }

    /// [`sftp_batch`](Sshd::sftp_batch) with another private key, e.g. one made with
    /// [`generate_key`] that is not authorized.
    ///
    /// Besides the customer's options it passes `-F /dev/null` and
    /// `-o IdentitiesOnly=yes` so that no ssh_config or agent key on the test machine
    /// can change the outcome, and `-o ConnectTimeout=10`.
    pub fn sftp_batch_with_key(&self, local_dir: &Path, commands: &str, key: &Path) -> Output {
        let n = self.batches.fetch_add(1, Ordering::Relaxed);
        let batch = self.root.join(format!("batch-{n}.txt"));
        fs::write(&batch, commands).unwrap();
        let mut cmd = Command::new("sftp");
        cmd.arg("-F")
            .arg("/dev/null")
            .arg("-b")
            .arg(&batch)
            .arg("-i")
            .arg(key)
            .arg("-P")
            .arg(self.port.to_string())
            .args(["-o", "StrictHostKeyChecking=no"])
            .args(["-o", "UserKnownHostsFile=/dev/null"])
            .args(["-o", "BatchMode=yes"])
            .args(["-o", "IdentitiesOnly=yes"])
            .args(["-o", "ConnectTimeout=10"])
            .arg(format!("{}@127.0.0.1", self.user))
            .current_dir(local_dir);
        match run_with_timeout(cmd, SFTP_TIMEOUT) {
            Ok(out) => out,
            Err(why) => panic!("sftp: {why}\n--- sshd.log (tail) ---\n{}", self.log_tail()),
        }
    }

    /// Polls until the port answers with an `SSH-2.0-` banner from this child.
    fn wait_ready(&mut self) -> Result<(), Retry> {
        let deadline = Instant::now() + START_TIMEOUT;
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        loop {
            if let Some(status) = self
                .child
                .try_wait()
                .map_err(|e| Retry::Fatal(e.to_string()))?
            {
                let log = fs::read_to_string(&self.log_path).unwrap_or_default();
                return Err(if log.contains("Address already in use") {
                    Retry::PortTaken
                } else {
                    Retry::Fatal(format!("sshd exited early: {status}"))
                });
            }
            if let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) {
                stream.set_read_timeout(Some(Duration::from_secs(5))).ok();
                let mut banner = [0u8; 8];
                if stream.read_exact(&mut banner).is_ok() && &banner == b"SSH-2.0-" {
                    // Finish the version exchange; sshd logs this probe as one
                    // "Connection reset by 127.0.0.1 ... [preauth]" line.
                    let _ = stream.write_all(b"SSH-2.0-readiness-probe\r\n");
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                return Err(Retry::Fatal(format!(
                    "127.0.0.1:{} gave no SSH banner within {START_TIMEOUT:?}",
                    self.port
                )));
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Sshd {
    /// Kills the listening sshd and reaps it. Sessions still open (none, once every
    /// `sftp_batch` has returned) end with their client.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Why [`Sshd::wait_ready`] gave up.
enum Retry {
    /// Another process took the port between [`free_port`] and sshd's bind.
    PortTaken,
    /// Anything else; the message says what.
    Fatal(String),
}

/// What [`render_config`] fills in.
struct ConfigParams<'a> {
    port: u16,
    host_key: &'a Path,
    pid_file: &'a Path,
    authorized_keys: &'a Path,
    chroot: &'a Path,
    user: &'a str,
}

/// The sshd_config: loopback only, public-key only, and for the login user an
/// SFTP-only session chrooted to `chroot`.
fn render_config(p: &ConfigParams<'_>) -> String {
    let root_login = if p.user == "root" {
        // Debian's default would already be this; say it so the intent is visible.
        "PermitRootLogin prohibit-password\n"
    } else {
        ""
    };
    format!(
        "# Written by tests/support/sshd.rs: a throw-away test server.\n\
         ListenAddress 127.0.0.1\n\
         Port {port}\n\
         HostKey {host_key}\n\
         PidFile {pid_file}\n\
         LogLevel VERBOSE\n\
         AuthorizedKeysFile {authorized_keys}\n\
         PasswordAuthentication no\n\
         KbdInteractiveAuthentication no\n\
         PubkeyAuthentication yes\n\
         UsePAM no\n\
         # StrictModes would check the owner and modes of the user's home directory and\n\
         # of the authorized_keys file and its directories. Ours is a scratch file in the\n\
         # build tree, not ~/.ssh, with throw-away keys: nothing to protect, and a\n\
         # checkout or home with group-writable modes must not fail the test.\n\
         StrictModes no\n\
         PrintMotd no\n\
         {root_login}\
         Subsystem sftp internal-sftp\n\
         \n\
         Match User {user}\n\
         \tForceCommand internal-sftp -d /upload\n\
         \tChrootDirectory {chroot}\n\
         \tAllowTcpForwarding no\n\
         \tX11Forwarding no\n",
        port = p.port,
        host_key = quote(p.host_key, false),
        pid_file = quote(p.pid_file, false),
        authorized_keys = quote(p.authorized_keys, true),
        chroot = quote(p.chroot, true),
        user = p.user,
    )
}

/// Quotes a path for sshd_config; `tokens` doubles `%` for options that expand `%u`
/// and the like.
fn quote(path: &Path, tokens: bool) -> String {
    let s = path.to_str().expect("sshd test paths must be UTF-8");
    assert!(
        !s.contains(['"', '\n', '\\']),
        "path {s:?} cannot be written into sshd_config"
    );
    let s = if tokens {
        s.replace('%', "%%")
    } else {
        s.to_owned()
    };
    format!("\"{s}\"")
}

/// Checks sshd's ChrootDirectory rule for `dir` and each ancestor: owned by root and
/// not group- or world-writable. The error names the first component that breaks it.
fn check_chroot_safe(dir: &Path) -> Result<(), String> {
    let dir = dir
        .canonicalize()
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    for component in dir.ancestors() {
        let meta = fs::metadata(component).map_err(|e| format!("{}: {e}", component.display()))?;
        let mode = meta.mode() & 0o7777;
        if meta.uid() != 0 || mode & 0o022 != 0 {
            return Err(format!(
                "{} is owned by uid {} with mode {mode:04o}; sshd's ChrootDirectory needs \
                 every component of {} owned by root and not group/world-writable (so not \
                 under /tmp)",
                component.display(),
                meta.uid(),
                dir.display()
            ));
        }
    }
    Ok(())
}

/// A port on 127.0.0.1 that was free a moment ago (bind to 0, read, release).
fn free_port() -> u16 {
    TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .expect("cannot bind 127.0.0.1:0")
        .port()
}

/// The trimmed stdout of a command that must succeed.
fn command_stdout(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Runs `cmd` with null stdin and captured output, killing it after `timeout`.
fn run_with_timeout(mut cmd: Command, timeout: Duration) -> Result<Output, String> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {cmd:?}: {e}"))?;
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out_reader = thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stdout.read_to_end(&mut buf);
        buf
    });
    let err_reader = thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stderr.read_to_end(&mut buf);
        buf
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let stderr = err_reader.join().unwrap_or_default();
            return Err(format!(
                "{cmd:?} still running after {timeout:?}, killed; stderr:\n{}",
                String::from_utf8_lossy(&stderr)
            ));
        }
        thread::sleep(Duration::from_millis(20));
    };
    Ok(Output {
        status,
        stdout: out_reader.join().unwrap_or_default(),
        stderr: err_reader.join().unwrap_or_default(),
    })
}
