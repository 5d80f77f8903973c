//! What schemas cannot check in `deploy/`: the Kubernetes manifests, the alert rules and
//! the dashboard held against the real `metadata-worker` binary. Every env name must be
//! a setting the binary lists in `run --help`, the grace period must outlast
//! `SHUTDOWN_GRACE`, the probes must hit paths a running worker answers on the port it
//! listens on, the temp volume and memory limit must fit the settings, and every worker
//! metric a rule or a panel names must be in a real worker's `/metrics`.
//! The manifests are rendered by `scripts/deploy/render.py`, the renderer CI validates
//! against the Kubernetes and KEDA schemas (`scripts/check-deploy.sh`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use pipeline_tests::{Scene, http_get, services_up, worker_bin, workspace_root};
use serde_json::Value;

const OVERLAYS: [&str; 2] = ["overlays/keda", "overlays/hpa"];

/// The items of one kustomization, rendered as CI renders them.
fn render(kustomization: &str) -> Vec<Value> {
    let root = workspace_root();
    let out = Command::new("python3")
        .current_dir(&root)
        .arg("scripts/deploy/render.py")
        .arg(root.join("deploy/kubernetes").join(kustomization))
        .output()
        .expect(
            "running python3 scripts/deploy/render.py (needs PyYAML: scripts/check-deploy.sh installs it)",
        );
    assert!(out.status.success(), "render.py {kustomization}: {}", String::from_utf8_lossy(&out.stderr));
    let doc: Value = serde_json::from_slice(&out.stdout).expect("render.py prints JSON");
    doc["items"].as_array().expect("items").clone()
}

fn one<'a>(items: &'a [Value], kind: &str) -> &'a Value {
    let found: Vec<&Value> = items.iter().filter(|i| i["kind"] == kind).collect();
    assert_eq!(found.len(), 1, "exactly one {kind}");
    found[0]
}

/// Every setting of `metadata-worker run`: its variable and its default, read from the
/// binary's own `--help` (clap prints `[env: NAME=…]` and `[default: …]` per flag).
fn settings() -> BTreeMap<String, Option<String>> {
    let out =
        Command::new(worker_bin()).args(["run", "--help"]).output().expect("metadata-worker run --help");
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    let mut settings = BTreeMap::new();
    // One block per flag: from a line starting with `-` to the next one.
    let mut blocks: Vec<String> = Vec::new();
    for line in help.lines() {
        if line.trim_start().starts_with('-') {
            blocks.push(String::new());
        }
        if let Some(b) = blocks.last_mut() {
            b.push_str(line);
            b.push('\n');
        }
    }
    for block in blocks {
        let Some(env) = block.split("[env: ").nth(1) else { continue };
        let name: String =
            env.chars().take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_').collect();
        let default = block.split("[default: ").nth(1).and_then(|d| d.split(']').next()).map(str::to_string);
        settings.insert(name, default);
    }
    assert!(settings.len() > 20, "parsed too few settings from run --help:\n{help}");
    settings
}

/// `250ms`, `30s`, `5m`, `1h` or bare seconds, as the worker reads them.
fn duration(s: &str) -> Duration {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().unwrap_or_else(|_| panic!("duration {s:?}"));
    match unit {
        "ms" => Duration::from_millis(n),
        "" | "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        _ => panic!("duration {s:?}"),
    }
}

/// A Kubernetes quantity of bytes: `20Gi`, `384Mi`, `1G`, `1000`.
fn quantity(s: &str) -> u64 {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().unwrap_or_else(|_| panic!("quantity {s:?}"));
    n * match unit {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "k" => 1000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        _ => panic!("quantity {s:?}"),
    }
}

/// The worker container's settings: what the manifest sets, else the binary's default.
struct Effective {
    set: BTreeMap<String, Value>,
    defaults: BTreeMap<String, Option<String>>,
}

impl Effective {
    fn get(&self, name: &str) -> String {
        if let Some(s) = self.set.get(name).and_then(|v| v["value"].as_str()) {
            return s.to_string();
        }
        self.defaults
            .get(name)
            .unwrap_or_else(|| panic!("{name} is not a setting"))
            .clone()
            .unwrap_or_else(|| panic!("{name} has no default and the manifest sets no value"))
    }
}

/// The worker's resident memory at its measured peak (PREFETCH jobs of MAX_JOB_BYTES in
/// flight, `scripts/bench-memory.sh`), and what a probe process adds beyond
/// PROBE_MEMORY_LIMIT (the file bytes a parser may hold, `Limits::max_memory_bytes`).
const WORKER_PEAK_RSS: u64 = 121 << 20;
const PARSER_FILE_BYTES: u64 = 32 << 20;

#[test]
fn manifests_hold_the_workers_settings_and_limits() {
    let settings = settings();
    let readme = std::fs::read_to_string(workspace_root().join("README.md")).unwrap();
    let alerts = std::fs::read_to_string(workspace_root().join("deploy/prometheus/alerts.yml")).unwrap();
    for overlay in OVERLAYS {
        let items = render(overlay);
        let deployment = one(&items, "Deployment");
        let name = deployment["metadata"]["name"].as_str().unwrap();
        let pod = &deployment["spec"]["template"];
        let labels = &pod["metadata"]["labels"];
        let spec = &pod["spec"];
        let containers = spec["containers"].as_array().unwrap();
        assert_eq!(containers.len(), 1, "{overlay}: one container");
        let c = &containers[0];
        assert_eq!(c["args"][0], "run", "{overlay}: the container runs the service");

        // Every variable is a real setting (or a log filter, or an org secret).
        let mut set = BTreeMap::new();
        for e in c["env"].as_array().unwrap() {
            let var = e["name"].as_str().unwrap().to_string();
            let known = settings.contains_key(&var) || var == "RUST_LOG" || var.starts_with("ORG_SECRET_");
            assert!(known, "{overlay}: env {var} is not a setting of metadata-worker run");
            assert!(set.insert(var.clone(), e.clone()).is_none(), "{overlay}: env {var} twice");
        }
        assert!(c.get("envFrom").is_none(), "{overlay}: envFrom would hide names from this check");
        for secret in ["AMQP_URL", "DATABASE_URL"] {
            assert!(
                set[secret]["valueFrom"]["secretKeyRef"].is_object(),
                "{overlay}: {secret} from a Secret"
            );
        }
        let eff = Effective { set, defaults: settings.clone() };

        // Grace period outlasts the drain.
        let grace = spec["terminationGracePeriodSeconds"].as_u64().expect("terminationGracePeriodSeconds");
        let shutdown = duration(&eff.get("SHUTDOWN_GRACE"));
        assert!(
            Duration::from_secs(grace) > shutdown,
            "{overlay}: terminationGracePeriodSeconds {grace} must exceed SHUTDOWN_GRACE {shutdown:?}"
        );

        // Probes reach the port METRICS_ADDR listens on, at the worker's paths.
        let metrics_addr = eff.get("METRICS_ADDR");
        let port: u64 = metrics_addr.rsplit(':').next().unwrap().parse().expect("METRICS_ADDR port");
        assert!(metrics_addr.starts_with("0.0.0.0:"), "{overlay}: the kubelet probes the pod IP");
        let ports = c["ports"].as_array().unwrap();
        let named =
            ports.iter().find(|p| p["containerPort"] == port).expect("containerPort = METRICS_ADDR port");
        let port_name = named["name"].as_str().unwrap();
        for (probe, path) in
            [("startupProbe", "/healthz"), ("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")]
        {
            let get = &c[probe]["httpGet"];
            assert_eq!(get["path"], path, "{overlay}: {probe} path");
            assert!(get["port"] == port_name || get["port"] == port, "{overlay}: {probe} port");
        }
        let annotations = &pod["metadata"]["annotations"];
        assert_eq!(annotations["prometheus.io/port"], port.to_string(), "{overlay}: scrape port");
        assert_eq!(annotations["prometheus.io/path"], "/metrics");
        let service = one(&items, "Service");
        assert!(service["spec"]["ports"].as_array().unwrap().iter().any(|p| p["targetPort"] == port_name));

        // Non-root, read-only root, nothing to escalate.
        assert_eq!(spec["securityContext"]["runAsNonRoot"], true, "{overlay}");
        assert_ne!(spec["securityContext"]["runAsUser"], 0, "{overlay}");
        assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true, "{overlay}");
        assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false, "{overlay}");
        assert_eq!(c["securityContext"]["capabilities"]["drop"][0], "ALL", "{overlay}");
        assert_eq!(spec["automountServiceAccountToken"], false, "{overlay}");

        // TEMP_DIR strictly below an emptyDir mount (the worker chmods its own directory,
        // which it may not do to the volume's root), and the volume large enough.
        let volumes = spec["volumes"].as_array().unwrap();
        let mounts = c["volumeMounts"].as_array().unwrap();
        let temp_dir = eff.get("TEMP_DIR");
        let mount = mounts
            .iter()
            .find(|m| Path::new(&temp_dir).starts_with(m["mountPath"].as_str().unwrap()))
            .unwrap_or_else(|| panic!("{overlay}: TEMP_DIR {temp_dir} is on no volume"));
        assert_ne!(Path::new(&temp_dir), Path::new(mount["mountPath"].as_str().unwrap()), "{overlay}");
        let volume = volumes.iter().find(|v| v["name"] == mount["name"]).unwrap();
        let size_limit = quantity(
            volume["emptyDir"]["sizeLimit"].as_str().expect("TEMP_DIR on an emptyDir with a sizeLimit"),
        );
        let max_asset: u64 = eff.get("MAX_ASSET_BYTES").parse().unwrap();
        let concurrency: u64 = eff.get("CONCURRENCY").parse().unwrap();
        if size_limit < max_asset * concurrency {
            // Allowed only with ranged reads, and with the reason in the README.
            assert_eq!(
                eff.get("FETCH_MODE"),
                "ranged",
                "{overlay}: a full download of each asset needs the whole product"
            );
            let limit = volume["emptyDir"]["sizeLimit"].as_str().unwrap();
            let why = readme
                .split("**Temp directory size.**")
                .nth(1)
                .expect("README: Temp directory size")
                .split("\n\n")
                .next()
                .unwrap();
            assert!(
                why.contains(limit) && why.contains("MAX_ASSET_BYTES") && why.contains("CONCURRENCY"),
                "{why}"
            );
        }
        // The alert's threshold is 80 % of the limit.
        let threshold: u64 = alerts
            .split("metadata_worker_temp_dir_bytes > ")
            .nth(1)
            .and_then(|t| t.split_whitespace().next())
            .and_then(|t| t.parse().ok())
            .expect("alerts.yml: a numeric temp dir threshold");
        assert_eq!(threshold, size_limit / 5 * 4, "{overlay}: TempDirNearLimit at 80 % of the emptyDir");

        // Memory: the worker's measured peak plus every probe process at its ceiling.
        let processes: u64 = eff.get("PROBE_PROCESSES").parse().unwrap();
        let probe_limit: u64 = eff.get("PROBE_MEMORY_LIMIT").parse().unwrap();
        let limit = quantity(c["resources"]["limits"]["memory"].as_str().expect("a memory limit"));
        let worst = WORKER_PEAK_RSS + processes * (probe_limit + PARSER_FILE_BYTES);
        assert!(limit >= worst, "{overlay}: memory limit {limit} < worst case {worst}");
        assert!(quantity(c["resources"]["requests"]["memory"].as_str().unwrap()) <= limit);

        // Org secrets where the worker resolves `file:` references: SECRETS_DIR/<org>/<NAME>.
        let secrets_dir = eff.get("SECRETS_DIR");
        let mount =
            mounts.iter().find(|m| m["mountPath"] == secrets_dir.as_str()).expect("a volume at SECRETS_DIR");
        assert_eq!(mount["readOnly"], true);
        let volume = volumes.iter().find(|v| v["name"] == mount["name"]).unwrap();
        for source in volume["projected"]["sources"].as_array().unwrap() {
            for item in source["secret"]["items"].as_array().unwrap() {
                let path = item["path"].as_str().unwrap();
                let (org, secret) = path.split_once('/').expect("items are ORG/NAME");
                let org_ok = !org.is_empty()
                    && org.split('-').all(|p| {
                        !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
                    });
                assert!(org_ok, "{overlay}: {path}: not an org id");
                assert!(
                    !secret.is_empty() && !secret.contains('/') && secret != "." && secret != "..",
                    "{path}"
                );
            }
        }

        // The PDB and the autoscaler point at this Deployment's pods.
        let pdb = one(&items, "PodDisruptionBudget");
        for (k, v) in pdb["spec"]["selector"]["matchLabels"].as_object().unwrap() {
            assert_eq!(&labels[k], v, "{overlay}: PDB selector");
        }
        let prefetch = match eff.set.get("PREFETCH") {
            Some(v) => v["value"].as_str().unwrap().parse::<u64>().unwrap(),
            // min(CONCURRENCY, 16 MiB / MAX_JOB_BYTES), as the worker resolves it.
            None => concurrency.min((16 << 20) / eff.get("MAX_JOB_BYTES").parse::<u64>().unwrap()),
        };
        if overlay.ends_with("keda") {
            let so = one(&items, "ScaledObject");
            assert_eq!(so["spec"]["scaleTargetRef"]["name"], name);
            let trigger = &so["spec"]["triggers"][0];
            assert_eq!(trigger["type"], "rabbitmq");
            assert_eq!(
                trigger["metadata"]["queueName"],
                eff.get("JOBS_QUEUE").as_str(),
                "KEDA watches the jobs queue"
            );
            // http counts unacked messages: a replica's own prefetched jobs must not ask
            // for another replica by themselves.
            assert_eq!(trigger["metadata"]["protocol"], "http");
            let value: u64 = trigger["metadata"]["value"].as_str().unwrap().parse().unwrap();
            assert!(value > prefetch, "KEDA value {value} must exceed PREFETCH {prefetch}");
            let auth = one(&items, "TriggerAuthentication");
            assert_eq!(trigger["authenticationRef"]["name"], auth["metadata"]["name"]);
        } else {
            let hpa = one(&items, "HorizontalPodAutoscaler");
            assert_eq!(hpa["spec"]["scaleTargetRef"]["name"], name);
            assert!(c["resources"]["requests"]["cpu"].is_string(), "CPU utilisation needs a CPU request");
        }
    }
}

/// Metric names in a rule file or a dashboard: the worker's, the RabbitMQ plugin's and
/// kube-state-metrics'.
fn named_metrics(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for prefix in ["metadata_worker_", "rabbitmq_", "kube_"] {
        let mut rest = text;
        while let Some(at) = rest.find(prefix) {
            let before = rest[..at].chars().next_back();
            let tail = &rest[at..];
            let end = tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(tail.len());
            let name = &tail[..end];
            // `metadata_worker_*` in prose names a prefix, not a metric.
            if !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') && !name.ends_with('_') {
                names.insert(name.to_string());
            }
            rest = &tail[end..];
        }
    }
    names
}

/// Names the rules and the dashboard may use from outside the worker: the RabbitMQ
/// Prometheus plugin's per-object queue metrics and kube-state-metrics' Deployment ones.
const EXTERNAL_METRICS: [&str; 5] = [
    "rabbitmq_queue_messages",
    "rabbitmq_queue_messages_ready",
    "rabbitmq_queue_messages_unacked",
    "kube_deployment_spec_replicas",
    "kube_deployment_status_replicas_ready",
];

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_configured_as_deployed_answers_its_probes_and_exposes_every_named_metric() {
    if !services_up() {
        return;
    }
    let items = render("overlays/keda");
    let c = &one(&items, "Deployment")["spec"]["template"]["spec"]["containers"][0];
    // The manifest's plain settings, except where this machine differs from a pod: the
    // broker, database, directories and port are the scene's.
    let local = ["TEMP_DIR", "SECRETS_DIR", "METRICS_ADDR"];
    let plain: Vec<(String, String)> = c["env"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| !local.contains(&e["name"].as_str().unwrap()))
        .filter_map(|e| Some((e["name"].as_str()?.to_string(), e["value"].as_str()?.to_string())))
        .collect();
    assert!(plain.iter().any(|(k, _)| k == "CONCURRENCY"), "the manifest's settings are used");
    let scene = Scene::new("deploy").await;
    let secrets = scene.dir.path().join("secrets");
    std::fs::create_dir_all(&secrets).unwrap();
    let secrets = secrets.to_str().unwrap().to_string();
    let mut env: Vec<(&str, &str)> = plain.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    env.push(("SECRETS_DIR", &secrets));
    // ready_worker waits for /readyz = 200, the readiness probe's answer.
    let (worker, port) = scene.ready_worker(1, &env).await;
    for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
        let path = c[probe]["httpGet"]["path"].as_str().unwrap();
        let answer = http_get(port, path);
        assert!(matches!(answer, Some((200, _))), "{probe} {path}: {answer:?}; log:\n{}", worker.log_tail());
    }
    let (status, body) = http_get(port, "/metrics").expect("/metrics");
    assert_eq!(status, 200);
    // A family is in the exposition from the start (`# TYPE name kind`); counters'
    // samples carry `_total`, histograms' `_bucket`, `_sum` and `_count`.
    let families: BTreeSet<&str> =
        body.lines().filter_map(|l| l.strip_prefix("# TYPE ")?.split(' ').next()).collect();
    let exists = |name: &str| {
        families.contains(name)
            || ["_total", "_bucket", "_sum", "_count"]
                .iter()
                .any(|suffix| name.strip_suffix(suffix).is_some_and(|base| families.contains(base)))
    };
    assert!(exists("metadata_worker_temp_dir_bytes") && exists("metadata_worker_credential_failures_total"));
    let root = workspace_root();
    let mut checked = 0;
    for file in ["deploy/prometheus/alerts.yml", "deploy/grafana/metadata-worker.json"] {
        let text = std::fs::read_to_string(root.join(file)).unwrap();
        let names = named_metrics(&text);
        assert!(names.iter().any(|n| n.starts_with("metadata_worker_")), "{file} names no worker metric");
        for name in names {
            if name.starts_with("metadata_worker_") {
                assert!(
                    exists(&name),
                    "{file} names {name}, which the worker's /metrics does not have:\n{body}"
                );
                checked += 1;
            } else {
                assert!(
                    EXTERNAL_METRICS.contains(&name.as_str()),
                    "{file} names {name}, not a known external metric"
                );
            }
        }
    }
    assert!(checked >= 10, "only {checked} worker metric names checked");
    drop(worker);
    scene.cleanup().await;
}

/// The RabbitMQ names the rules and the dashboard use, read off a live broker: a node of
/// the test's own with the `rabbitmq_prometheus` plugin (as production clusters run it),
/// the worker's queues declared as the worker declares them, two messages in the
/// dead-letter queue. Each name has a sample per queue, labelled `queue`, and the DLQ's
/// `rabbitmq_queue_messages` counts the two.
#[tokio::test(flavor = "multi_thread")]
async fn the_rabbitmq_names_the_rules_and_dashboard_use_exist_on_a_live_broker() {
    use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
    let Some(cluster) = pipeline_tests::RabbitCluster::start_with_metrics(1) else { return };
    let topology = asset_queue::Topology::default();
    let conn = lapin::Connection::connect(&cluster.url(0), lapin::ConnectionProperties::default())
        .await
        .expect("the test's node");
    let ch = conn.create_channel().await.unwrap();
    topology.declare(&ch).await.expect("declaring the worker's queues");
    ch.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
    for body in [&b"one"[..], b"two"] {
        ch.basic_publish(
            "",
            &topology.dead_letter_queue,
            BasicPublishOptions::default(),
            body,
            lapin::BasicProperties::default(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    }

    let url = format!("http://127.0.0.1:{}/metrics/per-object", cluster.nodes[0].metrics_port.unwrap());
    let sample = |body: &str, name: &str, queue: &str| -> Option<f64> {
        body.lines().find_map(|line| {
            let rest = line.strip_prefix(name)?.strip_prefix('{')?;
            let (labels, value) = rest.split_once("} ")?;
            labels.split(',').any(|l| l == format!("queue=\"{queue}\"")).then(|| value.trim().parse().ok())?
        })
    };
    // The plugin's queue figures refresh every few seconds.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let body = loop {
        let body = reqwest::get(&url).await.unwrap().text().await.unwrap();
        if sample(&body, "rabbitmq_queue_messages", &topology.dead_letter_queue) == Some(2.0) {
            break body;
        }
        assert!(std::time::Instant::now() < deadline, "the DLQ never showed 2 messages:\n{body}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let mut checked = 0;
    for name in EXTERNAL_METRICS.iter().filter(|n| n.starts_with("rabbitmq_")) {
        for queue in [&topology.jobs_queue, &topology.retry_queue, &topology.dead_letter_queue] {
            assert!(sample(&body, name, queue).is_some(), "no {name} for {queue} on the broker:\n{body}");
            checked += 1;
        }
    }
    assert_eq!(checked, 9);
    assert_eq!(sample(&body, "rabbitmq_queue_messages_ready", &topology.dead_letter_queue), Some(2.0));
    assert_eq!(sample(&body, "rabbitmq_queue_messages", &topology.jobs_queue), Some(0.0));
    drop(conn);
}

#[test]
fn metric_names_are_found_in_promql() {
    let names = named_metrics(
        r#"sum(rate(metadata_worker_assets_total{x="metadata_worker_no"}[5m])) / kube_deployment_spec_replicas
        and my_rabbitmq_queue_messages, kube_* from kube-state-metrics"#,
    );
    let expected: BTreeSet<String> =
        ["metadata_worker_assets_total", "metadata_worker_no", "kube_deployment_spec_replicas"]
            .map(String::from)
            .into();
    assert_eq!(names, expected);
}
