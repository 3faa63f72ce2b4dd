//! The deployment artefacts in `deploy/` (systemd unit, Dockerfile, Kubernetes manifests)
//! checked against each other, the command line and the configuration loader.
//!
//! Nothing here runs systemd, Docker or Kubernetes: the unit file and the Dockerfile are
//! scanned as text, the manifests parsed with serde_norway and the configurations with
//! toml, and each configuration is loaded with `Config::load` after every file it names
//! has been made in a temporary folder.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Write as _;
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use hpke_gateway::config::{Config, DEFAULT_ADMIN_LISTEN, DEFAULT_SHUTDOWN_GRACE_MS};
use serde::Deserialize as _;
use serde_norway::Value;
use support::served::bin;

/// Where the systemd unit, the image and the Deployment all expect the configuration.
const CONFIG_PATH: &str = "/etc/hpke-gateway/gateway.toml";
/// Where the systemd unit and the image have the binary.
const BINARY_PATH: &str = "/usr/local/bin/hpke-gateway";
/// The unit file; its file name is the unit's name, which names its credentials folder.
const UNIT: &str = "deploy/hpke-gateway.service";
/// The configuration the unit runs.
const SYSTEMD_CONFIG: &str = "deploy/systemd/gateway.toml";
const DOCKERFILE: &str = "deploy/Dockerfile";
const DOCKERIGNORE: &str = ".dockerignore";
/// Configuration keys whose values are file paths.
const PATH_KEYS: &[&str] = &[
    "private_key",
    "passphrase_file",
    "public_keys",
    "certificate",
    "ca_bundle",
    "client_certificate",
    "client_key",
];
/// What the test writes into passphrase files (and encrypts server keys with).
const PASSPHRASE: &str = "deploy test passphrase";
/// The one container of the Deployment.
const CONTAINER: &str = "spec.template.spec.containers[0]";
/// The intake's own workload: claim, config, single-replica Deployment, Service.
const INTAKE: &str = "deploy/k8s/intake.yaml";

// === the tests ===

#[test]
fn systemd_unit_runs_serve_with_the_config_and_credentials_it_ships() {
    let unit = Unit::parse(&read(UNIT));
    let exec = unit.one("Service", "ExecStart");
    let words: Vec<&str> = exec.split_whitespace().collect();
    assert_eq!(
        words.first().copied(),
        Some(BINARY_PATH),
        "{UNIT}: ExecStart does not run {BINARY_PATH}"
    );
    assert_eq!(
        words[1..],
        ["serve", "--config", CONFIG_PATH],
        "{UNIT}: ExecStart must be `{BINARY_PATH} serve --config {CONFIG_PATH}`"
    );
    // Where the unit expects its configuration: its install notes map CONFIG_PATH to
    // deploy/systemd/gateway.toml, and that file says it is installed there.
    assert!(
        read(UNIT)
            .lines()
            .any(|l| l.starts_with('#') && l.contains(CONFIG_PATH) && l.contains(SYSTEMD_CONFIG)),
        "{UNIT}: no comment line says {SYSTEMD_CONFIG} is installed as {CONFIG_PATH}, the --config of ExecStart"
    );
    assert!(
        read(SYSTEMD_CONFIG).contains(CONFIG_PATH),
        "{SYSTEMD_CONFIG} does not say it is installed as {CONFIG_PATH}, the unit's --config"
    );

    // LoadCredential=NAME:SOURCE puts the file at /run/credentials/<unit name>/NAME.
    let unit_name = file_name(Path::new(UNIT));
    let credentials_dir = format!("/run/credentials/{unit_name}/");
    let config = toml_table(&read(SYSTEMD_CONFIG));
    let named: BTreeSet<String> = named_files(&config).into_iter().map(|(_, p)| p).collect();
    let credentials = unit.all("Service", "LoadCredential");
    assert!(
        !credentials.is_empty(),
        "{UNIT}: no LoadCredential= (the key passphrase comes from one)"
    );
    let mut loaded = BTreeSet::new();
    for credential in credentials {
        let (name, source) = credential
            .split_once(':')
            .unwrap_or_else(|| panic!("{UNIT}: LoadCredential={credential} is not NAME:SOURCE"));
        assert!(
            Path::new(source).is_absolute(),
            "{UNIT}: LoadCredential={credential}: the source must be an absolute path"
        );
        let path = format!("{credentials_dir}{name}");
        assert!(
            named.contains(&path),
            "{UNIT} loads the credential {name:?}, but {SYSTEMD_CONFIG} names no file {path:?}"
        );
        loaded.insert(path);
    }
    for path in named.iter().filter(|p| p.starts_with("/run/credentials/")) {
        assert!(
            loaded.contains(path),
            "{SYSTEMD_CONFIG} names {path:?}, which is not a credential {UNIT} loads \
             (LoadCredential=NAME:SOURCE puts NAME in {credentials_dir})"
        );
    }
}

#[test]
fn systemd_unit_stops_reloads_and_listens_as_the_gateway_needs() {
    let unit = Unit::parse(&read(UNIT));
    let config = toml_table(&read(SYSTEMD_CONFIG));
    let grace_ms = shutdown_grace_ms(&config);
    let stop_ms = timespan_ms(unit.one("Service", "TimeoutStopSec"));
    assert!(
        stop_ms > grace_ms,
        "{UNIT}: TimeoutStopSec ({stop_ms} ms) must be above {SYSTEMD_CONFIG}'s shutdown_grace_ms ({grace_ms} ms), or systemd kills requests the gateway is draining"
    );
    assert_eq!(
        unit.one("Service", "KillSignal"),
        "SIGTERM",
        "{UNIT}: the gateway drains on SIGTERM"
    );
    let reload = unit.one("Service", "ExecReload");
    assert!(
        reload.contains("-HUP") && reload.contains("$MAINPID"),
        "{UNIT}: ExecReload must send SIGHUP to $MAINPID (the gateway reloads on SIGHUP), not {reload:?}"
    );
    let bad_config = hpke_gateway::cli::EXIT_BAD_CONFIG.to_string();
    assert!(
        unit.all("Service", "RestartPreventExitStatus")
            .iter()
            .any(|v| v.split_whitespace().any(|s| s == bad_config)),
        "{UNIT}: RestartPreventExitStatus must list {bad_config}, the gateway's exit code for a bad configuration"
    );
    // With no capabilities, the gateway cannot bind ports below 1024.
    if unit.all("Service", "CapabilityBoundingSet") == [""] {
        let listen = toml_str(&config, "listen");
        let admin = toml_str(&config, "admin_listen").unwrap_or(DEFAULT_ADMIN_LISTEN);
        let listeners = [("listen", listen), ("admin_listen", Some(admin))];
        for (key, addr) in listeners.into_iter().filter(|(_, a)| *a != Some("off")) {
            let addr = addr.unwrap_or_else(|| panic!("{SYSTEMD_CONFIG}: no {key}"));
            let port = port_of(addr, SYSTEMD_CONFIG, key);
            assert!(
                port >= 1024,
                "{SYSTEMD_CONFIG}: {key} port {port} needs CAP_NET_BIND_SERVICE, which {UNIT} does not grant"
            );
        }
    }
}

#[test]
fn systemd_unit_runs_as_a_dedicated_user_in_a_sandbox() {
    let unit = Unit::parse(&read(UNIT));
    let user = unit.one("Service", "User");
    assert!(
        !user.is_empty() && user != "root" && user != "0",
        "{UNIT}: User= must be a dedicated user, not {user:?}"
    );
    for (key, want) in [
        ("ProtectSystem", "strict"),
        ("NoNewPrivileges", "yes"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("CapabilityBoundingSet", ""),
        ("AmbientCapabilities", ""),
        ("RestrictSUIDSGID", "yes"),
        ("MemoryDenyWriteExecute", "yes"),
        ("UMask", "0077"),
    ] {
        assert_eq!(unit.one("Service", key), want, "{UNIT}: {key}");
    }
    // The key passphrase comes in as a credential, never as an environment variable.
    assert!(
        !unit.all("Service", "LoadCredential").is_empty(),
        "{UNIT}: the key passphrase is handed over by LoadCredential"
    );
    for env in unit.all("Service", "Environment") {
        assert!(
            !env.to_ascii_lowercase().contains("pass"),
            "{UNIT}: no passphrase in Environment=: {env}"
        );
    }
}

#[test]
fn the_image_is_multi_stage_and_runs_as_non_root() {
    let text = read(DOCKERFILE);
    let froms: Vec<&str> = text
        .lines()
        .filter(|l| l.trim_start().to_ascii_uppercase().starts_with("FROM "))
        .collect();
    assert!(
        froms.len() >= 2,
        "{DOCKERFILE}: a build stage and a runtime stage: {froms:?}"
    );
    let runtime = froms.last().unwrap();
    assert!(
        runtime.contains("distroless") || runtime.contains("scratch"),
        "{DOCKERFILE}: a minimal runtime image (no shell, no package manager): {runtime}"
    );
    assert!(
        !runtime.contains("rust:"),
        "{DOCKERFILE}: the toolchain stays in the build stage: {runtime}"
    );
    let after_runtime = &text[text.rfind(runtime).unwrap()..];
    let user = after_runtime
        .lines()
        .filter_map(|l| l.trim().strip_prefix("USER "))
        .next_back()
        .unwrap_or_else(|| panic!("{DOCKERFILE}: the runtime stage sets USER"));
    let uid = user.split(':').next().unwrap().trim();
    assert!(
        uid != "0" && uid != "root",
        "{DOCKERFILE}: USER {user} is root"
    );
    assert!(
        after_runtime.contains("COPY --from=build"),
        "{DOCKERFILE}: only the built binary is copied into the runtime stage"
    );
}

#[test]
fn the_systemd_config_loads() {
    // Its passphrase_file is absolute (/run/credentials/...): materialise() moves it
    // under the temporary folder, because the test cannot write there.
    assert_loads(SYSTEMD_CONFIG, &read(SYSTEMD_CONFIG));
}

#[test]
fn the_k8s_configmap_config_loads() {
    let k8s = K8s::load();
    assert_loads(
        "deploy/k8s/configmap.yaml's gateway.toml",
        &k8s.config_text(),
    );
}

#[test]
fn the_documented_command_lines_parse() {
    // Each artefact's command line, with the configuration path pointed at a missing
    // file: the gateway must accept every flag and stop at the configuration, with the
    // bad-configuration exit code (a flag it did not know would give clap's usage error).
    let unit = Unit::parse(&read(UNIT));
    let exec = unit.one("Service", "ExecStart");
    let systemd: Vec<String> = exec.split_whitespace().skip(1).map(str::to_owned).collect();
    let docker = dockerfile_exec(&final_stage(&read(DOCKERFILE)), "CMD");
    let k8s = K8s::load().deployment.list(&format!("{CONTAINER}.args"));
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.toml");
    for (what, args) in [
        (UNIT, systemd),
        (DOCKERFILE, docker),
        ("deployment.yaml", k8s),
    ] {
        assert!(
            args.iter().any(|a| a == CONFIG_PATH),
            "{what}: the command line {args:?} does not name {CONFIG_PATH}"
        );
        let args: Vec<String> = args
            .into_iter()
            .map(|a| {
                if a == CONFIG_PATH {
                    missing.display().to_string()
                } else {
                    a
                }
            })
            .collect();
        let out = Command::new(bin()).args(&args).output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(i32::from(hpke_gateway::cli::EXIT_BAD_CONFIG)),
            "{what}: `hpke-gateway {}` should fail only on the missing configuration; stderr:\n{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn the_k8s_secret_holds_every_file_the_config_names() {
    let k8s = K8s::load();
    let config = toml_table(&k8s.config_text());
    let secret = &k8s.secret;
    let secret_name = secret.req("metadata.name");
    let mut entries: BTreeSet<String> = secret.map("stringData").into_keys().collect();
    entries.extend(secret.map("data").into_keys());
    let keys_dir = k8s.mount_of_secret(&secret_name);
    let config_dir = config_dir();
    let files = named_files(&config);
    assert!(
        !files.is_empty(),
        "the ConfigMap's config names no key file"
    );
    for (key, path) in files {
        assert!(
            Path::new(&path).is_relative(),
            "the ConfigMap's config names {path:?} ({key}): use a path relative to {config_dir}, \
             under the Secret's mount"
        );
        let resolved = Path::new(config_dir).join(&path);
        assert_eq!(
            resolved.parent(),
            Some(Path::new(&keys_dir)),
            "the ConfigMap's config names {path:?} ({key}), which is not in the Secret {secret_name:?} mounted at {keys_dir}"
        );
        let name = file_name(&resolved);
        assert!(
            entries.contains(name),
            "the ConfigMap's config names {path:?} ({key}), but secret.example.yaml's Secret {secret_name:?} has no entry {name:?} (it has {entries:?})"
        );
    }
}

#[test]
fn the_k8s_deployment_mounts_the_config_and_keys_where_the_gateway_reads_them() {
    let k8s = K8s::load();
    let d = &k8s.deployment;
    assert_eq!(
        d.count("spec.template.spec.containers"),
        1,
        "deployment.yaml: one container expected"
    );
    // The Secret's files at <config dir>/keys, the ConfigMap as the config dir itself.
    let secret_name = k8s.secret.req("metadata.name");
    let keys_dir = k8s.mount_of_secret(&secret_name);
    assert_eq!(
        keys_dir, "/etc/hpke-gateway/keys",
        "deployment.yaml: the Secret {secret_name:?} must be mounted at /etc/hpke-gateway/keys, where the config's keys/ paths resolve"
    );
    let configmap_name = k8s.configmap.req("metadata.name");
    let config_file = file_name(Path::new(CONFIG_PATH));
    assert!(
        !k8s.configmap.doc["data"][config_file].is_null(),
        "configmap.yaml has no data entry {config_file:?}, the file name of {CONFIG_PATH}"
    );
    let volume = d
        .find_item(
            "spec.template.spec.volumes",
            "configMap.name",
            &configmap_name,
        )
        .unwrap_or_else(|| {
            panic!("deployment.yaml: no volume of the ConfigMap {configmap_name:?}")
        });
    let mount = k8s.mount(&volume);
    assert_eq!(
        d.req(&format!("{mount}.mountPath")),
        config_dir(),
        "deployment.yaml: the ConfigMap {configmap_name:?} must be mounted at {}, the folder of --config {CONFIG_PATH}",
        config_dir()
    );
    assert!(
        !d.has(&format!("{volume}.configMap.items")),
        "deployment.yaml: the ConfigMap volume must not pick items, or {config_file} may not be there"
    );

    // The Secret volume: files nobody but the owner (root) and fsGroup may read.
    let volume = d
        .find_item(
            "spec.template.spec.volumes",
            "secret.secretName",
            &secret_name,
        )
        .unwrap();
    assert!(
        !d.has(&format!("{volume}.secret.items")),
        "deployment.yaml: the Secret volume must not pick items, or key files may be missing"
    );
    let mode = d
        .get(&format!("{volume}.secret.defaultMode"))
        .map(|mode| yaml_mode(&mode))
        .unwrap_or(0o644);
    assert!(
        mode & 0o027 == 0,
        "deployment.yaml: the Secret's defaultMode 0{mode:o} lets the group write or others read; the gateway refuses such key files"
    );
    assert!(
        d.get("spec.template.spec.securityContext.fsGroup")
            .is_some(),
        "deployment.yaml: without fsGroup the key files (owner root) are unreadable to the non-root gateway"
    );

    // The command: the image's entrypoint, the configuration from the ConfigMap.
    assert!(
        !d.has(&format!("{CONTAINER}.command")),
        "deployment.yaml: `command` would replace the image's ENTRYPOINT {BINARY_PATH}; use args"
    );
    let args = d.list(&format!("{CONTAINER}.args"));
    assert_eq!(
        args.first().map(String::as_str),
        Some("serve"),
        "deployment.yaml: args must start with serve"
    );
    assert_eq!(
        flag_value(&args, "--config"),
        Some(CONFIG_PATH),
        "deployment.yaml: args' --config must be {CONFIG_PATH}, where the ConfigMap is mounted"
    );

    // Shutdown: the pod's grace period above the gateway's.
    let grace_ms = shutdown_grace_ms(&toml_table(&k8s.config_text()));
    let period_s: u64 = d
        .req("spec.template.spec.terminationGracePeriodSeconds")
        .parse()
        .unwrap();
    assert!(
        period_s * 1000 > grace_ms,
        "deployment.yaml: terminationGracePeriodSeconds ({period_s} s) must be above the ConfigMap's shutdown_grace_ms ({grace_ms} ms), or kubelet kills requests the gateway is draining"
    );
}

#[test]
fn ports_agree_across_the_config_deployment_service_and_image() {
    let k8s = K8s::load();
    let d = &k8s.deployment;
    let config = toml_table(&k8s.config_text());
    let listen = toml_str(&config, "listen").expect("the ConfigMap's config has no listen");
    let admin = toml_str(&config, "admin_listen").unwrap_or(DEFAULT_ADMIN_LISTEN);
    let listen_port = port_of(listen, "configmap.yaml", "listen");
    let admin_addr: SocketAddr = admin
        .parse()
        .unwrap_or_else(|e| panic!("configmap.yaml: admin_listen {admin:?}: {e}"));
    assert!(
        !admin_addr.ip().is_loopback(),
        "configmap.yaml: admin_listen {admin} is loopback; kubelet's probes come from outside the pod"
    );

    let ports = k8s.container_ports();
    assert_eq!(
        ports.get("http"),
        Some(&listen_port),
        "deployment.yaml: container port \"http\" must be the config's listen port {listen_port}"
    );
    assert_eq!(
        ports.get("admin"),
        Some(&admin_addr.port()),
        "deployment.yaml: container port \"admin\" must be the config's admin_listen port {}",
        admin_addr.port()
    );

    for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
        let get = format!("{CONTAINER}.{probe}.httpGet");
        assert_eq!(
            d.get(&format!("{get}.path")).as_deref(),
            Some(path),
            "deployment.yaml: {probe} must GET {path}"
        );
        let port = d.req(&format!("{get}.port"));
        assert_eq!(
            resolve_port(&ports, &port),
            Some(admin_addr.port()),
            "deployment.yaml: {probe} port {port:?} is not the admin port {} (admin_listen)",
            admin_addr.port()
        );
        assert!(
            d.get(&format!("{get}.scheme")).is_none_or(|s| s == "HTTP"),
            "deployment.yaml: {probe}: the admin listener speaks plain HTTP"
        );
    }

    let service = &k8s.service;
    let n = service.count("spec.ports");
    assert!(n > 0, "service.yaml has no ports");
    for i in 0..n {
        let target = service.req(&format!("spec.ports[{i}].targetPort"));
        let port = resolve_port(&ports, &target).unwrap_or_else(|| {
            panic!("service.yaml: targetPort {target:?} is not a port of the Deployment's container ({ports:?})")
        });
        assert_eq!(
            port, listen_port,
            "service.yaml: targetPort {target:?} is not the public listener; the admin port is scraped from the pods, not through this Service"
        );
    }

    let exposed: BTreeSet<u16> = final_stage(&read(DOCKERFILE))
        .iter()
        .filter(|(instruction, _)| instruction == "EXPOSE")
        .flat_map(|(_, ports)| ports.split_whitespace())
        .map(|p| {
            p.trim_end_matches("/tcp")
                .parse()
                .unwrap_or_else(|e| panic!("{DOCKERFILE}: EXPOSE {p}: {e}"))
        })
        .collect();
    assert_eq!(
        exposed,
        BTreeSet::from([listen_port, admin_addr.port()]),
        "{DOCKERFILE}: EXPOSE must list the listen and admin ports of the ConfigMap's config"
    );
}

#[test]
fn the_image_and_the_deployment_agree_on_binary_user_and_config() {
    let stage = final_stage(&read(DOCKERFILE));
    assert_eq!(
        dockerfile_exec(&stage, "ENTRYPOINT"),
        [BINARY_PATH],
        "{DOCKERFILE}: ENTRYPOINT must be the binary alone"
    );
    assert!(
        stage
            .iter()
            .any(|(i, rest)| i == "COPY" && rest.ends_with(&format!(" {BINARY_PATH}"))),
        "{DOCKERFILE}: the final stage does not copy the binary to {BINARY_PATH}"
    );
    let cmd = dockerfile_exec(&stage, "CMD");
    assert_eq!(
        cmd.first().map(String::as_str),
        Some("serve"),
        "{DOCKERFILE}: CMD must start with serve"
    );
    assert_eq!(
        flag_value(&cmd, "--config"),
        Some(CONFIG_PATH),
        "{DOCKERFILE}: CMD's --config must be {CONFIG_PATH}"
    );
    let user = stage
        .iter()
        .rev()
        .find(|(i, _)| i == "USER")
        .map(|(_, u)| u.as_str())
        .unwrap_or_else(|| panic!("{DOCKERFILE}: no USER: the image would run as root"));
    let uid = user.split(':').next().unwrap();
    let d = K8s::load().deployment;
    let pod = "spec.template.spec.securityContext";
    assert_eq!(
        d.get(&format!("{pod}.runAsUser")).as_deref(),
        Some(uid),
        "deployment.yaml: runAsUser must be the image's USER {uid}"
    );
    assert_eq!(
        d.get(&format!("{pod}.runAsNonRoot")).as_deref(),
        Some("true"),
        "deployment.yaml: runAsNonRoot"
    );
    let container = format!("{CONTAINER}.securityContext");
    for (field, value) in [
        ("readOnlyRootFilesystem", "true"),
        ("allowPrivilegeEscalation", "false"),
        ("capabilities.drop[0]", "ALL"),
    ] {
        assert_eq!(
            d.get(&format!("{container}.{field}")).as_deref(),
            Some(value),
            "deployment.yaml: the container's securityContext.{field} must be {value}"
        );
    }
}

#[test]
fn the_k8s_objects_select_the_gateway_pods() {
    let k8s = K8s::load();
    let d = &k8s.deployment;
    let name = d.req("metadata.name");
    let labels = d.map("spec.template.metadata.labels");
    let selects = |what: &str, selector: BTreeMap<String, String>| {
        assert!(!selector.is_empty(), "{what}: empty selector");
        for (key, value) in &selector {
            assert_eq!(
                labels.get(key),
                Some(value),
                "{what}: selector {key}={value} does not match the Deployment's pod labels {labels:?}"
            );
        }
    };
    selects("deployment.yaml", d.map("spec.selector.matchLabels"));
    selects("service.yaml", k8s.service.map("spec.selector"));
    selects("pdb.yaml", k8s.pdb.map("spec.selector.matchLabels"));

    let hpa = &k8s.hpa;
    assert_eq!(
        (
            hpa.req("spec.scaleTargetRef.kind").as_str(),
            hpa.req("spec.scaleTargetRef.name")
        ),
        ("Deployment", name.clone()),
        "hpa.yaml must scale the Deployment {name:?}"
    );
    let number = |y: &Yaml, path: &str| -> u32 {
        y.req(path)
            .parse()
            .unwrap_or_else(|e| panic!("{}: {path}: {e}", y.file))
    };
    let min = number(hpa, "spec.minReplicas");
    let max = number(hpa, "spec.maxReplicas");
    let replicas = number(d, "spec.replicas");
    assert!(
        (min..=max).contains(&replicas),
        "deployment.yaml: replicas {replicas} outside the HPA's {min}..={max}"
    );
    let min_available = number(&k8s.pdb, "spec.minAvailable");
    assert!(
        min_available < min,
        "pdb.yaml: minAvailable {min_available} must be below the HPA's minReplicas {min}, or draining a node can never evict a gateway pod"
    );
    assert!(
        d.get(&format!("{CONTAINER}.resources.requests.cpu"))
            .is_some(),
        "deployment.yaml: the HPA's CPU utilization is relative to the container's CPU request, which is missing"
    );
}

#[test]
fn dockerignore_keeps_keys_and_build_output_out_but_not_the_build_inputs() {
    let ignore = read(DOCKERIGNORE);
    let patterns: Vec<&str> = ignore
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    for needed in [
        "target",
        "bench/results",
        "tests/interop/js/node_modules",
        "keys/*",
        "!keys/README.md",
    ] {
        assert!(
            patterns.contains(&needed),
            "{DOCKERIGNORE}: missing the pattern {needed:?}"
        );
    }
    // cargo build --release --locked reads these: none may be excluded.
    for input in ["Cargo.toml", "Cargo.lock", "src", "benches", "examples"] {
        assert!(
            !patterns
                .iter()
                .any(|p| p.trim_end_matches('/') == input || *p == "*"),
            "{DOCKERIGNORE}: excludes {input}, which the image build needs"
        );
    }
    assert!(
        read(DOCKERFILE).contains("cargo build --release --locked"),
        "{DOCKERFILE}: the builder must run cargo build --release --locked"
    );
}

#[test]
fn the_intake_runs_as_one_replica_that_never_overlaps() {
    let intake = Intake::load();
    let d = &intake.deployment;
    assert_eq!(
        d["spec"]["replicas"].as_u64(),
        Some(1),
        "{INTAKE}: the intake Deployment must run exactly one replica: only one intake may hold the storage's lock"
    );
    assert_eq!(
        d["spec"]["strategy"]["type"].as_str(),
        Some("Recreate"),
        "{INTAKE}: the intake Deployment's strategy must be Recreate, or an update starts the new pod while the old one holds the lock"
    );
    assert!(
        d["spec"]["strategy"]["rollingUpdate"].is_null(),
        "{INTAKE}: rollingUpdate makes no sense with Recreate"
    );
    let pods = labels(&d["spec"]["template"]["metadata"]["labels"]);
    assert!(
        selects(&labels(&d["spec"]["selector"]["matchLabels"]), &pods),
        "{INTAKE}: the Deployment's selector does not match its pod labels {pods:?}"
    );
    assert!(
        selects(&labels(&intake.service["spec"]["selector"]), &pods),
        "{INTAKE}: the intake Service does not select the intake pods {pods:?}"
    );
    let modes = intake.claim["spec"]["accessModes"]
        .as_sequence()
        .map(|m| m.iter().filter_map(Value::as_str).collect::<Vec<_>>())
        .unwrap_or_default();
    assert_eq!(
        modes,
        ["ReadWriteOnce"],
        "{INTAKE}: the intake's volume is for one pod on one node: ReadWriteOnce"
    );
    for kind in ["HorizontalPodAutoscaler", "PodDisruptionBudget"] {
        assert!(
            intake
                .objects
                .iter()
                .all(|o| o["kind"].as_str() != Some(kind)),
            "{INTAKE}: no {kind} for a workload of one replica"
        );
    }
}

#[test]
fn the_api_tier_neither_selects_nor_scales_the_intake() {
    let k8s = K8s::load();
    let intake = Intake::load();
    let d = &intake.deployment;
    let name = d["metadata"]["name"].as_str().unwrap();
    assert_ne!(
        k8s.hpa.req("spec.scaleTargetRef.name"),
        name,
        "hpa.yaml must not scale the intake Deployment"
    );
    assert_ne!(
        k8s.deployment.req("metadata.name"),
        name,
        "deployment.yaml and {INTAKE} name the same Deployment"
    );
    let intake_pods = labels(&d["spec"]["template"]["metadata"]["labels"]);
    for (what, selector) in [
        (
            "deployment.yaml",
            k8s.deployment.map("spec.selector.matchLabels"),
        ),
        ("service.yaml", k8s.service.map("spec.selector")),
        ("pdb.yaml", k8s.pdb.map("spec.selector.matchLabels")),
    ] {
        assert!(
            !selects(&selector, &intake_pods),
            "{what}: the selector {selector:?} selects the intake pods {intake_pods:?}"
        );
    }
    let api_pods = k8s.deployment.map("spec.template.metadata.labels");
    for (what, selector) in [
        (
            "the intake Deployment",
            labels(&d["spec"]["selector"]["matchLabels"]),
        ),
        (
            "the intake Service",
            labels(&intake.service["spec"]["selector"]),
        ),
    ] {
        assert!(
            !selects(&selector, &api_pods),
            "{INTAKE}: {what}'s selector {selector:?} selects the API pods {api_pods:?}"
        );
    }
}

#[test]
fn the_intake_config_loads() {
    let text = Intake::load().config_text();
    assert!(
        toml_table(&text)
            .get("intake")
            .is_some_and(toml::Value::is_table),
        "{INTAKE}: the intake's config has no [intake] table"
    );
    assert_loads(&format!("{INTAKE}'s gateway.toml"), &text);
}

#[test]
fn the_intake_pod_mounts_config_keys_and_storage_where_the_gateway_reads_them() {
    let k8s = K8s::load();
    let intake = Intake::load();
    let pod = &intake.deployment["spec"]["template"]["spec"];
    let container = intake.gateway_container();

    // The same command line as the API tier.
    let api_args = k8s.deployment.list(&format!("{CONTAINER}.args"));
    let args: Vec<&str> = container["args"]
        .as_sequence()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    assert_eq!(
        args, api_args,
        "{INTAKE}: the gateway container's args differ from deployment.yaml's"
    );

    // The ConfigMap as the config folder, the API tier's Secret as keys/ under it.
    let configmap = intake.configmap["metadata"]["name"].as_str().unwrap();
    let volume = volume_named(pod, |v| v["configMap"]["name"].as_str() == Some(configmap));
    assert_eq!(
        mount_path(container, &volume),
        config_dir(),
        "{INTAKE}: the ConfigMap {configmap:?} must be mounted at {}, the folder of --config",
        config_dir()
    );
    let secret = k8s.secret.req("metadata.name");
    let volume = volume_named(pod, |v| v["secret"]["secretName"].as_str() == Some(&secret));
    let keys_dir = mount_path(container, &volume);
    let mut entries: BTreeSet<String> = k8s.secret.map("stringData").into_keys().collect();
    entries.extend(k8s.secret.map("data").into_keys());
    for (key, path) in named_files(&toml_table(&intake.config_text())) {
        let resolved = Path::new(config_dir()).join(&path);
        assert_eq!(
            resolved.parent(),
            Some(Path::new(&keys_dir)),
            "{INTAKE}: the config names {path:?} ({key}), which is not in the Secret {secret:?} mounted at {keys_dir}"
        );
        assert!(
            entries.contains(file_name(&resolved)),
            "{INTAKE}: the config names {path:?} ({key}), but the Secret {secret:?} has no such entry"
        );
    }

    // The claim, writable, at or above state_dir.
    let config = toml_table(&intake.config_text());
    let state_dir = config["intake"]["state_dir"]
        .as_str()
        .unwrap_or_else(|| panic!("{INTAKE}: no intake.state_dir"));
    assert!(
        Path::new(state_dir).is_absolute(),
        "{INTAKE}: state_dir {state_dir:?} should be absolute, on the volume"
    );
    let claim = intake.claim["metadata"]["name"].as_str().unwrap();
    let volume = volume_named(pod, |v| {
        v["persistentVolumeClaim"]["claimName"].as_str() == Some(claim)
    });
    let storage = mount_path(container, &volume);
    assert!(
        Path::new(state_dir).starts_with(&storage),
        "{INTAKE}: state_dir {state_dir:?} is not on the volume of the claim {claim:?}, mounted at {storage}"
    );
    let mount = volume_mount(container, &volume);
    assert!(
        mount["readOnly"].as_bool() != Some(true),
        "{INTAKE}: the intake writes its storage; the mount must not be readOnly"
    );
    assert!(
        mount["subPath"].as_str().is_none_or(str::is_empty),
        "{INTAKE}: the gateway mounts the whole volume, so moving an upload into state_dir is a rename"
    );
}

// === the configuration files ===

fn toml_table(text: &str) -> toml::Table {
    toml::from_str(text).unwrap_or_else(|e| panic!("not TOML: {e}"))
}

/// A top-level string.
fn toml_str<'a>(config: &'a toml::Table, key: &str) -> Option<&'a str> {
    config.get(key).and_then(toml::Value::as_str)
}

fn shutdown_grace_ms(config: &toml::Table) -> u64 {
    config
        .get("shutdown_grace_ms")
        .map_or(DEFAULT_SHUTDOWN_GRACE_MS, |v| {
            let ms = v.as_integer().and_then(|n| u64::try_from(n).ok());
            ms.unwrap_or_else(|| panic!("shutdown_grace_ms {v} is not a count"))
        })
}

/// Every file a configuration names, with where it names it (`server_keys[0].private_key`).
fn named_files(config: &toml::Table) -> Vec<(String, String)> {
    fn walk(at: String, key: &str, value: &toml::Value, files: &mut Vec<(String, String)>) {
        match value {
            toml::Value::String(path) if PATH_KEYS.contains(&key) => files.push((at, path.clone())),
            toml::Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    walk(format!("{at}[{i}]"), key, item, files);
                }
            }
            toml::Value::Table(table) => {
                for (k, v) in table {
                    walk(format!("{at}.{k}"), k, v, files);
                }
            }
            _ => {}
        }
    }
    let mut files = Vec::new();
    for (key, value) in config {
        walk(key.clone(), key, value, &mut files);
    }
    files
}

fn port_of(addr: &str, file: &str, key: &str) -> u16 {
    addr.parse::<SocketAddr>()
        .unwrap_or_else(|e| panic!("{file}: {key} {addr:?}: {e}"))
        .port()
}

/// The folder of [`CONFIG_PATH`], against which the configuration's paths resolve.
fn config_dir() -> &'static str {
    Path::new(CONFIG_PATH).parent().unwrap().to_str().unwrap()
}

/// Writes a configuration as `<dir>/gateway.toml` and loads it with `Config::load`,
/// after making every file it names (see [`materialise`]); fails with every problem
/// the loader reports.
fn assert_loads(what: &str, text: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = materialise(dir.path(), text);
    if let Err(e) = Config::load(&path) {
        let loaded = fs::read_to_string(path.as_path()).unwrap();
        panic!(
            "{what} does not load: {e}\n--- as loaded, from {} ---\n{loaded}",
            path.display()
        );
    }
}

/// Writes `text` as `<dir>/gateway.toml` with every file it names made as the gateway
/// expects it, and returns its path:
/// - a server key with `hpke-gateway keygen`, or encrypted to [`PASSPHRASE`] when its
///   entry names a passphrase file (which then holds it);
/// - an account's public key with `hpke-gateway public-key` of a new key, in the format
///   its name says (`.json` Tink JSON, `.b64` raw, otherwise SPKI PEM);
/// - TLS certificates and their keys, self-signed.
///
/// The test can neither write absolute paths such as /run/credentials/... nor set
/// environment variables (`std::env::set_var` is unsafe, and this crate forbids unsafe
/// code), so the text is rewritten first (with toml_edit, which keeps the rest as
/// written): absolute paths move under `dir`, and `passphrase_env = "VAR"` becomes a
/// `passphrase_file` under `dir`.
fn materialise(dir: &Path, text: &str) -> PathBuf {
    let mut doc: toml_edit::DocumentMut = text.parse().unwrap_or_else(|e| panic!("{e}"));
    each_table(doc.as_table_mut(), "", &mut |name, table| {
        if let Some(var) = table.remove("passphrase_env") {
            let file = dir
                .join("env")
                .join(var.as_str().expect("passphrase_env: a name"));
            table.insert(
                "passphrase_file",
                toml_edit::value(file.display().to_string()),
            );
        }
        for key in PATH_KEYS {
            for value in table.get_mut(key).into_iter().flat_map(path_values) {
                let path = value.as_str().unwrap();
                if Path::new(path).is_absolute() {
                    *value = relocate(dir, path).display().to_string().into();
                }
            }
        }
        make_files(dir, name, table);
    });
    let path = dir.join("gateway.toml");
    fs::write(&path, doc.to_string()).unwrap();
    path
}

/// Calls `f` with every table of a document (arrays of tables once per entry) and its
/// name: "" for the top level, "server_keys", "intake.smtp".
fn each_table(
    table: &mut toml_edit::Table,
    name: &str,
    f: &mut dyn FnMut(&str, &mut toml_edit::Table),
) {
    f(name, table);
    for (key, item) in table.iter_mut() {
        let name = [name, key.get()].join(if name.is_empty() { "" } else { "." });
        match item {
            toml_edit::Item::Table(t) => each_table(t, &name, f),
            toml_edit::Item::ArrayOfTables(a) => a.iter_mut().for_each(|t| each_table(t, &name, f)),
            _ => {}
        }
    }
}

/// The strings of a path key: its string, or each of its array.
fn path_values(item: &mut toml_edit::Item) -> Vec<&mut toml_edit::Value> {
    match item {
        toml_edit::Item::Value(toml_edit::Value::Array(a)) => a.iter_mut().collect(),
        toml_edit::Item::Value(v) => vec![v],
        _ => vec![],
    }
}

/// Makes the files one table (or array entry) `name` of a configuration names.
fn make_files(dir: &Path, name: &str, table: &toml_edit::Table) {
    let paths = |key: &str| -> Vec<PathBuf> {
        let item = table.get(key);
        let values = item.and_then(toml_edit::Item::as_array).map_or_else(
            || item.and_then(toml_edit::Item::as_str).into_iter().collect(),
            |a| {
                a.iter()
                    .filter_map(toml_edit::Value::as_str)
                    .collect::<Vec<_>>()
            },
        );
        values.into_iter().map(|p| resolve(dir, p)).collect()
    };
    let one = |key: &str| paths(key).into_iter().next();
    for key in PATH_KEYS.iter().filter(|k| table.contains_key(k)) {
        match (name, *key) {
            ("server_keys", "private_key") => {
                server_key(&one(key).unwrap(), one("passphrase_file").as_deref());
            }
            ("accounts", "public_keys") => {
                for file in paths(key) {
                    public_key(dir, &file);
                }
            }
            ("tls", "certificate") => {
                let key_file = one("private_key").expect("[tls] without private_key");
                self_signed(&one(key).unwrap(), &key_file);
            }
            ("upstream_tls", "client_certificate") => {
                let key_file = one("client_key").expect("[upstream_tls] without client_key");
                self_signed(&one(key).unwrap(), &key_file);
            }
            ("upstream_tls", "ca_bundle") => {
                self_signed(&one(key).unwrap(), &dir.join("ca-bundle.key"));
            }
            // Made with the file they belong to, above.
            ("server_keys", "passphrase_file")
            | ("tls", "private_key")
            | ("upstream_tls", "client_key") => {}
            (table, key) => {
                panic!("materialise() does not know how to make the file of {key} in [{table}]")
            }
        }
    }
}

/// Where the test puts the file of an absolute configuration path: under `dir/root`.
fn relocate(dir: &Path, path: &str) -> PathBuf {
    dir.join("root").join(path.trim_start_matches('/'))
}

/// A configuration path resolved as the gateway does, against the folder of the
/// configuration (`dir`).
fn resolve(dir: &Path, path: &str) -> PathBuf {
    dir.join(path)
}

fn make_parent(path: &Path) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
}

/// Runs a command; its standard output, or the test fails with its standard error.
fn run(mut command: Command) -> Vec<u8> {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    assert!(
        out.status.success(),
        "{command:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn keygen(out: &Path) {
    make_parent(out);
    let mut command = Command::new(bin());
    command.arg("keygen").arg("--out").arg(out);
    run(command);
}

/// A server key at `path`, encrypted when `passphrase_file` is given (and written).
fn server_key(path: &Path, passphrase_file: Option<&Path>) {
    if path.exists() {
        return;
    }
    let Some(passphrase_file) = passphrase_file else {
        keygen(path);
        return;
    };
    make_parent(passphrase_file);
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(passphrase_file)
        .unwrap();
    file.write_all(format!("{PASSPHRASE}\n").as_bytes())
        .unwrap();
    // Encrypted PKCS#8 as the gateway's own writer makes it (OpenSSL's reading of it is
    // tested in tests/cli.rs).
    let key = hpke_gateway::envelope::PrivateKey::generate();
    let pem = hpke_gateway::keys::private_key_encrypted_pem(&key, PASSPHRASE.as_bytes()).unwrap();
    make_parent(path);
    hpke_gateway::keys::write_secret_file(path, pem.as_bytes()).unwrap();
}

/// A customer's public key at `path`, in the format its extension names.
fn public_key(dir: &Path, path: &Path) {
    if path.exists() {
        return;
    }
    let private = dir
        .join("customers")
        .join(format!("{}.pem", file_name(path)));
    keygen(&private);
    let format = match path.extension().and_then(|e| e.to_str()) {
        Some("json") => "tink-json",
        Some("b64") => "raw",
        _ => "pem",
    };
    let mut command = Command::new(bin());
    command
        .arg("public-key")
        .arg("--key")
        .arg(private)
        .args(["--format", format]);
    let public = run(command);
    make_parent(path);
    fs::write(path, public).unwrap();
}

/// A self-signed P-256 certificate and its key (mode 0600).
fn self_signed(certificate: &Path, key: &Path) {
    if certificate.exists() {
        return;
    }
    make_parent(certificate);
    make_parent(key);
    // rcgen's P-256 key and self-signed certificate, as `openssl req -x509` would make.
    let pair = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["hpke-gateway.test".to_owned()])
        .unwrap()
        .self_signed(&pair)
        .unwrap();
    fs::write(certificate, cert.pem()).unwrap();
    let _ = fs::remove_file(key);
    hpke_gateway::keys::write_secret_file(key, pair.serialize_pem().as_bytes()).unwrap();
}

// === systemd ===

/// A unit file's settings as (section, key, value), in order.
struct Unit(Vec<(String, String, String)>);

impl Unit {
    fn parse(text: &str) -> Self {
        let mut section = String::new();
        let mut settings = Vec::new();
        for raw in text.lines() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            assert!(
                !line.ends_with('\\'),
                "{UNIT}: continued lines are not scanned: {raw}"
            );
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                section = name.to_owned();
                continue;
            }
            let (key, value) = line
                .split_once('=')
                .unwrap_or_else(|| panic!("{UNIT}: not Key=Value: {raw}"));
            settings.push((
                section.clone(),
                key.trim().to_owned(),
                value.trim().to_owned(),
            ));
        }
        Self(settings)
    }

    /// Every value of a setting.
    fn all(&self, section: &str, key: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(s, k, _)| s == section && k == key)
            .map(|(_, _, v)| v.as_str())
            .collect()
    }

    /// The value of a setting that must appear once.
    fn one(&self, section: &str, key: &str) -> &str {
        let values = self.all(section, key);
        assert_eq!(
            values.len(),
            1,
            "{UNIT}: [{section}] must set {key}= once, not {values:?}"
        );
        values[0]
    }
}

/// A systemd time span in milliseconds: "35s", "35" (seconds), "1min 30s", "500ms".
fn timespan_ms(text: &str) -> u64 {
    text.split_whitespace()
        .map(|part| {
            let digits = part
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(part.len());
            let (number, unit) = part.split_at(digits);
            let number: u64 = number
                .parse()
                .unwrap_or_else(|e| panic!("time span {text:?}: {e}"));
            number
                * match unit {
                    "" | "s" | "sec" => 1000,
                    "ms" | "msec" => 1,
                    "min" | "m" => 60_000,
                    other => panic!("time span {text:?}: unit {other:?} is not scanned"),
                }
        })
        .sum()
}

fn file_name(path: &Path) -> &str {
    path.file_name().unwrap().to_str().unwrap()
}

/// The value after `flag` in a command line.
fn flag_value<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    let at = args.iter().position(|a| a == flag)?;
    args.get(at + 1).map(String::as_str)
}

// === Docker ===

/// The instructions of a Dockerfile's last stage (the image) as (INSTRUCTION, rest),
/// continued lines joined, comments dropped.
fn final_stage(text: &str) -> Vec<(String, String)> {
    let mut stage = Vec::new();
    let mut current = String::new();
    for raw in text.lines() {
        let line = raw.trim();
        if line.starts_with('#') || (current.is_empty() && line.is_empty()) {
            continue;
        }
        if let Some(part) = line.strip_suffix('\\') {
            current.push_str(part);
            current.push(' ');
            continue;
        }
        current.push_str(line);
        let whole = std::mem::take(&mut current);
        let (instruction, rest) = whole
            .split_once(char::is_whitespace)
            .unwrap_or((whole.as_str(), ""));
        let instruction = instruction.to_ascii_uppercase();
        if instruction == "FROM" {
            stage.clear();
        }
        stage.push((instruction, rest.trim().to_owned()));
    }
    stage
}

/// The exec-form (JSON array) arguments of the stage's last `instruction`.
fn dockerfile_exec(stage: &[(String, String)], instruction: &str) -> Vec<String> {
    let rest = stage
        .iter()
        .rev()
        .find(|(i, _)| i == instruction)
        .map(|(_, rest)| rest.as_str())
        .unwrap_or_else(|| panic!("{DOCKERFILE}: no {instruction}"));
    let inner = rest
        .strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .unwrap_or_else(|| panic!("{DOCKERFILE}: {instruction} is not in exec form: {rest}"));
    inner
        .split(',')
        .map(|word| {
            let word = word.trim();
            word.strip_prefix('"')
                .and_then(|w| w.strip_suffix('"'))
                .unwrap_or_else(|| panic!("{DOCKERFILE}: {instruction}: {word} is not a string"))
                .to_owned()
        })
        .collect()
}

// === Kubernetes ===

/// The manifests in deploy/k8s.
struct K8s {
    configmap: Yaml,
    secret: Yaml,
    deployment: Yaml,
    service: Yaml,
    hpa: Yaml,
    pdb: Yaml,
}

impl K8s {
    fn load() -> Self {
        Self {
            configmap: Yaml::load("deploy/k8s/configmap.yaml"),
            secret: Yaml::load("deploy/k8s/secret.example.yaml"),
            deployment: Yaml::load("deploy/k8s/deployment.yaml"),
            service: Yaml::load("deploy/k8s/service.yaml"),
            hpa: Yaml::load("deploy/k8s/hpa.yaml"),
            pdb: Yaml::load("deploy/k8s/pdb.yaml"),
        }
    }

    /// The gateway.toml the ConfigMap carries.
    fn config_text(&self) -> String {
        let key = file_name(Path::new(CONFIG_PATH));
        scalar(&self.configmap.doc["data"][key])
            .unwrap_or_else(|| panic!("configmap.yaml: no data entry {key:?}"))
    }

    /// The container's volumeMounts item of a volume (`volume` is its item path).
    fn mount(&self, volume: &str) -> String {
        let d = &self.deployment;
        let name = d.req(&format!("{volume}.name"));
        let mount = d
            .find_item(&format!("{CONTAINER}.volumeMounts"), "name", &name)
            .unwrap_or_else(|| panic!("deployment.yaml: the volume {name:?} is not mounted"));
        assert!(
            !d.has(&format!("{mount}.subPath")),
            "deployment.yaml: the volume {name:?} is mounted with subPath, and subPath mounts never receive ConfigMap or Secret updates"
        );
        mount
    }

    /// Where the Deployment mounts the Secret `name` (read-only).
    fn mount_of_secret(&self, name: &str) -> String {
        let d = &self.deployment;
        let volume = d
            .find_item("spec.template.spec.volumes", "secret.secretName", name)
            .unwrap_or_else(|| {
                panic!("deployment.yaml: no volume of the Secret {name:?} (secret.example.yaml)")
            });
        let mount = self.mount(&volume);
        assert_eq!(
            d.get(&format!("{mount}.readOnly")).as_deref(),
            Some("true"),
            "deployment.yaml: mount the Secret {name:?} readOnly"
        );
        d.req(&format!("{mount}.mountPath"))
    }

    /// The container's ports by name.
    fn container_ports(&self) -> BTreeMap<String, u16> {
        let ports = self.deployment.items(&format!("{CONTAINER}.ports"));
        let port = |p: &Value| {
            let name = p["name"]
                .as_str()
                .expect("deployment.yaml: a port without name");
            let number = p["containerPort"]
                .as_u64()
                .and_then(|n| u16::try_from(n).ok());
            (
                name.to_owned(),
                number.expect("deployment.yaml: containerPort"),
            )
        };
        ports.iter().map(port).collect()
    }
}

/// deploy/k8s/intake.yaml: the intake's own workload, read with a real YAML parser.
struct Intake {
    objects: Vec<Value>,
    claim: Value,
    configmap: Value,
    deployment: Value,
    service: Value,
}

impl Intake {
    fn load() -> Self {
        let objects: Vec<Value> = serde_norway::Deserializer::from_str(&read(INTAKE))
            .map(|doc| Value::deserialize(doc).unwrap_or_else(|e| panic!("{INTAKE}: {e}")))
            .filter(|v| !v.is_null())
            .collect();
        let one = |kind: &str| {
            let mut found = objects.iter().filter(|o| o["kind"].as_str() == Some(kind));
            let object = found
                .next()
                .unwrap_or_else(|| panic!("{INTAKE}: no {kind}"))
                .clone();
            assert!(found.next().is_none(), "{INTAKE}: more than one {kind}");
            object
        };
        Self {
            claim: one("PersistentVolumeClaim"),
            configmap: one("ConfigMap"),
            deployment: one("Deployment"),
            service: one("Service"),
            objects,
        }
    }

    /// The gateway.toml its ConfigMap carries.
    fn config_text(&self) -> String {
        let key = file_name(Path::new(CONFIG_PATH));
        self.configmap["data"][key]
            .as_str()
            .unwrap_or_else(|| panic!("{INTAKE}: the ConfigMap has no data entry {key:?}"))
            .to_owned()
    }

    /// The container that runs `serve`.
    fn gateway_container(&self) -> &Value {
        self.deployment["spec"]["template"]["spec"]["containers"]
            .as_sequence()
            .into_iter()
            .flatten()
            .find(|c| c["args"][0].as_str() == Some("serve"))
            .unwrap_or_else(|| panic!("{INTAKE}: no container runs serve"))
    }
}

/// A mapping of strings, such as labels or a selector.
fn labels(value: &Value) -> BTreeMap<String, String> {
    value
        .as_mapping()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.as_str()?.to_owned(), v.as_str()?.to_owned())))
        .collect()
}

/// Whether an equality selector (non-empty) selects pods with these labels.
fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// The name of the first of a pod spec's volumes that `is` picks.
fn volume_named(pod: &Value, is: impl Fn(&Value) -> bool) -> String {
    pod["volumes"]
        .as_sequence()
        .into_iter()
        .flatten()
        .find(|v| is(v))
        .and_then(|v| v["name"].as_str())
        .unwrap_or_else(|| panic!("{INTAKE}: no such volume"))
        .to_owned()
}

/// A container's mount of the volume `name`.
fn volume_mount<'a>(container: &'a Value, name: &str) -> &'a Value {
    container["volumeMounts"]
        .as_sequence()
        .into_iter()
        .flatten()
        .find(|m| m["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("{INTAKE}: the gateway container does not mount {name:?}"))
}

/// Where a container mounts the volume `name`.
fn mount_path(container: &Value, name: &str) -> String {
    volume_mount(container, name)["mountPath"]
        .as_str()
        .unwrap_or_else(|| panic!("{INTAKE}: the mount of {name:?} has no mountPath"))
        .to_owned()
}

/// A port given by number or by the name of a container port.
fn resolve_port(ports: &BTreeMap<String, u16>, port: &str) -> Option<u16> {
    match port.parse::<u16>() {
        Ok(number) => ports.values().copied().find(|p| *p == number),
        Err(_) => ports.get(port).copied(),
    }
}

/// A file mode as YAML 1.1 writes it: `0400` is octal, `256` decimal.
fn yaml_mode(text: &str) -> u32 {
    let octal = text
        .strip_prefix("0o")
        .or_else(|| text.strip_prefix('0').filter(|rest| !rest.is_empty()));
    match octal {
        Some(digits) => u32::from_str_radix(digits, 8),
        None => text.parse(),
    }
    .unwrap_or_else(|e| panic!("mode {text:?}: {e}"))
}

/// A YAML manifest parsed with serde_norway, read by paths such as
/// `spec.template.spec.containers[0].args`. Keys with dots in them (labels, data
/// entries) are read with [`Yaml::map`] or by indexing `doc`.
struct Yaml {
    file: &'static str,
    doc: Value,
}

impl Yaml {
    fn load(file: &'static str) -> Self {
        let doc = serde_norway::from_str(&read(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        Self { file, doc }
    }

    /// The value at `path`, null if there is none.
    fn at(&self, path: &str) -> &Value {
        at(&self.doc, path)
    }

    /// A scalar, as text.
    fn get(&self, path: &str) -> Option<String> {
        scalar(self.at(path))
    }

    /// A scalar that must be there.
    fn req(&self, path: &str) -> String {
        self.get(path)
            .unwrap_or_else(|| panic!("{}: no {path}", self.file))
    }

    fn has(&self, path: &str) -> bool {
        !self.at(path).is_null()
    }

    /// A mapping of strings (labels, data) as key to value.
    fn map(&self, path: &str) -> BTreeMap<String, String> {
        labels(self.at(path))
    }

    fn items(&self, path: &str) -> &[Value] {
        self.at(path).as_sequence().map_or(&[], Vec::as_slice)
    }

    /// The number of items of the sequence at `path`.
    fn count(&self, path: &str) -> usize {
        self.items(path).len()
    }

    /// A sequence of scalars.
    fn list(&self, path: &str) -> Vec<String> {
        let scalar = |v| scalar(v).unwrap_or_else(|| panic!("{}: {path}: {v:?}", self.file));
        self.items(path).iter().map(scalar).collect()
    }

    /// The path of the first item of the sequence `list` whose `field` is `value`.
    fn find_item(&self, list: &str, field: &str, value: &str) -> Option<String> {
        (0..self.count(list))
            .map(|i| format!("{list}[{i}]"))
            .find(|item| self.get(&format!("{item}.{field}")).as_deref() == Some(value))
    }
}

static NULL: Value = Value::Null;

/// The value at a path of keys and `[n]` indices, null if there is none.
fn at<'a>(value: &'a Value, path: &str) -> &'a Value {
    let path = path.replace('[', ".[");
    path.split('.')
        .filter(|s| !s.is_empty())
        .fold(value, |v, step| {
            let item = match step.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
                Some(i) => v.get(i.parse::<usize>().unwrap()),
                None => v.get(step),
            };
            item.unwrap_or(&NULL)
        })
}

/// A string, number or boolean as text.
fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

// === files ===

/// A file of the repository, by its path from the repository root.
fn read(file: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
    fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {file}: {e}"))
}
