//! The deployment files in `deploy/`, checked by real tools rather than by eye:
//!
//! - every Kubernetes manifest against the Kubernetes OpenAPI schemas, offline, by the pinned
//!   `kubernetes-validate` that `scripts/bootstrap.sh --test` installs (strict: unknown fields
//!   are errors), and a deliberately broken manifest must fail the same check;
//! - the sidecar configuration embedded in each ConfigMap, by the sidecar's own loader, and
//!   its `workloads:` against the containers of the pod;
//! - the Prometheus scrape configuration by `promtool check config`;
//! - the Grafana dashboard: every PromQL expression names only metrics the sidecar exports
//!   (from `sidecar::catalog::CATALOG`), and parses (`promtool check rules`).
//!
//! Under `CI=true` a missing tool fails the test; outside CI it skips with a printed reason.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::{Command, Output},
};

use serde_json::Value as Json;
use serde_yaml_ng::Value as Yaml;
use sidecar::{
    catalog::{CATALOG, Kind},
    config::Config,
};

/// The validator `scripts/bootstrap.sh --test` installs (keep the two in step).
const KUBERNETES_VALIDATE_VERSION: &str = "1.37.0";
/// Kubernetes versions the manifests must be valid for: the oldest we document and the
/// newest the pinned validator bundles.
const KUBERNETES_VERSIONS: [&str; 2] = ["1.28.0", "1.37.0"];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_owned()
}

fn deploy(file: &str) -> PathBuf {
    root().join("deploy").join(file)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|err| panic!("{}: {err}", path.display()))
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// A tool is missing: fail under CI, otherwise say why the test is skipped.
fn missing_tool(test: &str, reason: &str) {
    if in_ci() {
        panic!("{test}: {reason} (CI=true forbids skipping; run scripts/bootstrap.sh --test)");
    }
    eprintln!("skipping {test}: {reason} (run scripts/bootstrap.sh --test)");
}

fn run(command: &mut Command) -> Output {
    command
        .output()
        .unwrap_or_else(|err| panic!("running {command:?}: {err}"))
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn on_path(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|candidate| candidate.is_file())
    })
}

// --- Kubernetes manifests ------------------------------------------------------------------

/// The manifests: every `deploy/*.yaml`.
fn manifests() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join("deploy"))
        .expect("deploy/")
        .map(|entry| entry.expect("deploy/ entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
        .collect();
    files.sort();
    assert!(
        files.iter().any(|f| f.ends_with("pod.yaml"))
            && files.iter().any(|f| f.ends_with("daemonset.yaml")),
        "deploy/ lacks pod.yaml or daemonset.yaml: {files:?}"
    );
    files
}

/// Every YAML document of a file (`---`-separated).
fn documents(path: &Path) -> Vec<Yaml> {
    use serde::Deserialize;
    serde_yaml_ng::Deserializer::from_str(&read(path))
        .map(|doc| Yaml::deserialize(doc).unwrap_or_else(|err| panic!("{}: {err}", path.display())))
        .filter(|doc| !doc.is_null())
        .collect()
}

fn kind(doc: &Yaml) -> &str {
    doc["kind"].as_str().unwrap_or("")
}

/// The pinned validator: `$SIDECAR_KUBERNETES_VALIDATE`, the bootstrap's venv, or PATH.
fn kubernetes_validate() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("SIDECAR_KUBERNETES_VALIDATE") {
        return Some(PathBuf::from(path));
    }
    let tools = std::env::var_os("SIDECAR_TOOLS_DIR")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("sidecar-tools"))
        })
        .or_else(|| {
            std::env::var_os("HOME").map(|d| PathBuf::from(d).join(".cache/sidecar-tools"))
        });
    tools
        .map(|dir| dir.join("venv-k8s/bin/kubernetes-validate"))
        .filter(|path| path.is_file())
        .or_else(|| on_path("kubernetes-validate"))
}

/// Runs the validator, strictly, on `files` for one Kubernetes version.
fn validate(validator: &Path, version: &str, files: &[PathBuf]) -> Output {
    run(Command::new(validator)
        .args(["--strict", "--no-warn", "--kubernetes-version", version])
        .args(files))
}

#[test]
fn manifests_pass_the_kubernetes_schema() {
    let Some(validator) = kubernetes_validate() else {
        missing_tool(
            "manifests_pass_the_kubernetes_schema",
            "kubernetes-validate is not installed",
        );
        return;
    };
    let version = text(&run(Command::new(&validator).arg("--version")));
    assert_eq!(
        version.trim(),
        KUBERNETES_VALIDATE_VERSION,
        "{} is not the pinned kubernetes-validate",
        validator.display()
    );

    let files = manifests();
    let mut resources = 0;
    for file in &files {
        let docs = documents(file);
        assert!(!docs.is_empty(), "{}: no documents", file.display());
        for doc in &docs {
            assert!(
                doc["apiVersion"].is_string() && !kind(doc).is_empty(),
                "{}: a document without apiVersion/kind",
                file.display()
            );
        }
        resources += docs.len();
    }
    for version in KUBERNETES_VERSIONS {
        let output = validate(&validator, version, &files);
        let report = text(&output);
        assert!(
            output.status.success(),
            "Kubernetes {version} schema:\n{report}"
        );
        // One "passed" line per resource: no document was silently left out.
        assert_eq!(
            report.matches(" passed for resource ").count(),
            resources,
            "Kubernetes {version}: not every resource was validated:\n{report}"
        );
    }

    // The same validator must reject what is wrong: a value of the wrong type, an unknown
    // field, a missing required field, a pod without containers.
    let dir = tempfile::tempdir().unwrap();
    let pod = read(&deploy("pod.yaml"));
    let broken = [
        (
            "containerPort: 9464",
            "containerPort: \"metrics\"",
            "is not of type 'integer'",
        ),
        (
            "shareProcessNamespace: true",
            "shareProcessNamespace: true\n  shareProcessNamespaces: true",
            "Additional properties are not allowed",
        ),
        (
            "hostPath:\n        path: /sys/kernel/btf",
            "hostPath:\n        paths: /sys/kernel/btf",
            "'path' is a required property",
        ),
    ];
    for (i, (from, to, expected)) in broken.iter().enumerate() {
        assert!(pod.contains(from), "pod.yaml no longer contains {from:?}");
        let path = dir.path().join(format!("broken-{i}.yaml"));
        std::fs::write(&path, pod.replacen(from, to, 1)).unwrap();
        let output = validate(&validator, KUBERNETES_VERSIONS[1], &[path]);
        let report = text(&output);
        assert!(!output.status.success(), "accepted {to:?}:\n{report}");
        assert!(report.contains(expected), "{expected:?} not in:\n{report}");
    }
    let empty_pod = dir.path().join("empty-pod.yaml");
    std::fs::write(
        &empty_pod,
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: x\nspec: {}\n",
    )
    .unwrap();
    let output = validate(&validator, KUBERNETES_VERSIONS[1], &[empty_pod]);
    assert!(
        !output.status.success() && text(&output).contains("'containers' is a required property"),
        "a pod without containers was accepted:\n{}",
        text(&output)
    );
}

/// The containers of a pod spec (Pod, or a workload's template).
fn pod_spec(doc: &Yaml) -> Option<&Yaml> {
    match kind(doc) {
        "Pod" => Some(&doc["spec"]),
        "DaemonSet" | "Deployment" | "StatefulSet" => Some(&doc["spec"]["template"]["spec"]),
        _ => None,
    }
}

fn sidecar_container(spec: &Yaml) -> &Yaml {
    spec["containers"]
        .as_sequence()
        .expect("containers")
        .iter()
        .find(|c| c["name"].as_str() == Some("sidecar"))
        .expect("a container named sidecar")
}

fn strings(value: &Yaml) -> Vec<&str> {
    value
        .as_sequence()
        .map(|seq| seq.iter().filter_map(Yaml::as_str).collect())
        .unwrap_or_default()
}

#[test]
fn sidecar_containers_have_what_the_sidecar_needs() {
    for file in manifests() {
        let docs = documents(&file);
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let configs: Vec<(String, Config)> = docs
            .iter()
            .filter(|doc| kind(doc) == "ConfigMap")
            .filter_map(|doc| {
                let text = doc["data"]["sidecar.yaml"].as_str()?;
                let config = Config::parse(text, &format!("{name}: ConfigMap sidecar.yaml"))
                    .unwrap_or_else(|err| panic!("{err}"));
                Some((doc["metadata"]["name"].as_str()?.to_owned(), config))
            })
            .collect();
        let mut pods = 0;
        for (doc_kind, spec) in docs.iter().filter_map(|d| Some((kind(d), pod_spec(d)?))) {
            pods += 1;
            let sidecar = sidecar_container(spec);
            assert_eq!(
                strings(&sidecar["args"]),
                ["run", "--config", "/etc/sidecar/sidecar.yaml"],
                "{name}: sidecar args"
            );

            // Capabilities: exactly what loading and attaching needs, everything else dropped.
            let caps = &sidecar["securityContext"]["capabilities"];
            assert_eq!(strings(&caps["drop"]), ["ALL"], "{name}: drop");
            let added: BTreeSet<&str> = strings(&caps["add"]).into_iter().collect();
            assert_eq!(
                added,
                BTreeSet::from(["BPF", "PERFMON", "SYS_RESOURCE"]),
                "{name}: capabilities (SYS_ADMIN only commented, for mounting tracefs)"
            );
            assert_ne!(
                sidecar["securityContext"]["privileged"].as_bool(),
                Some(true),
                "{name}: privileged"
            );

            // Who it can see.
            match doc_kind {
                "DaemonSet" => assert_eq!(spec["hostPID"].as_bool(), Some(true), "{name}"),
                _ => assert_eq!(
                    spec["shareProcessNamespace"].as_bool(),
                    Some(true),
                    "{name}"
                ),
            }

            // The host's tracefs and BTF, read-only.
            for (host, mount_path) in [
                ("/sys/kernel/tracing", "/sys/kernel/tracing"),
                ("/sys/kernel/btf", "/sys/kernel/btf"),
            ] {
                let volume = spec["volumes"]
                    .as_sequence()
                    .unwrap()
                    .iter()
                    .find(|v| v["hostPath"]["path"].as_str() == Some(host))
                    .unwrap_or_else(|| panic!("{name}: no hostPath volume for {host}"));
                let mount = sidecar["volumeMounts"]
                    .as_sequence()
                    .unwrap()
                    .iter()
                    .find(|m| m["name"] == volume["name"])
                    .unwrap_or_else(|| panic!("{name}: {host} not mounted in the sidecar"));
                assert_eq!(mount["mountPath"].as_str(), Some(mount_path), "{name}");
                assert_eq!(mount["readOnly"].as_bool(), Some(true), "{name}: {host}");
            }

            // The config it runs with: a ConfigMap of this file, mounted at /etc/sidecar.
            let config_volume = spec["volumes"]
                .as_sequence()
                .unwrap()
                .iter()
                .find(|v| v["configMap"].is_mapping())
                .unwrap_or_else(|| panic!("{name}: no ConfigMap volume"));
            let map_name = config_volume["configMap"]["name"].as_str().unwrap();
            let (_, config) = configs
                .iter()
                .find(|(n, _)| n == map_name)
                .unwrap_or_else(|| panic!("{name}: ConfigMap {map_name} not in the file"));
            assert!(
                sidecar["volumeMounts"]
                    .as_sequence()
                    .unwrap()
                    .iter()
                    .any(|m| m["name"] == config_volume["name"]
                        && m["mountPath"].as_str() == Some("/etc/sidecar")),
                "{name}: the ConfigMap is not mounted at /etc/sidecar"
            );

            // Reachable from outside the container, and the probes on the right endpoints.
            let metrics = config.server.metrics_addr.0;
            let grpc = config.server.grpc_addr.0;
            assert!(
                metrics.ip().is_unspecified(),
                "{name}: metrics_addr {metrics}"
            );
            assert!(grpc.ip().is_unspecified(), "{name}: grpc_addr {grpc}");
            let ports = sidecar["ports"].as_sequence().unwrap();
            let port_of = |port: &Yaml| -> Option<u64> {
                port.as_u64().or_else(|| {
                    ports
                        .iter()
                        .find(|p| p["name"] == *port)
                        .and_then(|p| p["containerPort"].as_u64())
                })
            };
            for (probe, path) in [
                ("startupProbe", "/health/startup"),
                ("livenessProbe", "/health/live"),
                ("readinessProbe", "/health/ready"),
            ] {
                let get = &sidecar[probe]["httpGet"];
                assert_eq!(get["path"].as_str(), Some(path), "{name}: {probe}");
                assert_eq!(
                    port_of(&get["port"]),
                    Some(u64::from(metrics.port())),
                    "{name}: {probe} port"
                );
            }
            assert!(
                ports
                    .iter()
                    .any(|p| p["containerPort"].as_u64() == Some(u64::from(grpc.port()))),
                "{name}: gRPC port {} not declared",
                grpc.port()
            );

            // The final drain and flush fit in the grace period.
            let grace = spec["terminationGracePeriodSeconds"].as_u64().unwrap_or(30);
            assert!(
                config.shutdown_timeout.0.as_secs() < grace,
                "{name}: shutdown_timeout {:?} is not within terminationGracePeriodSeconds {grace}",
                config.shutdown_timeout.0
            );

            // The root filesystem is read-only: the BanyanDB spool needs a writable mount.
            let banyandb = &config.export.banyandb;
            if banyandb.enabled {
                let spool = &banyandb.spool.dir;
                assert!(
                    sidecar["volumeMounts"]
                        .as_sequence()
                        .unwrap()
                        .iter()
                        .any(|m| {
                            m["readOnly"].as_bool() != Some(true)
                                && m["mountPath"]
                                    .as_str()
                                    .is_some_and(|p| spool.starts_with(p))
                        }),
                    "{name}: the spool {} is not on a writable volume",
                    spool.display()
                );
            }

            // tracefs comes from the hostPath: mounting it would need CAP_SYS_ADMIN.
            assert!(
                !config.tracefs.mount,
                "{name}: tracefs.mount needs SYS_ADMIN"
            );

            // The workloads the issue names.
            let workloads: BTreeSet<&str> = config
                .workloads
                .0
                .iter()
                .map(|w| w.name.0.as_str())
                .collect();
            for wanted in ["banyandb", "job-worker", "sync-worker"] {
                assert!(workloads.contains(wanted), "{name}: no workload {wanted}");
            }

            // In the pod, each workload's patterns match the container that runs it.
            if doc_kind == "Pod" {
                check_pod_workloads(&name, spec, config);
            }
        }
        assert!(pods > 0, "{name}: no pod spec");
    }
}

/// Entry points of the images the pod runs without a `command` (they set only `args`).
const IMAGE_ENTRYPOINTS: [(&str, &str); 1] = [("apache/skywalking-banyandb:", "/banyand")];

/// What a container runs, as `(comm, command line)` the way the sidecar sees them: comm is
/// the executable's basename cut to 15 bytes, as the kernel does; the command line is the
/// arguments joined by spaces. None for a container that runs its image's unknown default.
fn container_process(container: &Yaml) -> Option<(String, String)> {
    let mut command: Vec<&str> = strings(&container["command"]);
    if command.is_empty() {
        let image = container["image"].as_str().unwrap_or("");
        let (_, entrypoint) = IMAGE_ENTRYPOINTS
            .iter()
            .find(|(prefix, _)| image.starts_with(prefix))?;
        command.push(entrypoint);
    }
    command.extend(strings(&container["args"]));
    let comm = command[0]
        .rsplit('/')
        .next()
        .unwrap()
        .chars()
        .take(15)
        .collect();
    Some((comm, command.join(" ")))
}

/// In the pod, every workload of the config matches the process of the container of the
/// same name, and no other container's.
fn check_pod_workloads(name: &str, spec: &Yaml, config: &Config) {
    let containers = spec["containers"].as_sequence().unwrap();
    let matches = |workload: &sidecar::config::WorkloadConfig,
                   (comm, cmdline): &(String, String)| {
        workload.comm.as_ref().is_none_or(|p| p.0.is_match(comm))
            && workload
                .cmdline
                .as_ref()
                .is_none_or(|p| p.0.is_match(cmdline))
    };
    for workload in &config.workloads.0 {
        let label = workload.name.0.as_str();
        for container in containers {
            let container_name = container["name"].as_str().unwrap();
            if container_name == "sidecar" {
                continue;
            }
            let process = container_process(container).unwrap_or_else(|| {
                panic!("{name}: container {container_name} has no command (add its image's entry point to IMAGE_ENTRYPOINTS)")
            });
            assert_eq!(
                matches(workload, &process),
                container_name == label,
                "{name}: workload {label} against container {container_name}, which runs {process:?}"
            );
        }
        assert!(
            containers.iter().any(|c| c["name"].as_str() == Some(label)),
            "{name}: no container named after workload {label}"
        );
    }
}

// --- Prometheus ----------------------------------------------------------------------------

fn promtool() -> Option<PathBuf> {
    on_path("promtool")
}

#[test]
fn prometheus_config_passes_promtool() {
    let Some(promtool) = promtool() else {
        missing_tool(
            "prometheus_config_passes_promtool",
            "promtool is not on PATH (Debian package prometheus)",
        );
        return;
    };
    let path = deploy("prometheus.yml");
    let output = run(Command::new(&promtool).args(["check", "config"]).arg(&path));
    if output.status.success() {
        return;
    }
    let report = text(&output);
    // Debian's promtool is built without Kubernetes service discovery. Then check the
    // Kubernetes jobs' discovery blocks here, and everything else (relabelling included)
    // with promtool, with the discovery swapped for a static target.
    assert!(
        report.contains("field kubernetes_sd_configs not found"),
        "promtool check config {}:\n{report}",
        path.display()
    );
    eprintln!(
        "this promtool lacks Kubernetes discovery; checking kubernetes_sd_configs here and the rest with promtool"
    );
    let mut config: Yaml = serde_yaml_ng::from_str(&read(&path)).unwrap();
    let mut swapped = 0;
    for job in config["scrape_configs"].as_sequence_mut().unwrap() {
        let Some(sd) = job
            .as_mapping_mut()
            .unwrap()
            .remove("kubernetes_sd_configs")
        else {
            continue;
        };
        for entry in sd.as_sequence().expect("kubernetes_sd_configs is a list") {
            let entry = entry.as_mapping().expect("a kubernetes_sd_configs entry");
            for key in entry.keys() {
                let key = key.as_str().unwrap();
                assert!(
                    [
                        "role",
                        "api_server",
                        "namespaces",
                        "selectors",
                        "attach_metadata",
                        "kubeconfig_file",
                        "authorization",
                        "tls_config",
                        "proxy_url",
                        "follow_redirects",
                        "enable_http2",
                    ]
                    .contains(&key),
                    "kubernetes_sd_configs: unknown key {key}"
                );
            }
            let role = entry.get("role").and_then(Yaml::as_str);
            assert!(
                matches!(
                    role,
                    Some("node" | "pod" | "service" | "endpoints" | "endpointslice" | "ingress")
                ),
                "kubernetes_sd_configs: role {role:?}"
            );
        }
        job["static_configs"] =
            serde_yaml_ng::from_str("[{targets: ['pod.example:9464']}]").unwrap();
        swapped += 1;
    }
    assert!(
        swapped > 0,
        "promtool failed on {}:\n{report}",
        path.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("prometheus.yml");
    std::fs::write(&copy, serde_yaml_ng::to_string(&config).unwrap()).unwrap();
    let output = run(Command::new(&promtool).args(["check", "config"]).arg(&copy));
    assert!(
        output.status.success(),
        "promtool check config (Kubernetes discovery swapped for static targets):\n{}",
        text(&output)
    );
}

// --- Grafana dashboard ---------------------------------------------------------------------

/// The names samples carry on /metrics, from the catalog.
fn exported_names() -> BTreeSet<String> {
    CATALOG
        .iter()
        .flat_map(|def| match def.kind {
            Kind::Counter | Kind::Gauge => vec![def.exposed_name()],
            Kind::Histogram => ["_bucket", "_sum", "_count"]
                .iter()
                .map(|suffix| format!("{}{suffix}", def.name))
                .collect(),
        })
        .collect()
}

/// Every PromQL string of the dashboard: targets' `expr`, and query variables' queries.
fn promql(dashboard: &Json) -> Vec<String> {
    fn walk(value: &Json, key: &str, out: &mut Vec<String>) {
        match value {
            // A data source variable's `query` is a plugin type, not PromQL.
            Json::Object(map) if map.get("type").and_then(Json::as_str) == Some("datasource") => {}
            Json::Object(map) => map.iter().for_each(|(k, v)| walk(v, k, out)),
            Json::Array(items) => items.iter().for_each(|v| walk(v, key, out)),
            Json::String(s) if matches!(key, "expr" | "query" | "definition") => {
                out.push(s.clone());
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(dashboard, "", &mut out);
    out
}

/// Identifiers in `expr` that look like our metric names (`ebpf_*`, `sidecar_*`), outside
/// string literals (label values) so that `job="sidecar_x"` is not taken for a metric.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut chars = expr.char_indices().peekable();
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    while let Some((start, c)) = chars.next() {
        if c == '"' || c == '\'' || c == '`' {
            let mut escaped = false;
            for (_, d) in chars.by_ref() {
                if !escaped && d == c {
                    break;
                }
                escaped = d == '\\' && !escaped;
            }
        } else if ident(c) && c != ':' && !c.is_ascii_digit() {
            let mut end = start + c.len_utf8();
            while let Some(&(i, d)) = chars.peek() {
                if !ident(d) {
                    break;
                }
                end = i + d.len_utf8();
                chars.next();
            }
            let word = &expr[start..end];
            let preceded_by_dollar = expr[..start].ends_with('$');
            if !preceded_by_dollar && (word.starts_with("ebpf_") || word.starts_with("sidecar_")) {
                names.push(word.to_owned());
            }
        } else if ident(c) {
            // A number: skip the rest of it.
            while chars.peek().is_some_and(|&(_, d)| ident(d) || d == '.') {
                chars.next();
            }
        }
    }
    names
}

#[test]
fn metric_name_extraction_skips_label_values_and_variables() {
    assert_eq!(
        metric_names(
            r#"sum by (le) (rate(ebpf_x_bucket{job="sidecar_y", w=~"$workload"}[$__rate_interval])) / sidecar_z"#
        ),
        ["ebpf_x_bucket", "sidecar_z"]
    );
    assert_eq!(
        metric_names("label_values(sidecar_build_info, instance)"),
        ["sidecar_build_info"]
    );
}

#[test]
fn dashboard_uses_only_exported_metrics() {
    let path = deploy("grafana-dashboard.json");
    let dashboard: Json = serde_json::from_str(&read(&path)).expect("dashboard JSON");
    let schema = dashboard["schemaVersion"].as_u64().expect("schemaVersion");
    assert!((36..=41).contains(&schema), "schemaVersion {schema}");
    let variables = dashboard["templating"]["list"]
        .as_array()
        .expect("templating");
    assert!(
        variables
            .iter()
            .any(|v| v["type"] == "datasource" && v["query"] == "prometheus"),
        "no Prometheus datasource variable"
    );

    let exported = exported_names();
    let exprs = promql(&dashboard);
    assert!(!exprs.is_empty(), "no PromQL in the dashboard");
    let mut used = BTreeSet::new();
    for expr in &exprs {
        let names = metric_names(expr);
        assert!(!names.is_empty(), "no sidecar metric in {expr:?}");
        for name in names {
            assert!(
                exported.contains(&name),
                "{name} (in {expr:?}) is not a metric the sidecar exports; it exports {exported:?}"
            );
            used.insert(name);
        }
    }

    // The panels the dashboard is for.
    let panels = dashboard["panels"].as_array().expect("panels");
    let mut ids = BTreeSet::new();
    for panel in panels {
        assert!(
            ids.insert(panel["id"].as_u64().expect("panel id")),
            "duplicate panel id"
        );
        if panel["type"] == "row" {
            continue;
        }
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "panel {} has no query", panel["title"]);
        for target in targets {
            assert_eq!(
                target["datasource"]["uid"], "${datasource}",
                "{}",
                panel["title"]
            );
        }
    }
    let heatmaps: Vec<String> = panels
        .iter()
        .filter(|p| p["type"] == "heatmap")
        .flat_map(|p| p["targets"].as_array().unwrap().iter())
        .map(|t| {
            assert_eq!(t["format"], "heatmap");
            t["expr"].as_str().unwrap().to_owned()
        })
        .collect();
    for histogram in [
        "ebpf_memory_direct_reclaim_seconds_bucket",
        "ebpf_memory_memcg_reclaim_seconds_bucket",
    ] {
        assert!(
            heatmaps.iter().any(|e| e.contains(histogram)),
            "no heatmap of {histogram}"
        );
    }
    for wanted in [
        "ebpf_cache_misses_total",
        "ebpf_cache_read_attempts_total",
        "ebpf_cache_hit_rate_percent",
        "ebpf_fadvise_calls_total",
        "ebpf_fadvise_success_total",
        "ebpf_memory_lru_pages_scanned_total",
        "ebpf_memory_lru_pages_reclaimed_total",
        "ebpf_memory_reclaim_efficiency_percent",
        "ebpf_io_read_seconds_bucket",
        "ebpf_io_read_bytes_total",
        "ebpf_io_fsync_seconds_bucket",
        "ebpf_io_dirtied_pages_total",
        "ebpf_memory_file_refaults_total",
        "ebpf_memory_anon_refaults_total",
        "ebpf_memcg_page_cache_adds_total",
        "ebpf_memcg_page_cache_evictions_total",
        "ebpf_memcg_file_refaults_total",
        "ebpf_memcg_anon_refaults_total",
        "ebpf_page_cache_evictions_total",
        "sidecar_drains_total",
        "sidecar_drain_duration_seconds_bucket",
        "sidecar_map_overflow_total",
        "sidecar_tracked_processes",
        "sidecar_bpf_program_run_seconds_total",
        "sidecar_export_points_total",
        "sidecar_export_queue_points",
    ] {
        assert!(
            used.contains(wanted),
            "the dashboard does not show {wanted}"
        );
    }
}

/// The dashboard's PromQL parses: promtool checks each expression as a recording rule, with
/// Grafana's variables replaced by values.
#[test]
fn dashboard_promql_parses() {
    let Some(promtool) = promtool() else {
        missing_tool(
            "dashboard_promql_parses",
            "promtool is not on PATH (Debian package prometheus)",
        );
        return;
    };
    let dashboard: Json =
        serde_json::from_str(&read(&deploy("grafana-dashboard.json"))).expect("dashboard JSON");
    let exprs: Vec<String> = promql(&dashboard)
        .into_iter()
        .filter(|e| !e.starts_with("label_values("))
        .map(|e| {
            e.replace("$__rate_interval", "1m")
                .replace("$__interval", "1m")
                .replace("$instance", ".*")
                .replace("$workload", ".*")
        })
        .collect();
    assert!(
        exprs.iter().all(|e| !e.contains('$')),
        "an unknown Grafana variable in {exprs:?}"
    );
    let rules = serde_json::json!({
        "groups": [{
            "name": "dashboard",
            "rules": exprs
                .iter()
                .enumerate()
                .map(|(i, e)| serde_json::json!({"record": format!("dashboard:expr_{i}"), "expr": e}))
                .collect::<Vec<_>>(),
        }]
    });
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rules.yml");
    // JSON is YAML.
    std::fs::write(&file, rules.to_string()).unwrap();
    let output = run(Command::new(&promtool).args(["check", "rules"]).arg(&file));
    let report = text(&output);
    assert!(output.status.success(), "promtool check rules:\n{report}");
    assert!(
        report.contains(&format!("SUCCESS: {} rules found", exprs.len())),
        "{report}"
    );
}
