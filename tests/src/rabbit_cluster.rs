//! A RabbitMQ cluster of the test's own: three nodes on loopback ports of the range
//! 26000-26999, each with its own node name, config, data and log directories in a
//! temp dir, sharing an Erlang cookie through a private `HOME`. The machine's broker
//! (its config, its port 5672, its node name) is never touched; only epmd is shared,
//! which tells nodes apart by name. Nodes are stopped by PID, by `Drop` at the latest.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A node of [`RabbitCluster`].
pub struct RabbitNode {
    /// `rmq-t<i>-<base>@localhost`.
    pub name: String,
    pub amqp_port: u16,
    dist_port: u16,
    /// The `rabbitmq_prometheus` plugin's port, on clusters started with metrics.
    pub metrics_port: Option<u16>,
    dir: PathBuf,
    /// The `rabbitmq-server` script; the Erlang VM is its child, whose PID the node
    /// writes to its pid file.
    script: Option<Child>,
}

impl RabbitNode {
    fn pid_file(&self) -> PathBuf {
        self.dir.join("pid")
    }

    /// The Erlang VM's PID, from the pid file the node writes once it runs.
    pub fn vm_pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.pid_file()).ok()?.trim().parse().ok()
    }
}

pub struct RabbitCluster {
    pub nodes: Vec<RabbitNode>,
    sbin: PathBuf,
    dir: tempfile::TempDir,
    ctl_ports: (u16, u16),
}

/// Where the broker's scripts are: `RABBITMQ_SBIN`, Debian's directory (the scripts in
/// `/usr/sbin` there switch to the `rabbitmq` user), or `PATH`.
fn find_sbin() -> Option<PathBuf> {
    if let Ok(dir) = std::env::var("RABBITMQ_SBIN") {
        return Some(PathBuf::from(dir));
    }
    let debian = PathBuf::from("/usr/lib/rabbitmq/bin");
    if debian.join("rabbitmq-server").exists() {
        return Some(debian);
    }
    std::env::var("PATH")
        .ok()?
        .split(':')
        .map(PathBuf::from)
        .find(|d| d.join("rabbitmq-server").exists() && d.join("rabbitmqctl").exists())
}

fn port_free(port: u16) -> bool {
    std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
}

impl RabbitCluster {
    /// Starts `n` nodes and joins the others to the first. `None` when RabbitMQ's
    /// scripts are not installed (a failure under `CI=true`); any other failure to
    /// start panics.
    pub fn start(n: usize) -> Option<RabbitCluster> {
        Self::start_inner(n, false)
    }

    /// [`RabbitCluster::start`] with the `rabbitmq_prometheus` plugin enabled on every
    /// node, listening on 127.0.0.1 (`RabbitNode::metrics_port`), as a production
    /// cluster scraped by Prometheus runs.
    pub fn start_with_metrics(n: usize) -> Option<RabbitCluster> {
        Self::start_inner(n, true)
    }

    fn start_inner(n: usize, metrics: bool) -> Option<RabbitCluster> {
        let Some(sbin) = find_sbin() else {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI=true and rabbitmq-server is not installed"
            );
            eprintln!("skipped: rabbitmq-server not found (RABBITMQ_SBIN, /usr/lib/rabbitmq/bin, PATH)");
            return None;
        };
        // Blocks of 100 ports: AMQP base+1.., distribution base+11.., CLI base+20..29,
        // Prometheus base+31... A block still held by a node of an earlier, killed run is
        // skipped.
        let base = (1..=9u16)
            .map(|k| 26000 + 100 * k)
            .find(|b| {
                (1..=n as u16).all(|i| port_free(b + i) && port_free(b + 10 + i) && port_free(b + 30 + i))
            })
            .expect("a free block of ports in 26100-26999");
        let dir = tempfile::Builder::new().prefix("rabbitcluster-").tempdir().unwrap();
        let home = dir.path().join("home");
        std::fs::create_dir_all(&home).unwrap();
        let cookie = home.join(".erlang.cookie");
        std::fs::write(&cookie, format!("TESTCLUSTER{:016X}", rand::random::<u64>())).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&cookie, std::fs::Permissions::from_mode(0o400)).unwrap();
        // Empty: the machine's rabbitmq-env.conf names the machine's node.
        std::fs::write(dir.path().join("rabbitmq-env.conf"), "").unwrap();
        // No plugin (the management UI included), or only the Prometheus one.
        let plugins = if metrics { "[rabbitmq_prometheus].\n" } else { "[].\n" };
        std::fs::write(dir.path().join("enabled_plugins"), plugins).unwrap();
        let nodes = (1..=n as u16)
            .map(|i| {
                let node_dir = dir.path().join(format!("node{i}"));
                std::fs::create_dir_all(&node_dir).unwrap();
                let amqp_port = base + i;
                let metrics_port = metrics.then_some(base + 30 + i);
                // Our own config file: the machine's listens on 5672.
                let mut conf = format!("listeners.tcp.local = 127.0.0.1:{amqp_port}\n");
                if let Some(port) = metrics_port {
                    conf += &format!("prometheus.tcp.ip = 127.0.0.1\nprometheus.tcp.port = {port}\n");
                }
                std::fs::write(node_dir.join("rabbitmq.conf"), conf).unwrap();
                RabbitNode {
                    name: format!("rmq-t{i}-{base}@localhost"),
                    amqp_port,
                    metrics_port,
                    dist_port: base + 10 + i,
                    dir: node_dir,
                    script: None,
                }
            })
            .collect();
        let mut cluster = RabbitCluster { nodes, sbin, dir, ctl_ports: (base + 20, base + 29) };
        for i in 0..n {
            cluster.spawn(i);
        }
        for i in 0..n {
            cluster.await_node(i);
        }
        let first = cluster.nodes[0].name.clone();
        for i in 1..n {
            cluster.ctl(i, &["stop_app"]);
            cluster.ctl(i, &["join_cluster", &first]);
            cluster.ctl(i, &["start_app"]);
        }
        let running = cluster.running_nodes(0);
        assert_eq!(running.len(), n, "every node joined: {running:?}");
        Some(cluster)
    }

    fn env(&self, cmd: &mut Command) {
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", self.dir.path().join("home"))
            .env("LC_ALL", "C.UTF-8")
            .env("RABBITMQ_CONF_ENV_FILE", self.dir.path().join("rabbitmq-env.conf"))
            .env("RABBITMQ_CTL_DIST_PORT_MIN", self.ctl_ports.0.to_string())
            .env("RABBITMQ_CTL_DIST_PORT_MAX", self.ctl_ports.1.to_string())
            .stdin(Stdio::null());
    }

    fn spawn(&mut self, i: usize) {
        let node = &self.nodes[i];
        let _ = std::fs::remove_file(node.pid_file());
        let log =
            std::fs::OpenOptions::new().create(true).append(true).open(node.dir.join("stdout.log")).unwrap();
        let mut cmd = Command::new(self.sbin.join("rabbitmq-server"));
        self.env(&mut cmd);
        cmd.env("RABBITMQ_NODENAME", &node.name)
            .env("RABBITMQ_NODE_PORT", node.amqp_port.to_string())
            .env("RABBITMQ_DIST_PORT", node.dist_port.to_string())
            .env("RABBITMQ_CONFIG_FILE", node.dir.join("rabbitmq.conf"))
            .env("RABBITMQ_MNESIA_BASE", node.dir.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", node.dir.join("log"))
            .env("RABBITMQ_PID_FILE", node.pid_file())
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", self.dir.path().join("enabled_plugins"))
            .env("RABBITMQ_PLUGINS_EXPAND_DIR", node.dir.join("plugins-expand"))
            // Inter-node traffic on loopback only.
            .env("RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS", "-kernel inet_dist_use_interface {127,0,0,1}")
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        // A process group of its own: the script, the VM and its helpers are killed
        // together, by the script's PID, even before the VM has written its pid file.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let child = cmd.spawn().expect("spawning rabbitmq-server");
        self.nodes[i].script = Some(child);
    }

    /// Waits until node `i` has written its pid file and started the broker.
    fn await_node(&self, i: usize) {
        let pid_file = self.nodes[i].pid_file();
        let pid_file = pid_file.to_str().unwrap();
        self.ctl(i, &["wait", pid_file, "--timeout", "90"]);
    }

    /// `rabbitmqctl -n <node i> ARGS`, panicking with its output and the node's log
    /// when it fails.
    pub fn ctl(&self, i: usize, args: &[&str]) -> String {
        let mut cmd = Command::new(self.sbin.join("rabbitmqctl"));
        self.env(&mut cmd);
        let out = cmd.arg("-n").arg(&self.nodes[i].name).args(args).output().expect("running rabbitmqctl");
        assert!(
            out.status.success(),
            "rabbitmqctl -n {} {args:?}: {}{}\nnode log tail:\n{}",
            self.nodes[i].name,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log_tail(i)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn log_tail(&self, i: usize) -> String {
        let text = std::fs::read_to_string(self.nodes[i].dir.join("stdout.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// `amqp://guest:guest@127.0.0.1:<port>/%2f` of node `i`.
    pub fn url(&self, i: usize) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.nodes[i].amqp_port)
    }

    /// The nodes `cluster_status` on node `i` reports running.
    pub fn running_nodes(&self, i: usize) -> Vec<String> {
        let out = self.ctl(i, &["cluster_status", "--formatter", "json"]);
        let status: Value =
            serde_json::from_str(&out).unwrap_or_else(|e| panic!("cluster_status: {e}: {out}"));
        let mut running: Vec<String> = status["running_nodes"]
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
            .unwrap_or_default();
        running.sort();
        running
    }

    /// Index of the node holding the leader of quorum queue `queue`, asked of node `i`.
    pub fn leader_of(&self, i: usize, queue: &str) -> Option<usize> {
        let out = self.ctl(i, &["list_queues", "name", "leader", "--formatter", "json"]);
        let queues: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("list_queues: {e}: {out}"));
        let leader = queues.as_array()?.iter().find(|q| q["name"] == queue)?["leader"].as_str()?.to_string();
        self.nodes.iter().position(|n| n.name == leader)
    }

    /// Kills node `i` with SIGKILL (its VM, by the PID in its pid file, and the process
    /// group of the script that started it), as a crash or a lost machine would.
    pub fn kill(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        if let Some(pid) = node.vm_pid() {
            let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
        }
        if let Some(mut script) = node.script.take() {
            let _ = Command::new("kill").args(["-KILL", "--", &format!("-{}", script.id())]).status();
            let _ = script.kill();
            let _ = script.wait();
        }
        let _ = std::fs::remove_file(node.pid_file());
    }

    /// Starts node `i` again on its data directory and waits until the broker runs.
    pub fn restart(&mut self, i: usize) {
        self.spawn(i);
        self.await_node(i);
    }

    pub fn log_dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for RabbitCluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
        // The VMs are gone; wait until their ports are released so a next run finds
        // the same block free.
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5)
            && !self.nodes.iter().all(|n| port_free(n.amqp_port) && port_free(n.dist_port))
        {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}
