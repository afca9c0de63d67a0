//! Keeps `deploy/` from rotting: checks the safety fields of the Kubernetes
//! manifests, the systemd units and the Dockerfile, then runs the built
//! binary's `check` with the exact arguments each of them starts
//! origin-watch with, against the config they ship. A renamed flag or config
//! key fails here instead of in a cluster. No network, no Docker, no
//! Kubernetes: everything is read as text.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Component, Path, PathBuf};
use std::process::Command;

use serde::Deserialize;
use serde_yaml::Value;

const BIN: &str = env!("CARGO_BIN_EXE_origin-watch");

/// Where the image, the units and the manifests expect the binary.
const INSTALLED_BIN: &str = "/usr/local/bin/origin-watch";

/// The name the manifests give the origin-watch container; the CronJob's
/// podFailurePolicy refers to it.
const CONTAINER: &str = "origin-watch";

/// The options of the CLI as this test knows them: (spelling, takes a value,
/// accepted by `check`). An option not listed here fails the test, so that
/// whoever uses a new flag in `deploy/` decides how `check` treats it.
const OPTIONS: &[(&str, bool, bool)] = &[
    ("--config", true, true),
    ("-c", true, true),
    ("--state", true, true),
    ("--watch", true, true),
    ("--log-format", true, true),
    ("--shard", true, true),
    ("--shards", true, true),
    ("--listen", true, false),
    ("--report", true, false),
    ("--shutdown-timeout", true, false),
    ("--dry-run", false, false),
];

const SUBCOMMANDS: &[&str] = &["once", "audit", "run", "check"];

// ---------------------------------------------------------------------------
// Reading the files

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    let path = repo().join(rel);
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// Every YAML document of a file, in order; empty documents are skipped.
fn documents(rel: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(&read(rel))
        .map(|doc| Value::deserialize(doc).unwrap_or_else(|e| panic!("{rel}: {e}")))
        .filter(|v| !v.is_null())
        .collect()
}

fn manifest_files() -> Vec<String> {
    let mut files: Vec<String> = fs::read_dir(repo().join("deploy/kubernetes"))
        .expect("deploy/kubernetes exists")
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|n| n.ends_with(".yaml") || n.ends_with(".yml"))
        .map(|n| format!("deploy/kubernetes/{n}"))
        .collect();
    files.sort();
    files
}

/// `a.b.c` in a YAML mapping, if every step is there.
fn field<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(v, |v, key| v.get(key))
}

fn string<'a>(v: &'a Value, path: &str, what: &str) -> &'a str {
    field(v, path)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("{what}: {path} is missing or not a string"))
}

fn int(v: &Value, path: &str, what: &str) -> i64 {
    field(v, path)
        .and_then(Value::as_i64)
        .unwrap_or_else(|| panic!("{what}: {path} is missing or not an integer"))
}

fn seq<'a>(v: &'a Value, path: &str) -> &'a [Value] {
    field(v, path)
        .and_then(Value::as_sequence)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

fn name_of(v: &Value) -> &str {
    field(v, "metadata.name")
        .or_else(|| v.get("name"))
        .and_then(Value::as_str)
        .unwrap_or("?")
}

fn kind_of(v: &Value) -> &str {
    v.get("kind").and_then(Value::as_str).unwrap_or("?")
}

/// The Pod spec of a workload, wherever its kind keeps it.
fn pod_spec(doc: &Value) -> Option<&Value> {
    match kind_of(doc) {
        "Pod" => doc.get("spec"),
        "CronJob" => field(doc, "spec.jobTemplate.spec.template.spec"),
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" => {
            field(doc, "spec.template.spec")
        }
        _ => None,
    }
}

fn is_origin_watch(container: &Value) -> bool {
    name_of(container) == CONTAINER
        || container
            .get("image")
            .and_then(Value::as_str)
            .is_some_and(|i| i.contains("origin-watch"))
}

/// The origin-watch containers of a Pod spec, regular and init (sidecars).
fn origin_watch_containers(spec: &Value) -> Vec<&Value> {
    seq(spec, "containers")
        .iter()
        .chain(seq(spec, "initContainers"))
        .filter(|c| is_origin_watch(c))
        .collect()
}

/// The files a ConfigMap would mount: its `data`.
fn config_map_files(docs: &[Value], name: &str, what: &str) -> BTreeMap<String, String> {
    let cm = docs
        .iter()
        .find(|d| kind_of(d) == "ConfigMap" && name_of(d) == name)
        .unwrap_or_else(|| panic!("{what}: no ConfigMap {name} in the same file"));
    let data = cm
        .get("data")
        .and_then(Value::as_mapping)
        .unwrap_or_else(|| panic!("{what}: ConfigMap {name} has no data"));
    data.iter()
        .map(|(k, v)| {
            let (Some(k), Some(v)) = (k.as_str(), v.as_str()) else {
                panic!("{what}: ConfigMap {name} data must map strings to strings");
            };
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Command lines

/// The value of an option (`--opt V`, `--opt=V`) in an argument list.
fn option<'a>(argv: &'a [String], spellings: &[&str]) -> Option<&'a str> {
    argv.iter().enumerate().find_map(|(i, a)| {
        spellings.iter().find_map(|s| {
            if a == s {
                argv.get(i + 1).map(String::as_str)
            } else {
                a.strip_prefix(s)?.strip_prefix('=')
            }
        })
    })
}

fn config_option<'a>(argv: &'a [String], what: &str) -> &'a str {
    // Without it the binary would read ./watch.yaml in whatever folder it
    // starts in, which is nothing the deployment controls.
    option(argv, &["--config", "-c"])
        .unwrap_or_else(|| panic!("{what}: starts origin-watch without --config: {argv:?}"))
}

/// The subcommand of an argument list.
fn subcommand<'a>(argv: &'a [String], what: &str) -> &'a str {
    split_check(argv, Path::new("-"), Path::new("-"), what).0
}

/// Turns a deployment's arguments into a `check` of the same config: the
/// subcommand becomes `check`, options `check` does not take are dropped,
/// and `--config` and `--state` point into the test's tempdir. Returns the
/// original subcommand too.
fn split_check<'a>(
    argv: &'a [String],
    config: &Path,
    state_dir: &Path,
    what: &str,
) -> (&'a str, Vec<String>) {
    let mut command = None;
    let mut out = Vec::new();
    let mut args = argv.iter();
    while let Some(arg) = args.next() {
        if !arg.starts_with('-') {
            assert!(
                command.is_none() && SUBCOMMANDS.contains(&arg.as_str()),
                "{what}: unexpected argument {arg:?} in {argv:?}"
            );
            command = Some(arg.as_str());
            out.push("check".to_owned());
            continue;
        }
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) => (n, Some(v.to_owned())),
            None => (arg.as_str(), None),
        };
        let &(_, takes_value, for_check) = OPTIONS
            .iter()
            .find(|(spelling, ..)| *spelling == name)
            .unwrap_or_else(|| {
                panic!("{what}: tests/deploy.rs does not know the option {name}; add it to OPTIONS")
            });
        let value = match (takes_value, inline) {
            (true, Some(v)) => Some(v),
            (true, None) => Some(
                args.next()
                    .unwrap_or_else(|| panic!("{what}: {name} has no value"))
                    .clone(),
            ),
            (false, _) => None,
        };
        if !for_check {
            continue;
        }
        let value = match name {
            "--config" | "-c" => Some(config.display().to_string()),
            "--state" => {
                let file = Path::new(value.as_deref().unwrap_or_default())
                    .file_name()
                    .expect("--state names a file");
                Some(state_dir.join(file).display().to_string())
            }
            _ => value,
        };
        out.push(name.to_owned());
        out.extend(value);
    }
    let command = command.unwrap_or_else(|| panic!("{what}: no subcommand in {argv:?}"));
    (command, out)
}

/// One way a deployment file starts origin-watch.
struct Launch {
    /// Where it comes from, for messages.
    what: String,
    /// The arguments after the binary.
    argv: Vec<String>,
    /// Environment with literal values (secrets are left out).
    env: Vec<(String, String)>,
    /// The files of the config folder, by name (a ConfigMap's data).
    config_files: BTreeMap<String, String>,
}

impl Launch {
    fn config(&self) -> Value {
        let config = config_option(&self.argv, &self.what);
        let name = file_name(config);
        let text = self.config_files.get(name).unwrap_or_else(|| {
            panic!(
                "{}: --config {config}, but its folder holds only {:?}",
                self.what,
                self.config_files.keys()
            )
        });
        serde_yaml::from_str(text).unwrap_or_else(|e| panic!("{}: {name}: {e}", self.what))
    }

    /// The state (`--state`, else the config's `state:`): a PostgreSQL URL,
    /// or a file, which must be absolute: a relative one would land in the
    /// read-only config folder.
    fn state_path(&self) -> String {
        let state = match option(&self.argv, &["--state"]) {
            Some(state) => state.to_owned(),
            None => string(&self.config(), "state", &self.what).to_owned(),
        };
        assert!(
            state.starts_with('/') || is_postgres(&state),
            "{}: state {state:?} must be absolute",
            self.what
        );
        state
    }

    fn watch_names(&self) -> Vec<String> {
        seq(&self.config(), "watches")
            .iter()
            .map(|w| string(w, "name", &self.what).to_owned())
            .collect()
    }

    /// Runs `origin-watch check` as this launch would run its command, with
    /// the config and state moved into a tempdir, and asserts it passes.
    fn check(&self) {
        let dir = tempfile::tempdir().expect("tempdir");
        let etc = dir.path().join("etc");
        let state_dir = dir.path().join("state");
        fs::create_dir_all(&etc).expect("mkdir etc");
        fs::create_dir_all(&state_dir).expect("mkdir state");

        let config_name = file_name(config_option(&self.argv, &self.what));
        for (name, text) in &self.config_files {
            let text = if name == config_name && is_postgres(&self.state_path()) {
                text.clone()
            } else if name == config_name {
                let mut config = self.config();
                let state = state_dir.join(file_name(&self.state_path()));
                config
                    .as_mapping_mut()
                    .expect("config is a mapping")
                    .insert("state".into(), state.display().to_string().into());
                serde_yaml::to_string(&config).expect("serialize config")
            } else {
                text.clone()
            };
            fs::write(etc.join(name), text).expect("write config file");
        }

        let (_, args) = split_check(&self.argv, &etc.join(config_name), &state_dir, &self.what);
        // A clean environment, as in a container or a unit: only what the
        // deployment sets, plus the index Kubernetes gives an Indexed Job.
        // A `${NAME}` in a database URL comes from a Secret in the manifest;
        // check needs it set (to anything: it connects to nothing).
        let secrets: Vec<(String, String)> = env_references(&self.state_path())
            .into_iter()
            .map(|n| (n, "unused-by-check".to_owned()))
            .collect();
        let out = Command::new(BIN)
            .args(&args)
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .envs(secrets.iter().map(|(k, v)| (k, v)))
            .env("JOB_COMPLETION_INDEX", "0")
            .current_dir(dir.path())
            .output()
            .expect("run origin-watch");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let hint = if stderr.contains("unexpected argument '--shard") {
            "\n(the binary does not know --shard/--shards yet: the sharding CLI has not landed)"
        } else {
            ""
        };
        assert!(
            out.status.success(),
            "{}: `origin-watch {}` exited {:?}{hint}\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
            self.what,
            args.join(" "),
            out.status.code(),
        );
        for name in self.watch_names() {
            assert!(
                stdout.contains(&name),
                "{}: check does not mention watch {name}:\n{stdout}",
                self.what
            );
        }
    }
}

fn is_postgres(state: &str) -> bool {
    state.starts_with("postgres://") || state.starts_with("postgresql://")
}

/// The `NAME`s of `${NAME}` in `text`.
fn env_references(text: &str) -> Vec<String> {
    text.split("${")
        .skip(1)
        .filter_map(|rest| rest.split_once('}').map(|(name, _)| name.to_owned()))
        .collect()
}

fn file_name(path: &str) -> &str {
    Path::new(path)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_else(|| panic!("{path:?} names no file"))
}

fn is_under(path: &str, dir: &str) -> bool {
    Path::new(path).starts_with(dir)
}

// ---------------------------------------------------------------------------
// Kubernetes

/// How a manifest starts one origin-watch container, with the checks that
/// hold for every such container.
fn container_launch(file: &str, docs: &[Value], workload: &Value, container: &Value) -> Launch {
    let what = format!(
        "{file} {}/{} container {}",
        kind_of(workload),
        name_of(workload),
        name_of(container)
    );
    let spec = pod_spec(workload).expect("a workload");
    let strings = |path: &str| -> Vec<String> {
        seq(container, path)
            .iter()
            .map(|a| {
                a.as_str()
                    .unwrap_or_else(|| panic!("{what}: {path} must be strings, found {a:?}"))
                    .to_owned()
            })
            .collect()
    };
    // Without `command` the image's ENTRYPOINT (the binary) runs the args.
    let command = strings("command");
    assert!(
        command.is_empty() || command == [INSTALLED_BIN],
        "{what}: command {command:?} is not the binary"
    );
    let argv = strings("args");

    // The config folder must be a ConfigMap mounted exactly there.
    let config = config_option(&argv, &what).to_owned();
    let config_dir = Path::new(&config).parent().expect("config has a folder");
    let mounts = seq(container, "volumeMounts");
    let mount = mounts
        .iter()
        .find(|m| Path::new(string(m, "mountPath", &what)) == config_dir)
        .unwrap_or_else(|| panic!("{what}: nothing is mounted at {}", config_dir.display()));
    let volume_name = string(mount, "name", &what);
    let volume = seq(spec, "volumes")
        .iter()
        .find(|v| name_of(v) == volume_name)
        .unwrap_or_else(|| panic!("{what}: no volume {volume_name}"));
    let config_map = string(volume, "configMap.name", &what);

    let mut env = Vec::new();
    for var in seq(container, "env") {
        let name = string(var, "name", &what).to_owned();
        if let Some(value) = var.get("value") {
            let value = value
                .as_str()
                .unwrap_or_else(|| panic!("{what}: env {name} must be a string"));
            env.push((name, value.to_owned()));
        }
    }
    let launch = Launch {
        what: what.clone(),
        argv,
        env,
        config_files: config_map_files(docs, config_map, &what),
    };

    // The token comes from a Secret, under the name the config reads.
    let token_env = field(&launch.config(), "vercel.token_env")
        .and_then(Value::as_str)
        .unwrap_or("VERCEL_TOKEN")
        .to_owned();
    let token = seq(container, "env")
        .iter()
        .find(|v| name_of(v) == token_env)
        .unwrap_or_else(|| panic!("{what}: no env {token_env} (the config's token_env)"));
    assert!(
        field(token, "valueFrom.secretKeyRef.name").is_some(),
        "{what}: {token_env} must come from a Secret (valueFrom.secretKeyRef)"
    );

    // With a read-only root, a state file must sit on a writable volume;
    // a database's password must come from a Secret.
    let state = launch.state_path();
    for name in env_references(&state) {
        let var = seq(container, "env")
            .iter()
            .find(|v| name_of(v) == name)
            .unwrap_or_else(|| panic!("{what}: state uses ${{{name}}}, but no env sets it"));
        assert!(
            field(var, "valueFrom.secretKeyRef.name").is_some(),
            "{what}: {name} must come from a Secret"
        );
    }
    assert!(
        is_postgres(&state)
            || mounts.iter().any(|m| {
                is_under(&state, string(m, "mountPath", &what))
                    && m.get("readOnly").and_then(Value::as_bool) != Some(true)
            }),
        "{what}: state {state} is on no writable volume"
    );

    let security = |key: &str| {
        field(container, &format!("securityContext.{key}"))
            .or_else(|| field(spec, &format!("securityContext.{key}")))
    };
    assert_eq!(
        security("runAsNonRoot").and_then(Value::as_bool),
        Some(true),
        "{what}: runAsNonRoot"
    );
    assert_eq!(
        field(container, "securityContext.readOnlyRootFilesystem").and_then(Value::as_bool),
        Some(true),
        "{what}: readOnlyRootFilesystem"
    );
    if let Some(uid) = security("runAsUser").and_then(Value::as_u64) {
        assert_eq!(
            uid.to_string(),
            docker_uid(),
            "{what}: runAsUser differs from the image's USER"
        );
    }
    assert!(container.get("resources").is_some(), "{what}: no resources");
    launch
}

/// Every origin-watch container of every manifest, with per-kind checks.
fn manifest_launches() -> Vec<Launch> {
    let mut launches = Vec::new();
    for file in manifest_files() {
        let docs = documents(&file);
        for doc in &docs {
            let Some(spec) = pod_spec(doc) else { continue };
            // The database beside origin-watch (postgres.yaml) runs none.
            if field(doc, "metadata.labels")
                .and_then(|l| l.get("app.kubernetes.io/component"))
                .and_then(Value::as_str)
                == Some("database")
            {
                continue;
            }
            let containers = origin_watch_containers(spec);
            assert!(
                !containers.is_empty(),
                "{file} {}/{}: no origin-watch container",
                kind_of(doc),
                name_of(doc)
            );
            for container in containers {
                launches.push(container_launch(&file, &docs, doc, container));
            }
        }
    }
    launches
}

fn workloads(kind: &str) -> Vec<(String, Vec<Value>, Value)> {
    let mut found = Vec::new();
    for file in manifest_files() {
        let docs = documents(&file);
        for doc in docs.iter().filter(|d| kind_of(d) == kind) {
            found.push((file.clone(), docs.clone(), doc.clone()));
        }
    }
    assert!(!found.is_empty(), "no {kind} in deploy/kubernetes");
    found
}

#[test]
fn every_manifest_parses_and_names_its_kind() {
    let files = manifest_files();
    assert!(!files.is_empty(), "no manifests in deploy/kubernetes");
    for file in files {
        let docs = documents(&file);
        assert!(!docs.is_empty(), "{file}: no documents");
        for doc in docs {
            assert!(
                doc.get("apiVersion").and_then(Value::as_str).is_some()
                    && doc.get("kind").and_then(Value::as_str).is_some()
                    && field(&doc, "metadata.name").is_some(),
                "{file}: a document lacks apiVersion, kind or metadata.name"
            );
        }
    }
}

#[test]
fn cronjob_never_overlaps_and_never_retries_a_config_error() {
    for (file, docs, cron) in workloads("CronJob") {
        let what = format!("{file} CronJob/{}", name_of(&cron));
        let spec = cron.get("spec").expect("spec");
        assert_eq!(string(spec, "concurrencyPolicy", &what), "Forbid");
        string(spec, "timeZone", &what);
        // Without a deadline, a controller that was down catches up late.
        assert!(int(spec, "startingDeadlineSeconds", &what) > 0, "{what}");
        int(spec, "successfulJobsHistoryLimit", &what);
        int(spec, "failedJobsHistoryLimit", &what);

        let job = field(spec, "jobTemplate.spec").expect("jobTemplate.spec");
        let pod = pod_spec(&cron).expect("pod spec");
        // podFailurePolicy is only honoured with restartPolicy Never.
        assert_eq!(string(pod, "restartPolicy", &what), "Never");
        assert_eq!(string(job, "completionMode", &what), "Indexed");

        // `--shards N` takes K from JOB_COMPLETION_INDEX, so the Job must
        // have exactly N indexes, all running at once.
        let container = origin_watch_containers(pod)[0];
        let launch = container_launch(&file, &docs, &cron, container);
        assert_eq!(subcommand(&launch.argv, &what), "once");
        let shards: i64 = option(&launch.argv, &["--shards"])
            .unwrap_or_else(|| panic!("{what}: an Indexed Job without --shards"))
            .parse()
            .expect("--shards N");
        assert_eq!(
            int(job, "completions", &what),
            shards,
            "{what}: completions"
        );
        assert_eq!(
            int(job, "parallelism", &what),
            shards,
            "{what}: parallelism"
        );

        // Rules apply in order, first match wins: the first one matching
        // exit code 2 (configuration error) must fail, not retry or ignore.
        let rules = seq(job, "podFailurePolicy.rules");
        let rule = rules
            .iter()
            .find(|r| {
                let Some(codes) = r.get("onExitCodes") else {
                    return false;
                };
                let listed = seq(codes, "values").iter().any(|v| v.as_i64() == Some(2));
                let for_us = codes
                    .get("containerName")
                    .and_then(Value::as_str)
                    .is_none_or(|c| c == name_of(container));
                for_us
                    && match string(codes, "operator", &what) {
                        "In" => listed,
                        "NotIn" => !listed,
                        op => panic!("{what}: unknown operator {op}"),
                    }
            })
            .unwrap_or_else(|| panic!("{what}: no podFailurePolicy rule for exit code 2"));
        let action = string(rule, "action", &what);
        assert!(
            matches!(action, "FailIndex" | "FailJob"),
            "{what}: exit code 2 is retried (action {action})"
        );
        if action == "FailIndex" {
            int(job, "backoffLimitPerIndex", &what);
        }
    }
}

#[test]
fn sidecar_is_native_and_probed_on_healthz() {
    for (file, docs, deployment) in workloads("Deployment") {
        let what = format!("{file} Deployment/{}", name_of(&deployment));
        let pod = pod_spec(&deployment).expect("pod spec");
        int(pod, "terminationGracePeriodSeconds", &what);
        let sidecar = seq(pod, "initContainers")
            .iter()
            .find(|c| is_origin_watch(c))
            .unwrap_or_else(|| panic!("{what}: origin-watch is not in initContainers"));
        assert_eq!(
            string(sidecar, "restartPolicy", &what),
            "Always",
            "{what}: an init container without restartPolicy Always blocks the app"
        );
        assert!(
            !seq(pod, "containers").is_empty(),
            "{what}: no app container"
        );

        let launch = container_launch(&file, &docs, &deployment, sidecar);
        assert_eq!(subcommand(&launch.argv, &what), "run");
        let listen = option(&launch.argv, &["--listen"])
            .unwrap_or_else(|| panic!("{what}: run without --listen serves no /healthz"));
        let port: u64 = listen
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse().ok())
            .unwrap_or_else(|| panic!("{what}: --listen {listen} has no port"));

        let ports = seq(sidecar, "ports");
        let port_named = |p: &Value| -> u64 {
            match p {
                Value::Number(n) => n.as_u64().expect("port number"),
                Value::String(name) => ports
                    .iter()
                    .find(|q| name_of(q) == name)
                    .and_then(|q| q.get("containerPort"))
                    .and_then(Value::as_u64)
                    .unwrap_or_else(|| panic!("{what}: no port named {name}")),
                other => panic!("{what}: bad port {other:?}"),
            }
        };
        for probe in ["livenessProbe", "readinessProbe"] {
            let Some(get) = field(sidecar, &format!("{probe}.httpGet")) else {
                assert_ne!(probe, "livenessProbe", "{what}: no livenessProbe.httpGet");
                continue;
            };
            assert_eq!(string(get, "path", &what), "/healthz", "{what}: {probe}");
            assert_eq!(
                port_named(get.get("port").expect("probe port")),
                port,
                "{what}: {probe} does not hit --listen"
            );
        }
        // Annotation keys hold dots, so they are looked up by hand.
        let annotations = field(&deployment, "spec.template.metadata.annotations")
            .unwrap_or_else(|| panic!("{what}: no Pod annotations"));
        let annotation = |key: &str| annotations.get(key).and_then(Value::as_str);
        assert_eq!(annotation("prometheus.io/scrape"), Some("true"), "{what}");
        assert_eq!(
            annotation("prometheus.io/port"),
            Some(port.to_string().as_str()),
            "{what}: Prometheus scrapes another port than --listen"
        );
    }
}

#[test]
fn every_manifest_container_passes_check() {
    let launches = manifest_launches();
    assert!(!launches.is_empty(), "no origin-watch container in deploy/");
    for launch in &launches {
        launch.check();
    }
}

// ---------------------------------------------------------------------------
// systemd

/// A unit file as (section, key, value) in order; continuation lines joined.
fn unit(rel: &str) -> Vec<(String, String, String)> {
    let mut entries = Vec::new();
    let mut section = String::new();
    let mut pending = String::new();
    for line in read(rel).lines() {
        let line = line.trim();
        if pending.is_empty() && (line.is_empty() || line.starts_with('#') || line.starts_with(';'))
        {
            continue;
        }
        if let Some(more) = line.strip_suffix('\\') {
            pending.push_str(more);
            pending.push(' ');
            continue;
        }
        let line = std::mem::take(&mut pending) + line;
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_owned();
        } else {
            let (key, value) = line
                .split_once('=')
                .unwrap_or_else(|| panic!("{rel}: not key=value: {line}"));
            entries.push((
                section.clone(),
                key.trim().to_owned(),
                value.trim().to_owned(),
            ));
        }
    }
    entries
}

fn unit_value<'a>(entries: &'a [(String, String, String)], section: &str, key: &str) -> &'a str {
    let values: Vec<&str> = entries
        .iter()
        .filter(|(s, k, _)| s == section && k == key)
        .map(|(_, _, v)| v.as_str())
        .collect();
    match values.as_slice() {
        [v] => v,
        _ => panic!("[{section}] {key}: expected one value, found {values:?}"),
    }
}

/// The arguments of a unit's ExecStart, after the binary.
fn exec_start(rel: &str, entries: &[(String, String, String)]) -> Vec<String> {
    let line = unit_value(entries, "Service", "ExecStart");
    // Prefixes such as `-` or `+` change how systemd runs the line.
    let line = line.trim_start_matches(['-', '@', ':', '+', '!']);
    let mut words = line.split_whitespace().map(str::to_owned);
    assert_eq!(
        words.next().as_deref(),
        Some(INSTALLED_BIN),
        "{rel}: ExecStart does not run the binary"
    );
    words.collect()
}

/// The config the units and the image are documented with: the CronJob's.
fn reference_config_files() -> BTreeMap<String, String> {
    let (file, docs, cron) = workloads("CronJob").remove(0);
    let container = origin_watch_containers(pod_spec(&cron).expect("pod spec"))[0];
    container_launch(&file, &docs, &cron, container).config_files
}

/// The unit that carries the install steps for every unit.
const INSTALL_STEPS_UNIT: &str = "deploy/systemd/origin-watch.service";

/// The config files the install steps in `INSTALL_STEPS_UNIT`'s header put
/// under /etc/origin-watch (`install ... deploy/... /etc/origin-watch/NAME`),
/// by file name, read from the repository: the units are checked with
/// exactly what a user following those steps installs.
fn installed_config_files() -> BTreeMap<String, String> {
    let mut files = BTreeMap::new();
    for line in read(INSTALL_STEPS_UNIT).lines() {
        let Some(step) = line.strip_prefix('#').map(str::trim) else {
            continue;
        };
        let words: Vec<&str> = step.split_whitespace().collect();
        if words.first() != Some(&"install") || words.len() < 3 {
            continue;
        }
        let (src, dest) = (words[words.len() - 2], words[words.len() - 1]);
        if let Some(name) = dest.strip_prefix("/etc/origin-watch/")
            && src.starts_with("deploy/")
            && (name.ends_with(".yaml") || name.ends_with(".txt"))
        {
            files.insert(name.to_owned(), read(src));
        }
    }
    assert!(
        files.contains_key("watch.yaml"),
        "{INSTALL_STEPS_UNIT}: the install steps install no watch.yaml from deploy/: {files:?}"
    );
    files
}

fn unit_launch(rel: &str) -> Launch {
    let entries = unit(rel);
    let argv = exec_start(rel, &entries);
    let launch = Launch {
        what: rel.to_owned(),
        argv,
        env: Vec::new(),
        config_files: installed_config_files(),
    };

    for (key, value) in [
        ("DynamicUser", "yes"),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
    ] {
        assert_eq!(unit_value(&entries, "Service", key), value, "{rel}: {key}");
    }
    assert_eq!(
        unit_value(&entries, "Service", "EnvironmentFile").trim_start_matches('-'),
        "/etc/origin-watch/env",
        "{rel}: the token comes from EnvironmentFile"
    );
    // ProtectSystem=strict leaves only the StateDirectory writable.
    let state_dir = format!(
        "/var/lib/{}",
        unit_value(&entries, "Service", "StateDirectory")
    );
    let state = launch.state_path();
    assert!(
        is_under(&state, &state_dir),
        "{rel}: state {state} is outside StateDirectory {state_dir}"
    );
    launch
}

#[test]
fn every_unit_is_checked() {
    let mut units: Vec<String> = fs::read_dir(repo().join("deploy/systemd"))
        .expect("deploy/systemd exists")
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|n| n.ends_with(".service") || n.ends_with(".timer"))
        .collect();
    units.sort();
    assert_eq!(
        units,
        [
            "origin-watch-sidecar.service",
            "origin-watch.service",
            "origin-watch.timer"
        ],
        "a new unit needs a test of its own below"
    );
}

#[test]
fn oneshot_unit_and_timer() {
    let rel = "deploy/systemd/origin-watch.service";
    let launch = unit_launch(rel);
    let entries = unit(rel);
    assert_eq!(unit_value(&entries, "Service", "Type"), "oneshot");
    assert_eq!(subcommand(&launch.argv, rel), "once");
    assert_eq!(
        config_option(&launch.argv, rel),
        "/etc/origin-watch/watch.yaml"
    );
    launch.check();

    let timer = unit("deploy/systemd/origin-watch.timer");
    assert!(!unit_value(&timer, "Timer", "OnCalendar").is_empty());
    assert_eq!(unit_value(&timer, "Timer", "Persistent"), "true");
    assert_eq!(unit_value(&timer, "Install", "WantedBy"), "timers.target");
    // Without Unit=, a timer starts the service of its own name.
    if let Some((_, _, target)) = timer.iter().find(|(s, k, _)| s == "Timer" && k == "Unit") {
        assert_eq!(target, "origin-watch.service");
    }
}

#[test]
fn sidecar_unit_reloads_and_stops_cleanly() {
    let rel = "deploy/systemd/origin-watch-sidecar.service";
    let launch = unit_launch(rel);
    let entries = unit(rel);
    assert_eq!(unit_value(&entries, "Service", "Type"), "simple");
    assert_eq!(subcommand(&launch.argv, rel), "run");
    assert!(
        option(&launch.argv, &["--listen"]).is_some(),
        "{rel}: --listen"
    );
    let reload = unit_value(&entries, "Service", "ExecReload");
    assert!(
        reload.contains("-HUP") && reload.contains("$MAINPID"),
        "{rel}: ExecReload must send SIGHUP to the main process: {reload}"
    );
    assert_eq!(unit_value(&entries, "Service", "KillSignal"), "SIGTERM");
    assert_eq!(unit_value(&entries, "Service", "Restart"), "on-failure");
    unit_value(&entries, "Service", "TimeoutStopSec");
    launch.check();
}

// ---------------------------------------------------------------------------
// Dockerfile

/// One Dockerfile instruction: its keyword (upper case) and the rest.
struct Instruction {
    keyword: String,
    rest: String,
}

/// The Dockerfile's stages, each a list of instructions starting at FROM.
fn dockerfile() -> Vec<Vec<Instruction>> {
    let mut stages: Vec<Vec<Instruction>> = Vec::new();
    let mut pending = String::new();
    for line in read("deploy/Dockerfile").lines() {
        let trimmed = line.trim();
        // Comment lines may sit inside a continued instruction too.
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if let Some(more) = trimmed.strip_suffix('\\') {
            pending.push_str(more);
            pending.push(' ');
            continue;
        }
        let line = std::mem::take(&mut pending) + trimmed;
        let (keyword, rest) = line.split_once(char::is_whitespace).unwrap_or((&line, ""));
        let instruction = Instruction {
            keyword: keyword.to_uppercase(),
            rest: rest.trim().to_owned(),
        };
        if instruction.keyword == "FROM" {
            stages.push(Vec::new());
        }
        stages
            .last_mut()
            .expect("the Dockerfile starts with FROM")
            .push(instruction);
    }
    assert!(
        stages.len() >= 2,
        "deploy/Dockerfile: a build and a runtime stage"
    );
    stages
}

fn last<'a>(stage: &'a [Instruction], keyword: &str) -> Option<&'a str> {
    stage
        .iter()
        .rev()
        .find(|i| i.keyword == keyword)
        .map(|i| i.rest.as_str())
}

/// ENTRYPOINT and CMD must be JSON arrays: the shell form puts `sh -c` at
/// PID 1, which does not pass SIGTERM on, so `run` never saves its state.
fn exec_form(stage: &[Instruction], keyword: &str) -> Vec<String> {
    let rest = last(stage, keyword).unwrap_or_else(|| panic!("deploy/Dockerfile: no {keyword}"));
    serde_json::from_str(rest)
        .unwrap_or_else(|e| panic!("deploy/Dockerfile: {keyword} is not exec form ({e}): {rest}"))
}

/// The runtime user's uid, which must be numeric so that Kubernetes'
/// runAsNonRoot can verify it without the image's /etc/passwd.
fn docker_uid() -> String {
    let stages = dockerfile();
    let user = last(stages.last().expect("a stage"), "USER").expect("deploy/Dockerfile: no USER");
    let uid = user.split(':').next().unwrap_or_default().to_owned();
    assert!(
        uid.parse::<u32>().is_ok_and(|u| u != 0),
        "deploy/Dockerfile: USER {user} must be a numeric non-root uid"
    );
    uid
}

/// What a stage COPYs from the build context (not from another stage).
fn context_copies(stage: &[Instruction]) -> Vec<String> {
    stage
        .iter()
        .filter(|i| i.keyword == "COPY" || i.keyword == "ADD")
        .filter(|i| !i.rest.contains("--from"))
        .flat_map(|i| {
            let words: Vec<&str> = i
                .rest
                .split_whitespace()
                .filter(|w| !w.starts_with("--"))
                .collect();
            let sources = &words[..words.len().saturating_sub(1)];
            sources
                .iter()
                .map(|s| s.trim_start_matches("./").trim_end_matches('/').to_owned())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// `path` relative to the repository, with `..` resolved.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// The string values of `key = "..."` on a TOML line, inline tables
/// included (`dep = { path = "../dep" }` needs copying as much as a target).
fn toml_strings<'a>(line: &'a str, key: &str) -> Vec<&'a str> {
    line.match_indices(key)
        .filter(|&(at, _)| {
            line[..at]
                .chars()
                .next_back()
                .is_none_or(|c| c.is_whitespace() || c == '{' || c == ',')
        })
        .filter_map(|(at, _)| {
            let rest = line[at + key.len()..].trim_start().strip_prefix('=')?;
            let rest = rest.trim_start().strip_prefix('"')?;
            rest.split('"').next()
        })
        .collect()
}

/// Files under `dir` ending in `.rs`, recursively.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).expect("read dir") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files
}

#[test]
fn dockerfile_builds_locked_and_runs_the_binary_unprivileged() {
    let stages = dockerfile();
    let (build, runtime) = (&stages[0], stages.last().expect("a stage"));

    let from = last(build, "FROM").expect("FROM");
    assert!(from.starts_with("rust:"), "build stage FROM {from}");
    let stage_name = from
        .split_whitespace()
        .skip_while(|w| !w.eq_ignore_ascii_case("as"))
        .nth(1)
        .expect("the build stage is named (FROM ... AS build)");
    assert!(
        build
            .iter()
            .any(|i| i.keyword == "RUN" && i.rest.contains("cargo build --release --locked")),
        "deploy/Dockerfile: cargo build --release --locked"
    );
    assert!(
        last(runtime, "FROM").is_some_and(|f| f.starts_with("debian:bookworm-slim")),
        "runtime stage"
    );
    assert!(
        runtime.iter().any(|i| i.keyword == "COPY"
            && i.rest.contains(&format!("--from={stage_name}"))
            && i.rest.ends_with(INSTALLED_BIN)),
        "deploy/Dockerfile: the binary is copied to {INSTALLED_BIN}"
    );
    docker_uid();

    // Everything cargo reads must be in the build context it is given.
    let copied = context_copies(build);
    let covered = |rel: &Path| {
        copied
            .iter()
            .any(|c| rel.starts_with(c) || rel == Path::new(c))
    };
    for needed in ["Cargo.toml", "Cargo.lock", "src"] {
        assert!(
            covered(Path::new(needed)),
            "deploy/Dockerfile: COPY {needed}"
        );
    }
    assert!(
        !repo().join("build.rs").exists() || covered(Path::new("build.rs")),
        "deploy/Dockerfile: Cargo.toml's folder has a build.rs; COPY it"
    );
    for line in read("Cargo.toml").lines() {
        for value in ["path", "build"]
            .iter()
            .flat_map(|key| toml_strings(line, key))
        {
            assert!(
                covered(&normalize(Path::new(value))),
                "deploy/Dockerfile: Cargo.toml names {value}, which is not copied"
            );
        }
    }
    for file in rust_files(&repo().join("src")) {
        let text = fs::read_to_string(&file).expect("read source");
        for marker in ["include_str!(\"", "include_bytes!(\""] {
            for (at, _) in text.match_indices(marker) {
                let rest = &text[at + marker.len()..];
                let lit = &rest[..rest.find('"').expect("closing quote")];
                let target = file.parent().expect("folder").join(lit);
                let rel = normalize(target.strip_prefix(repo()).expect("inside the repo"));
                assert!(
                    covered(&rel),
                    "deploy/Dockerfile: {} includes {}, which is not copied",
                    file.display(),
                    rel.display()
                );
            }
        }
    }

    // ENTRYPOINT + CMD is the default command; check runs it.
    let entrypoint = exec_form(runtime, "ENTRYPOINT");
    assert_eq!(entrypoint, [INSTALLED_BIN], "deploy/Dockerfile: ENTRYPOINT");
    let argv = exec_form(runtime, "CMD");
    let what = "deploy/Dockerfile CMD";
    assert_eq!(subcommand(&argv, what), "run");
    let listen = option(&argv, &["--listen"]).expect("the default CMD serves /healthz");
    let port = listen.rsplit_once(':').map(|(_, p)| p).expect("a port");
    assert!(
        last(runtime, "EXPOSE").is_some_and(|e| e.split_whitespace().any(|p| p == port)),
        "deploy/Dockerfile: EXPOSE {port}"
    );
    let launch = Launch {
        what: what.to_owned(),
        argv,
        env: Vec::new(),
        config_files: reference_config_files(),
    };
    // The image must make the config's state folder writable for its user
    // (when the state is a file, not a database).
    let state = launch.state_path();
    if !is_postgres(&state) {
        let state_dir = Path::new(&state).parent().expect("state folder");
        assert!(
            runtime.iter().any(|i| i.keyword == "RUN"
                && i.rest.contains("chown")
                && i.rest.contains(&*state_dir.to_string_lossy())),
            "deploy/Dockerfile: {} is not made writable for the runtime user",
            state_dir.display()
        );
    }
    launch.check();
}

// ---------------------------------------------------------------------------
// Operations files (issue 15): the PVC sidecar, the ServiceMonitor, the
// alert rules and the dashboard.

/// The metric names the README's metrics table documents.
fn documented_metrics() -> Vec<String> {
    read("README.md")
        .lines()
        .filter_map(|l| l.strip_prefix("| `origin_watch_"))
        .filter_map(|l| l.split(['{', '`']).next())
        .map(|name| format!("origin_watch_{name}"))
        .collect()
}

/// Every `origin_watch_*` name in a PromQL expression.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find("origin_watch_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.push(tail[..end].to_owned());
        rest = &tail[end..];
    }
    names
}

#[test]
fn pvc_sidecar_keeps_its_state_on_a_claim_one_pod_at_a_time() {
    let file = "deploy/kubernetes/sidecar-pvc.yaml";
    let docs = documents(file);
    let claim = docs
        .iter()
        .find(|d| kind_of(d) == "PersistentVolumeClaim")
        .expect("a PersistentVolumeClaim");
    assert_eq!(
        seq(claim, "spec.accessModes")
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>(),
        ["ReadWriteOnce"]
    );
    let deployment = docs
        .iter()
        .find(|d| kind_of(d) == "Deployment")
        .expect("a Deployment");
    assert_eq!(
        string(deployment, "spec.strategy.type", file),
        "Recreate",
        "a RollingUpdate starts the new Pod while the old one holds the claim"
    );
    assert_eq!(int(deployment, "spec.replicas", file), 1);
    let pod = pod_spec(deployment).expect("pod spec");
    let sidecar = seq(pod, "initContainers")
        .iter()
        .find(|c| is_origin_watch(c))
        .expect("the sidecar");
    let launch = container_launch(file, &docs, deployment, sidecar);
    let state = launch.state_path();
    // The volume mounted where the config keeps the state is the claim.
    let mount = seq(sidecar, "volumeMounts")
        .iter()
        .find(|m| state.starts_with(string(m, "mountPath", file)))
        .unwrap_or_else(|| panic!("{file}: no volume holds {state}"));
    let volume = seq(pod, "volumes")
        .iter()
        .find(|v| name_of(v) == name_of(mount))
        .expect("the state volume");
    assert_eq!(
        string(volume, "persistentVolumeClaim.claimName", file),
        name_of(claim),
        "{file}: the state is not on the claim"
    );
    assert!(volume.get("emptyDir").is_none());
}

#[test]
fn service_monitor_scrapes_the_sidecars_metrics_port() {
    let file = "deploy/kubernetes/servicemonitor.yaml";
    let docs = documents(file);
    let monitor = docs
        .iter()
        .find(|d| kind_of(d) == "ServiceMonitor")
        .expect("a ServiceMonitor");
    let service = docs
        .iter()
        .find(|d| kind_of(d) == "Service")
        .expect("a Service");
    let labels = field(service, "metadata.labels").expect("service labels");
    let wanted = field(monitor, "spec.selector.matchLabels")
        .and_then(Value::as_mapping)
        .expect("matchLabels");
    for (k, v) in wanted {
        assert_eq!(
            labels.get(k),
            Some(v),
            "{file}: the ServiceMonitor selects {k:?}={v:?}, which the Service lacks"
        );
    }
    let endpoint = &seq(monitor, "spec.endpoints")[0];
    assert_eq!(string(endpoint, "path", file), "/metrics");
    let port = string(endpoint, "port", file);
    let service_port = seq(service, "spec.ports")
        .iter()
        .find(|p| name_of(p) == port)
        .unwrap_or_else(|| panic!("{file}: the Service has no port named {port}"));
    // The Service's target is the sidecar's named port, which --listen serves.
    let target = string(service_port, "targetPort", file);
    let selector = field(service, "spec.selector").expect("service selector");
    for (_, docs, deployment) in workloads("Deployment") {
        let pod_labels = field(&deployment, "spec.template.metadata.labels").expect("pod labels");
        let selected = selector
            .as_mapping()
            .expect("selector map")
            .iter()
            .all(|(k, v)| pod_labels.get(k) == Some(v));
        assert!(
            selected,
            "the Service does not select {}",
            name_of(&deployment)
        );
        let pod = pod_spec(&deployment).expect("pod spec");
        let sidecar = seq(pod, "initContainers")
            .iter()
            .find(|c| is_origin_watch(c))
            .expect("sidecar");
        let named = seq(sidecar, "ports")
            .iter()
            .find(|p| name_of(p) == target)
            .unwrap_or_else(|| panic!("the sidecar has no port named {target}"));
        let launch = container_launch("deploy/kubernetes", &docs, &deployment, sidecar);
        let listen = option(&launch.argv, &["--listen"]).expect("--listen");
        assert!(listen.ends_with(&format!(":{}", int(named, "containerPort", "port"))));
    }
}

#[test]
fn alert_rules_are_valid_and_cover_what_the_readme_says_to_alert_on() {
    let file = "deploy/prometheus/origin-watch.rules.yaml";
    // promtool, when installed (`apt-get install prometheus`), checks the
    // PromQL itself; the checks below run everywhere.
    if let Ok(out) = Command::new("promtool")
        .args(["check", "rules"])
        .arg(repo().join(file))
        .output()
    {
        assert!(
            out.status.success(),
            "promtool check rules {file}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let doc = &documents(file)[0];
    let known = documented_metrics();
    assert!(known.len() >= 7, "the README's metrics table: {known:?}");
    let rules: Vec<&Value> = seq(doc, "groups")
        .iter()
        .flat_map(|g| seq(g, "rules"))
        .collect();
    let mut used = Vec::new();
    for rule in &rules {
        let name = string(rule, "alert", file);
        let expr = string(rule, "expr", name);
        string(rule, "labels.severity", name);
        string(rule, "annotations.summary", name);
        let names = metric_names(expr);
        assert!(
            !names.is_empty(),
            "{name}: no origin-watch metric in {expr}"
        );
        for m in names {
            let base = m.strip_suffix("_total").unwrap_or(&m);
            assert!(
                known
                    .iter()
                    .any(|k| k == &m || k.strip_suffix("_total") == Some(base)),
                "{name}: {m} is not a documented metric"
            );
            used.push(m);
        }
    }
    // The README's "What to alert on", one alert each.
    for needed in [
        "origin_watch_guard_trips_total",
        "origin_watch_purge_calls_total",
        "origin_watch_last_pass_timestamp_seconds",
        "origin_watch_pass_duration_seconds",
    ] {
        assert!(used.iter().any(|u| u == needed), "no alert on {needed}");
    }
    assert!(
        rules
            .iter()
            .any(|r| string(r, "expr", "rule").contains("decision=\"skip\"")),
        "no alert on inconclusive probes"
    );
}

#[test]
fn grafana_dashboard_shows_every_documented_metric_and_no_other() {
    let file = "deploy/grafana/origin-watch.json";
    let dash: serde_json::Value =
        serde_json::from_str(&read(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
    let known = documented_metrics();
    let mut shown = Vec::new();
    for panel in dash["panels"].as_array().expect("panels") {
        let title = panel["title"].as_str().expect("panel title");
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("expr");
            for m in metric_names(expr) {
                assert!(known.contains(&m), "{file} {title}: {m} is not documented");
                shown.push(m);
            }
        }
    }
    for m in &known {
        assert!(shown.contains(m), "{file}: no panel shows {m}");
    }
}
