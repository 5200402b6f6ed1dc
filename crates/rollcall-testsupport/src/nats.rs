//! A real NATS cluster speaking MQTT, for tests and benchmarks: each node's
//! configuration written in one place ([`node_config`]), the nodes started
//! as child processes on free loopback ports, ready once every node takes
//! an MQTT subscription, each killed when dropped. The network-namespace bed
//! writes the same configuration for nodes on its own addresses.
//!
//! NATS serves MQTT 3.1.1 only with JetStream on and a `server_name`; a
//! cluster of three keeps its MQTT state (sessions, retained messages) in
//! streams replicated on every node, so a node may die and the rest carry on.

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rollcall_net::{BrokerList, BrokerUrl, Session, SessionConfig};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::{SupportError, find_program, free_tcp_port, skip};

/// How long a cluster may take until every node takes a subscription.
const READY: Duration = Duration::from_secs(30);

/// The cluster's name in every node's configuration.
pub const CLUSTER_NAME: &str = "rollcall";

/// One node's ports and folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeConfig {
    /// `server_name`, which JetStream needs.
    pub name: String,
    /// The address every listener binds.
    pub address: String,
    /// NATS clients' port (unused by rollcall, but NATS wants one).
    pub client_port: u16,
    /// Routes between the nodes.
    pub cluster_port: u16,
    /// MQTT.
    pub mqtt_port: u16,
    /// Every node's route URL (`nats://addr:cluster_port`), this one's included.
    pub routes: Vec<String>,
    /// JetStream's folder.
    pub store_dir: PathBuf,
}

/// The configuration file of one node: JetStream on (MQTT needs it), its
/// routes to the others (none for a lone node), MQTT on `mqtt_port`,
/// anonymous clients.
///
/// Each QoS 1 subscription is a JetStream consumer, replicated like the
/// streams (a raft group on three nodes). One replica in memory
/// (`consumer_replicas: 1`) would make subscribing faster, but a consumer
/// then dies with its node, and NATS refuses the session's reconnection to
/// any other node for as long as it cannot delete the session's old
/// consumers ("unable to delete consumer ... timeout"): failover breaks.
pub fn node_config(node: &NodeConfig) -> String {
    let routes = node
        .routes
        .iter()
        .map(|r| format!("\"{r}\""))
        .collect::<Vec<_>>()
        .join(", ");
    // A lone node has no cluster block: JetStream would wait for peers.
    let cluster = if node.routes.len() > 1 {
        format!(
            "cluster {{\n  name: \"{CLUSTER_NAME}\"\n  listen: \"{}:{}\"\n  routes: [{routes}]\n}}\n",
            node.address, node.cluster_port
        )
    } else {
        String::new()
    };
    format!(
        "server_name: \"{name}\"\n\
         listen: \"{addr}:{client}\"\n\
         jetstream {{\n  store_dir: \"{store}\"\n}}\n\
         {cluster}\
         mqtt {{\n  listen: \"{addr}:{mqtt}\"\n}}\n",
        name = node.name,
        addr = node.address,
        client = node.client_port,
        mqtt = node.mqtt_port,
        store = node.store_dir.display(),
    )
}

/// `nats-server`, or `None` after [`skip`]ping `test`.
pub fn nats_server_or_skip(test: &str) -> Option<PathBuf> {
    crate::require_program(test, "nats-server", "nats-server")
}

/// The first line of `nats-server --version`.
pub fn version() -> String {
    find_program("nats-server")
        .and_then(|p| Command::new(p).arg("--version").output().ok())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

struct Node {
    config: NodeConfig,
    conf: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

/// A NATS cluster of child processes on loopback, killed when dropped.
pub struct NatsCluster {
    program: PathBuf,
    nodes: Vec<Node>,
    dir: tempfile::TempDir,
}

impl NatsCluster {
    /// Starts `nodes` nodes for `test` and waits until they are ready, or
    /// says why not: `None` skips the test, except under `CI=true`.
    pub fn for_test(test: &str, nodes: usize) -> Option<NatsCluster> {
        match NatsCluster::start(nodes) {
            Ok(cluster) => Some(cluster),
            Err(SupportError::NotInstalled(_)) => skip(
                test,
                "nats-server is not installed (apt-get install nats-server)",
            ),
            Err(e) => panic!("{test}: {e}"),
        }
    }

    /// Starts `count` nodes on free loopback ports and waits until every
    /// node takes an MQTT subscription.
    pub fn start(count: usize) -> Result<NatsCluster, SupportError> {
        let program =
            find_program("nats-server").ok_or(SupportError::NotInstalled("nats-server"))?;
        let dir = tempfile::Builder::new()
            .prefix("rollcall-nats-")
            .tempdir()
            .map_err(SupportError::io("a folder for nats-server"))?;
        let cluster_ports: Vec<u16> = (0..count).map(|_| free_tcp_port()).collect();
        let routes: Vec<String> = cluster_ports
            .iter()
            .map(|p| format!("nats://127.0.0.1:{p}"))
            .collect();
        let mut nodes = Vec::new();
        for (i, cluster_port) in cluster_ports.into_iter().enumerate() {
            let name = format!("n{}", i + 1);
            let config = NodeConfig {
                name: name.clone(),
                address: "127.0.0.1".into(),
                client_port: free_tcp_port(),
                cluster_port,
                mqtt_port: free_tcp_port(),
                routes: routes.clone(),
                store_dir: dir.path().join(format!("{name}-js")),
            };
            let conf = dir.path().join(format!("{name}.conf"));
            std::fs::write(&conf, node_config(&config))
                .map_err(SupportError::io(format!("writing {}", conf.display())))?;
            nodes.push(Node {
                config,
                conf,
                log: dir.path().join(format!("{name}.log")),
                child: None,
            });
        }
        let mut cluster = NatsCluster {
            program,
            nodes,
            dir,
        };
        for i in 0..count {
            cluster.start_node(i)?;
        }
        cluster.wait_ready(READY)?;
        Ok(cluster)
    }

    fn start_node(&mut self, i: usize) -> Result<(), SupportError> {
        let node = &mut self.nodes[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .map_err(SupportError::io("nats-server log"))?;
        let child = Command::new(&self.program)
            .arg("-c")
            .arg(&node.conf)
            .stdin(Stdio::null())
            .stdout(
                log.try_clone()
                    .map_err(SupportError::io("nats-server log"))?,
            )
            .stderr(log)
            .spawn()
            .map_err(SupportError::io(format!(
                "running {}",
                self.program.display()
            )))?;
        node.child = Some(child);
        Ok(())
    }

    /// Waits until every running node accepts TCP on its MQTT port and
    /// confirms a subscription (JetStream has elected its leaders).
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<(), SupportError> {
        let deadline = Instant::now() + timeout;
        for i in 0..self.nodes.len() {
            if self.nodes[i].child.is_none() {
                continue;
            }
            let addr = self.mqtt_addr(i);
            while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
                if let Some(Ok(Some(status))) = self.nodes[i].child.as_mut().map(Child::try_wait) {
                    return Err(SupportError::Nats(format!(
                        "{} exited at start ({status}): {}",
                        self.nodes[i].config.name,
                        self.log(i)
                    )));
                }
                if Instant::now() >= deadline {
                    return Err(SupportError::Nats(format!(
                        "not accepting MQTT on {addr} after {timeout:?}"
                    )));
                }
                // Polling a child process's port: nothing to wait on instead.
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let urls: Vec<BrokerUrl> = (0..self.nodes.len())
            .filter(|i| self.nodes[*i].child.is_some())
            .map(|i| self.url(i))
            .collect();
        let left = deadline.saturating_duration_since(Instant::now());
        // A runtime of its own on a thread of its own: the caller may be
        // inside one already.
        std::thread::spawn(move || subscribe_on_each(urls, left))
            .join()
            .map_err(|_| SupportError::Nats("the readiness check panicked".into()))?
            .map_err(SupportError::Nats)
    }

    /// Node `i`'s MQTT address.
    pub fn mqtt_addr(&self, i: usize) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.nodes[i].config.mqtt_port))
    }

    /// Node `i`'s MQTT URL.
    pub fn url(&self, i: usize) -> BrokerUrl {
        BrokerUrl::new("127.0.0.1", self.nodes[i].config.mqtt_port)
    }

    /// Every node's MQTT URL, in order.
    pub fn urls(&self) -> BrokerList {
        BrokerList::new((0..self.nodes.len()).map(|i| self.url(i)).collect())
            .expect("a cluster has nodes on distinct ports")
    }

    /// How many nodes the cluster has (running or not).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the cluster has no node.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Kills node `i` with SIGKILL, as a crash would, and reaps it.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts node `i` again after [`NatsCluster::kill`], with its
    /// JetStream folder as it was, and waits until the cluster is ready.
    pub fn restart(&mut self, i: usize) -> Result<(), SupportError> {
        assert!(self.nodes[i].child.is_none(), "node {i} is running");
        self.start_node(i)?;
        self.wait_ready(READY)
    }

    /// Node `i`'s process id, while it runs.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.nodes[i].child.as_ref().map(Child::id)
    }

    /// The cluster's folder (configurations, JetStream stores, logs).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// What node `i` has logged so far.
    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(&self.nodes[i].log).unwrap_or_default()
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
        if std::thread::panicking() {
            for i in 0..self.nodes.len() {
                let log = self.log(i);
                let tail: Vec<&str> = log.lines().rev().take(30).collect();
                eprintln!(
                    "nats node {} (last lines):\n{}",
                    self.nodes[i].config.name,
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
        }
    }
}

/// Connects to each broker in turn and waits for a confirmed subscription:
/// a NATS node accepts MQTT connections before JetStream can take one.
fn subscribe_on_each(urls: Vec<BrokerUrl>, timeout: Duration) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async move {
        let deadline = tokio::time::Instant::now() + timeout;
        for (i, url) in urls.into_iter().enumerate() {
            let shutdown = CancellationToken::new();
            let tracker = TaskTracker::new();
            let config = SessionConfig::new(
                url.clone(),
                format!("nats-ready-{}-{i}-{}", std::process::id(), crate::unique()),
            );
            let session =
                Session::start(config, shutdown.clone(), &tracker).map_err(|e| e.to_string())?;
            let ready = tokio::time::timeout_at(deadline, async {
                session
                    .handle
                    .wait_connected(timeout)
                    .await
                    .map_err(|e| e.to_string())?;
                // Retried by the session until the node confirms it.
                session
                    .handle
                    .subscribe_confirmed("/rollcall-ready", timeout)
                    .await
                    .map_err(|e| e.to_string())
            })
            .await;
            shutdown.cancel();
            tracker.close();
            tracker.wait().await;
            match ready {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(format!("{url}: {e}")),
                Err(_) => return Err(format!("{url}: not ready after {timeout:?}")),
            }
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_configuration_names_its_routes_jetstream_and_mqtt() {
        let config = NodeConfig {
            name: "n1".into(),
            address: "198.18.0.2".into(),
            client_port: 4222,
            cluster_port: 6222,
            mqtt_port: 1883,
            routes: vec![
                "nats://198.18.0.2:6222".into(),
                "nats://198.18.0.3:6222".into(),
            ],
            store_dir: "/tmp/js".into(),
        };
        let text = node_config(&config);
        assert!(text.contains("server_name: \"n1\"\n"), "{text}");
        assert!(text.contains("store_dir: \"/tmp/js\""), "{text}");
        assert!(text.contains("listen: \"198.18.0.2:6222\""), "{text}");
        assert!(
            text.contains("routes: [\"nats://198.18.0.2:6222\", \"nats://198.18.0.3:6222\"]"),
            "{text}"
        );
        assert!(
            text.contains("mqtt {\n  listen: \"198.18.0.2:1883\"\n}"),
            "{text}"
        );
    }

    #[test]
    fn a_started_cluster_takes_subscriptions_on_every_node_and_is_gone_when_dropped() {
        let Some(cluster) = NatsCluster::for_test("a_started_nats_cluster", 3) else {
            return;
        };
        assert_eq!(cluster.urls().iter().count(), 3);
        let pids: Vec<u32> = (0..3).filter_map(|i| cluster.pid(i)).collect();
        assert_eq!(pids.len(), 3);
        drop(cluster);
        for pid in pids {
            assert!(
                !Path::new(&format!("/proc/{pid}")).exists(),
                "nats-server {pid} still runs after the drop"
            );
        }
    }
}
