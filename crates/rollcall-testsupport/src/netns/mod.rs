//! The network-namespace test bed: hosts as Linux network namespaces joined
//! by bridges that live in namespaces of their own, real processes inside
//! them, faults (links, packet loss), traffic counters, and the clean-up of
//! all of it. Nothing touches the machine's own interfaces: every address is
//! in 198.18.0.0/15, and every interface is created inside a namespace this
//! bed owns. [`cluster`] puts a rollcall cluster on it.

pub mod cluster;

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, Once};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rollcall_net::{BrokerList, Qos, Session, SessionConfig};

use crate::{find_program, skip};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Every namespace this harness creates starts with this, then the pid of
/// the test process, so a sweep can tell its own leftovers from others'.
const NS_PREFIX: &str = "rcnt";

/// The longest a program run to its end ([`TestBed::exec`]) may take.
pub const EXEC_TIMEOUT: Duration = Duration::from_secs(60);

/// Why network namespaces cannot be made here, if they cannot: `ip` missing,
/// or no permission (not root, no CAP_SYS_ADMIN). Asked once per process by
/// creating and deleting a namespace.
pub fn unavailable() -> Option<String> {
    static ANSWER: Mutex<Option<Option<String>>> = Mutex::new(None);
    let mut answer = ANSWER.lock().unwrap_or_else(|e| e.into_inner());
    answer
        .get_or_insert_with(|| {
            let Some(ip) = find_program("ip") else {
                return Some("`ip` (iproute2) is not installed".into());
            };
            let probe = format!("{NS_PREFIX}{}-probe", std::process::id());
            match run(Command::new(&ip).args(["netns", "add", &probe])) {
                Ok(_) => {
                    let _ = run(Command::new(&ip).args(["netns", "del", &probe]));
                    None
                }
                Err(e) => Some(format!(
                    "cannot create a network namespace (needs root or CAP_SYS_ADMIN): {e}"
                )),
            }
        })
        .clone()
}

/// A test bed for `test`, running `rollcall` (the binary under test), or
/// `None` (with the reason printed) where network namespaces cannot be made
/// and `CI` is not `true`.
pub fn bed_or_skip(test: &str, rollcall: &Path) -> Option<TestBed> {
    if let Some(reason) = unavailable() {
        return skip(test, &reason);
    }
    Some(
        TestBed::new(test, rollcall)
            .unwrap_or_else(|e| panic!("{test}: building the test bed: {e}")),
    )
}

/// Runs a command to its end; its stderr becomes the error when it fails.
fn run(cmd: &mut Command) -> Result<Output, String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(format!(
            "{cmd:?}: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Deletes namespaces left by test processes that no longer run (killed
/// before their `Drop` could), and ends the processes still inside them.
/// Runs once per process.
fn sweep_dead_runs(ip: &Path) {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        for ns in list_namespaces(ip) {
            let Some(rest) = ns.strip_prefix(NS_PREFIX) else {
                continue;
            };
            let pid: String = rest.chars().take_while(char::is_ascii_digit).collect();
            if !pid.is_empty() && !Path::new("/proc").join(&pid).exists() {
                // Its agents and brokers outlived it: they are in its
                // namespaces, and keep them alive until they end.
                if let Ok(out) = run(Command::new(ip).args(["netns", "pids", &ns])) {
                    for orphan in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                        let _ = run(Command::new("kill").args(["-KILL", orphan]));
                    }
                }
                let _ = run(Command::new(ip).args(["netns", "del", &ns]));
            }
        }
    });
}

fn list_namespaces(ip: &Path) -> Vec<String> {
    run(Command::new(ip).args(["netns", "list"]))
        .map(|out| {
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// A bridge: one L2 segment, with a /24 of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BridgeId(usize);

/// A node: a host, the hub, a broker, a router; one namespace each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeId(usize);

/// A process started in a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcId(usize);

impl ProcId {
    /// The first process started in a bed.
    pub fn first() -> ProcId {
        ProcId(0)
    }
}

#[derive(Debug)]
struct Bridge {
    ns: String,
    /// Third octet of its subnet, 198.18.{net}.0/24.
    net: u8,
    next_host: u8,
    gateway: Option<Ipv4Addr>,
    /// Which nftables tables are installed in its namespace.
    loss: bool,
    counting: bool,
}

#[derive(Debug, Clone)]
struct Iface {
    bridge: BridgeId,
    /// The port's name in the bridge's namespace.
    port: String,
    addr: Ipv4Addr,
}

#[derive(Debug)]
struct Node {
    name: String,
    ns: String,
    ifaces: Vec<Iface>,
}

#[derive(Debug)]
struct Proc {
    node: NodeId,
    label: String,
    program: PathBuf,
    args: Vec<OsString>,
    log: PathBuf,
    child: Option<Child>,
}

/// Packets and bytes (IP headers and up; add 14 a packet for Ethernet).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Count {
    /// Packets.
    pub packets: u64,
    /// Bytes.
    pub bytes: u64,
}

impl std::ops::Sub for Count {
    type Output = Count;
    fn sub(self, o: Count) -> Count {
        Count {
            packets: self.packets.saturating_sub(o.packets),
            bytes: self.bytes.saturating_sub(o.bytes),
        }
    }
}

/// What crossed a bridge, from [`TestBed::traffic`]: `*_sent` counts each
/// frame once as it enters the bridge from a port, `*_delivered` each copy
/// the bridge forwards out of a port (a broadcast is sent once and
/// delivered to every other port).
#[derive(Debug, Clone, Default)]
pub struct Traffic {
    /// By counter name: `udp_sent`, `tcp_sent`, `other_sent`,
    /// `udp_delivered`, `tcp_delivered`, `lost`, and per-source counters.
    pub counters: BTreeMap<String, Count>,
}

impl Traffic {
    /// One counter (zero when absent).
    pub fn get(&self, name: &str) -> Count {
        self.counters.get(name).copied().unwrap_or_default()
    }

    /// Every counter's growth since `before`.
    pub fn since(&self, before: &Traffic) -> Traffic {
        Traffic {
            counters: self
                .counters
                .iter()
                .map(|(k, v)| (k.clone(), *v - before.get(k)))
                .collect(),
        }
    }
}

/// Reads a bridge's traffic counters ([`TestBed::count_traffic`]).
#[derive(Debug, Clone)]
pub struct TrafficReader {
    ip: PathBuf,
    ns: String,
}

impl TrafficReader {
    /// The counters, now.
    pub fn read(&self) -> Result<Traffic, String> {
        let nft = find_program("nft").ok_or("`nft` (nftables) is not installed")?;
        let out = run(Command::new(&self.ip)
            .args(["netns", "exec", &self.ns])
            .arg(nft)
            .args(["-j", "list", "counters"]))?;
        let json: serde_json::Value =
            serde_json::from_slice(&out.stdout).map_err(|e| format!("nft -j: {e}"))?;
        let mut traffic = Traffic::default();
        for item in json["nftables"].as_array().into_iter().flatten() {
            let c = &item["counter"];
            if let Some(name) = c["name"].as_str() {
                traffic.counters.insert(
                    name.to_owned(),
                    Count {
                        packets: c["packets"].as_u64().unwrap_or(0),
                        bytes: c["bytes"].as_u64().unwrap_or(0),
                    },
                );
            }
        }
        Ok(traffic)
    }
}

/// Hosts as network namespaces on bridges, with processes in them. Dropping
/// it kills every process and deletes every namespace, also when the test
/// panicked (the logs are then kept and their folder printed).
pub struct TestBed {
    test: String,
    prefix: String,
    ip: PathBuf,
    rollcall: PathBuf,
    dir: Option<tempfile::TempDir>,
    bridges: Vec<Bridge>,
    nodes: Vec<Node>,
    procs: Vec<Proc>,
}

impl TestBed {
    /// An empty bed; `test` names its logs, `rollcall` is the binary under
    /// test (a test's `env!("CARGO_BIN_EXE_rollcall")`).
    pub fn new(test: &str, rollcall: &Path) -> Result<Self, String> {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let ip = find_program("ip").ok_or("`ip` (iproute2) is not installed")?;
        sweep_dead_runs(&ip);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = tempfile::Builder::new()
            .prefix(&format!("rollcall-netns-{test}-"))
            .tempdir()
            .map_err(|e| format!("temporary folder: {e}"))?;
        Ok(TestBed {
            test: test.to_owned(),
            prefix: format!("{NS_PREFIX}{}-{n}", std::process::id()),
            ip,
            rollcall: rollcall.to_owned(),
            dir: Some(dir),
            bridges: Vec::new(),
            nodes: Vec::new(),
            procs: Vec::new(),
        })
    }

    /// The `rollcall` binary under test.
    pub fn rollcall(&self) -> &Path {
        &self.rollcall
    }

    /// The bed's folder: configuration files, state folders, logs.
    pub fn dir(&self) -> &Path {
        self.dir
            .as_ref()
            .map_or(Path::new("/nonexistent"), |d| d.path())
    }

    fn ip(&self, args: &[&str]) -> Result<(), String> {
        run(Command::new(&self.ip).args(args)).map(|_| ())
    }

    fn add_namespace(&mut self, suffix: &str) -> Result<String, String> {
        let ns = format!("{}-{suffix}", self.prefix);
        self.ip(&["netns", "add", &ns])?;
        self.ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// A new bridge in a namespace of its own, with the subnet
    /// 198.18.{n}.0/24 for the n-th bridge.
    pub fn add_bridge(&mut self) -> Result<BridgeId, String> {
        let id = self.bridges.len();
        let net = u8::try_from(id).map_err(|_| "at most 256 bridges")?;
        let ns = self.add_namespace(&format!("br{id}"))?;
        self.ip(&["-n", &ns, "link", "add", "br0", "type", "bridge"])?;
        // No spanning tree and no forwarding delay: a port forwards as soon
        // as it is up, so a link that comes back carries traffic at once.
        self.ip(&[
            "-n",
            &ns,
            "link",
            "set",
            "br0",
            "type",
            "bridge",
            "stp_state",
            "0",
            "forward_delay",
            "0",
        ])?;
        self.ip(&["-n", &ns, "link", "set", "br0", "up"])?;
        self.bridges.push(Bridge {
            ns,
            net,
            next_host: 1,
            gateway: None,
            loss: false,
            counting: false,
        });
        Ok(BridgeId(id))
    }

    /// The bridge's subnet's broadcast address, where roll-calls go.
    pub fn broadcast(&self, bridge: BridgeId) -> Ipv4Addr {
        Ipv4Addr::new(198, 18, self.bridges[bridge.0].net, 255)
    }

    /// A node called `name` (its namespace is named after it) with one
    /// interface, `eth0`, on `bridge`; its address is the bridge's next free
    /// one.
    pub fn add_host(&mut self, name: &str, bridge: BridgeId) -> Result<NodeId, String> {
        let ns = self.add_namespace(&format!("h-{name}"))?;
        let id = NodeId(self.nodes.len());
        self.nodes.push(Node {
            name: name.to_owned(),
            ns,
            ifaces: Vec::new(),
        });
        let b = &mut self.bridges[bridge.0];
        if b.next_host >= 254 {
            return Err(format!("bridge {} is full", bridge.0));
        }
        let addr = Ipv4Addr::new(198, 18, b.net, b.next_host);
        b.next_host += 1;
        self.attach(id, bridge, addr)?;
        if let Some(gw) = self.bridges[bridge.0].gateway {
            let ns = self.nodes[id.0].ns.clone();
            self.ip(&["-n", &ns, "route", "add", "default", "via", &gw.to_string()])?;
        }
        Ok(id)
    }

    /// Joins `node` to `bridge` with `addr` on a new veth pair: `eth{k}` in
    /// the node, `n{node}i{k}` in the bridge's namespace.
    fn attach(&mut self, node: NodeId, bridge: BridgeId, addr: Ipv4Addr) -> Result<(), String> {
        let k = self.nodes[node.0].ifaces.len();
        let ifname = format!("eth{k}");
        let port = format!("n{}i{k}", node.0);
        let ns = self.nodes[node.0].ns.clone();
        let br_ns = self.bridges[bridge.0].ns.clone();
        self.ip(&[
            "link", "add", &ifname, "netns", &ns, "type", "veth", "peer", "name", &port, "netns",
            &br_ns,
        ])?;
        self.ip(&["-n", &br_ns, "link", "set", &port, "master", "br0", "up"])?;
        self.ip(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{addr}/24"),
            "brd",
            "+",
            "dev",
            &ifname,
        ])?;
        self.ip(&["-n", &ns, "link", "set", &ifname, "up"])?;
        self.nodes[node.0].ifaces.push(Iface { bridge, port, addr });
        Ok(())
    }

    /// A router between `bridges`: a node with an interface on each, at .254,
    /// forwarding between them. Hosts on those bridges, present and future,
    /// route through it.
    pub fn add_router(&mut self, name: &str, bridges: &[BridgeId]) -> Result<NodeId, String> {
        let ns = self.add_namespace(&format!("r-{name}"))?;
        let id = NodeId(self.nodes.len());
        self.nodes.push(Node {
            name: name.to_owned(),
            ns: ns.clone(),
            ifaces: Vec::new(),
        });
        for &b in bridges {
            let gw = Ipv4Addr::new(198, 18, self.bridges[b.0].net, 254);
            self.attach(id, b, gw)?;
            self.bridges[b.0].gateway = Some(gw);
            let hosts: Vec<String> = self
                .nodes
                .iter()
                .filter(|n| n.ns != ns && n.ifaces.iter().any(|i| i.bridge == b))
                .map(|n| n.ns.clone())
                .collect();
            for host in hosts {
                self.ip(&[
                    "-n",
                    &host,
                    "route",
                    "replace",
                    "default",
                    "via",
                    &gw.to_string(),
                ])?;
            }
        }
        run(Command::new(&self.ip).args([
            "netns",
            "exec",
            &ns,
            "sh",
            "-c",
            "echo 1 > /proc/sys/net/ipv4/ip_forward",
        ]))?;
        Ok(id)
    }

    /// The node called `name`.
    pub fn node(&self, name: &str) -> Option<NodeId> {
        self.nodes.iter().position(|n| n.name == name).map(NodeId)
    }

    /// The node's name.
    pub fn name(&self, node: NodeId) -> &str {
        &self.nodes[node.0].name
    }

    /// The node's namespace.
    pub fn ns(&self, node: NodeId) -> &str {
        &self.nodes[node.0].ns
    }

    /// The node's first address.
    pub fn addr(&self, node: NodeId) -> Ipv4Addr {
        self.nodes[node.0].ifaces[0].addr
    }

    /// The node's first link goes down at the bridge, as if its cable were
    /// pulled: the node's own configuration is untouched.
    pub fn link_down(&self, node: NodeId) -> Result<(), String> {
        let i = &self.nodes[node.0].ifaces[0];
        self.ip(&[
            "-n",
            &self.bridges[i.bridge.0].ns,
            "link",
            "set",
            &i.port,
            "down",
        ])
    }

    /// The node's first link comes back.
    pub fn link_up(&self, node: NodeId) -> Result<(), String> {
        let i = &self.nodes[node.0].ifaces[0];
        self.ip(&[
            "-n",
            &self.bridges[i.bridge.0].ns,
            "link",
            "set",
            &i.port,
            "up",
        ])
    }

    fn nft(&self, bridge: BridgeId, script: &str) -> Result<(), String> {
        let nft = find_program("nft").ok_or("`nft` (nftables) is not installed")?;
        let mut child = Command::new(&self.ip)
            .args(["netns", "exec", &self.bridges[bridge.0].ns])
            .arg(nft)
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("nft: {e}"))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(script.as_bytes())
                .map_err(|e| format!("nft: {e}"))?;
        }
        let out = child.wait_with_output().map_err(|e| format!("nft: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "nft: {}\n{script}",
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    /// Drops `percent` % of the frames the bridge forwards, at random, in
    /// both directions and for every protocol (an nftables rule in the
    /// bridge's namespace; `0` removes it).
    pub fn set_loss(&mut self, bridge: BridgeId, percent: u32) -> Result<(), String> {
        let b = &self.bridges[bridge.0];
        let mut script = String::new();
        if b.loss {
            script.push_str("delete table bridge rollcall_loss\n");
        }
        if percent > 0 {
            script.push_str(&format!(
                "table bridge rollcall_loss {{\n\
                 counter lost {{}}\n\
                 chain loss {{ type filter hook forward priority 0; policy accept;\n\
                 numgen random mod 100 < {percent} counter name lost drop; }}\n}}\n"
            ));
        }
        if !script.is_empty() {
            self.nft(bridge, &script)?;
        }
        self.bridges[bridge.0].loss = percent > 0;
        Ok(())
    }

    /// Starts counting what crosses `bridge` (see [`Traffic`]); `watched`
    /// nodes get counters of their own for the UDP they send
    /// (`udp_from_{name}`), the TCP connections opened to them
    /// (`syn_to_{name}`), and the TCP they send and receive
    /// (`tcp_from_{name}`, `tcp_to_{name}`), all by the node's first
    /// address; and, by the node's port on this bridge, every UDP and TCP
    /// frame that enters the bridge from it (`udp_port_{name}`,
    /// `tcp_port_{name}`), whatever its source address: what a router
    /// forwards onto this subnet keeps its sender's address.
    pub fn count_traffic(&mut self, bridge: BridgeId, watched: &[NodeId]) -> Result<(), String> {
        let mut per_node = String::new();
        let mut decls = String::new();
        for &n in watched {
            let name = &self.nodes[n.0].name;
            let addr = self.addr(n);
            decls.push_str(&format!(
                "counter udp_from_{name} {{}}\ncounter syn_to_{name} {{}}\n\
                 counter tcp_from_{name} {{}}\ncounter tcp_to_{name} {{}}\n"
            ));
            per_node.push_str(&format!(
                "ip saddr {addr} meta l4proto udp counter name udp_from_{name}\n\
                 ip daddr {addr} tcp flags & (syn | ack) == syn counter name syn_to_{name}\n\
                 ip saddr {addr} meta l4proto tcp counter name tcp_from_{name}\n\
                 ip daddr {addr} meta l4proto tcp counter name tcp_to_{name}\n"
            ));
            for i in self.nodes[n.0].ifaces.iter().filter(|i| i.bridge == bridge) {
                let port = &i.port;
                decls.push_str(&format!(
                    "counter udp_port_{name} {{}}\ncounter tcp_port_{name} {{}}\n"
                ));
                per_node.push_str(&format!(
                    "iifname \"{port}\" meta l4proto udp counter name udp_port_{name}\n\
                     iifname \"{port}\" meta l4proto tcp counter name tcp_port_{name}\n"
                ));
            }
        }
        let script = format!(
            "table bridge rollcall_count {{\n\
             counter udp_sent {{}}\ncounter tcp_sent {{}}\ncounter other_sent {{}}\n\
             counter udp_delivered {{}}\ncounter tcp_delivered {{}}\n{decls}\
             chain pre {{ type filter hook prerouting priority -10; policy accept;\n\
             {per_node}\
             meta l4proto udp counter name udp_sent accept\n\
             meta l4proto tcp counter name tcp_sent accept\n\
             counter name other_sent\n}}\n\
             chain out {{ type filter hook forward priority 10; policy accept;\n\
             meta l4proto udp counter name udp_delivered\n\
             meta l4proto tcp counter name tcp_delivered\n}}\n}}\n"
        );
        self.nft(bridge, &script)?;
        self.bridges[bridge.0].counting = true;
        Ok(())
    }

    /// The counters [`TestBed::count_traffic`] installed, now.
    pub fn traffic(&self, bridge: BridgeId) -> Result<Traffic, String> {
        self.traffic_reader(bridge).read()
    }

    /// Reads `bridge`'s counters from any thread.
    pub fn traffic_reader(&self, bridge: BridgeId) -> TrafficReader {
        TrafficReader {
            ip: self.ip.clone(),
            ns: self.bridges[bridge.0].ns.clone(),
        }
    }

    /// Writes a file into the bed's folder and returns its path.
    pub fn write_file(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.dir().join(name);
        std::fs::write(&path, contents).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        path
    }

    /// Starts `program args` inside `node`'s namespace (through
    /// `ip netns exec`, which becomes the program), its output appended to
    /// `{label}.log` in the bed's folder.
    pub fn spawn(
        &mut self,
        node: NodeId,
        label: &str,
        program: &Path,
        args: &[impl AsRef<OsStr>],
    ) -> ProcId {
        let id = ProcId(self.procs.len());
        self.procs.push(Proc {
            node,
            label: label.to_owned(),
            program: program.to_owned(),
            args: args.iter().map(|a| a.as_ref().to_owned()).collect(),
            log: self.dir().join(format!("{label}.log")),
            child: None,
        });
        self.start(id);
        id
    }

    /// Starts a process again with the same command (after [`TestBed::kill`]).
    pub fn start(&mut self, id: ProcId) {
        let ns = self.nodes[self.procs[id.0].node.0].ns.clone();
        let p = &mut self.procs[id.0];
        assert!(p.child.is_none(), "{} is running", p.label);
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&p.log)
            .unwrap_or_else(|e| panic!("{}: {e}", p.log.display()));
        let err = log.try_clone().unwrap();
        let child = Command::new(&self.ip)
            .args(["netns", "exec", &ns])
            .arg(&p.program)
            .args(&p.args)
            .env("RUST_LOG", "info,rumqttd=off")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", p.label));
        p.child = Some(child);
    }

    /// Kills a process with SIGKILL (`kill -9`) and reaps it.
    pub fn kill(&mut self, id: ProcId) {
        if let Some(mut child) = self.procs[id.0].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Whether a process is still running (not exited, not killed).
    pub fn running(&mut self, id: ProcId) -> bool {
        self.procs[id.0]
            .child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// The process's pid, while it runs.
    pub fn pid(&self, id: ProcId) -> Option<u32> {
        self.procs[id.0].child.as_ref().map(Child::id)
    }

    /// The process's log so far.
    pub fn log(&self, id: ProcId) -> String {
        let mut text = String::new();
        if let Ok(mut f) = File::open(&self.procs[id.0].log) {
            let _ = f.read_to_string(&mut text);
        }
        text
    }

    /// Runs a program inside `node` to its end and returns its output. One
    /// still running after [`EXEC_TIMEOUT`] is killed (its status then says
    /// so, and its stderr ends with a line that does), so a hung `rollcall
    /// scan` fails its test rather than hanging it.
    pub fn exec(&self, node: NodeId, program: &Path, args: &[impl AsRef<OsStr>]) -> Output {
        let mut child = Command::new(&self.ip)
            .args(["netns", "exec", self.ns(node)])
            .arg(program)
            .args(args)
            .env("RUST_LOG", "warn,rumqttd=off")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{program:?} in {}: {e}", self.name(node)));
        fn drain(pipe: Option<impl Read + Send + 'static>) -> JoinHandle<Vec<u8>> {
            std::thread::spawn(move || {
                let mut bytes = Vec::new();
                if let Some(mut pipe) = pipe {
                    let _ = pipe.read_to_end(&mut bytes);
                }
                bytes
            })
        }
        let stdout = drain(child.stdout.take());
        let stderr = drain(child.stderr.take());
        let deadline = Instant::now() + EXEC_TIMEOUT;
        let mut killed = false;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                _ => {
                    killed = true;
                    let _ = child.kill();
                    match child.wait() {
                        Ok(status) => break status,
                        Err(e) => panic!("{program:?} in {}: {e}", self.name(node)),
                    }
                }
            }
        };
        let mut stderr = stderr.join().unwrap_or_default();
        if killed {
            stderr.extend_from_slice(
                format!("\n(killed: still running after {EXEC_TIMEOUT:?})\n").as_bytes(),
            );
        }
        Output {
            status,
            stdout: stdout.join().unwrap_or_default(),
            stderr,
        }
    }

    /// Runs `f` on a thread that has entered `node`'s network namespace, so
    /// every socket it opens is the node's; returns what `f` returns.
    pub fn in_node<T: Send + 'static>(
        &self,
        node: NodeId,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> T {
        let ns = self.ns(node).to_owned();
        std::thread::spawn(move || {
            enter(&ns);
            f()
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    }

    /// Starts `f` on a thread inside `node`'s network namespace, as
    /// [`TestBed::in_node`] does, without waiting for it.
    pub fn spawn_in_node<T: Send + 'static>(
        &self,
        node: NodeId,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> JoinHandle<T> {
        let ns = self.ns(node).to_owned();
        std::thread::spawn(move || {
            enter(&ns);
            f()
        })
    }

    /// An MQTT client inside `node` on `broker`, subscribed to `filters`,
    /// recording what arrives.
    pub fn mqtt(&self, node: NodeId, broker: &str, filters: &[&str]) -> MqttProbe {
        MqttProbe::start(self.ns(node), broker, filters, Qos::AtLeastOnce)
    }

    /// [`TestBed::mqtt`] subscribing at QoS 0, as rollcall is configured
    /// on a NATS cluster (`subscribe_qos = 0`, docs/deploying.md).
    pub fn mqtt_qos0(&self, node: NodeId, broker: &str, filters: &[&str]) -> MqttProbe {
        MqttProbe::start(self.ns(node), broker, filters, Qos::AtMostOnce)
    }

    fn teardown(&mut self) {
        for id in 0..self.procs.len() {
            self.kill(ProcId(id));
        }
        for node in self.nodes.iter().rev() {
            let _ = self.ip(&["netns", "del", &node.ns]);
        }
        for b in self.bridges.iter().rev() {
            let _ = self.ip(&["netns", "del", &b.ns]);
        }
        // Whatever a half-built bed left (a namespace added, then an error).
        let mine = format!("{}-", self.prefix);
        for ns in list_namespaces(&self.ip) {
            if ns.starts_with(&mine) {
                let _ = self.ip(&["netns", "del", &ns]);
            }
        }
    }
}

impl Drop for TestBed {
    fn drop(&mut self) {
        self.teardown();
        if std::thread::panicking()
            && let Some(dir) = self.dir.take()
        {
            let kept = dir.keep();
            eprintln!(
                "{}: the test bed's logs and configuration are kept in {}",
                self.test,
                kept.display()
            );
        }
    }
}

/// Moves the calling thread into the named network namespace.
fn enter(ns: &str) {
    let file = File::open(Path::new("/run/netns").join(ns))
        .unwrap_or_else(|e| panic!("namespace {ns}: {e}"));
    rustix::thread::move_into_link_name_space(
        std::os::fd::AsFd::as_fd(&file),
        Some(rustix::thread::LinkNameSpaceType::Network),
    )
    .unwrap_or_else(|e| panic!("entering namespace {ns}: {e}"));
}

/// What an [`MqttProbe`] has received.
#[derive(Debug, Default)]
pub struct Seen {
    /// The latest payload on each topic.
    pub last: BTreeMap<String, Vec<u8>>,
    /// Every message, in order, with when it arrived.
    pub log: Vec<(String, Vec<u8>, Instant)>,
}

impl Seen {
    /// The latest payload on `topic`, as text.
    pub fn text(&self, topic: &str) -> Option<String> {
        self.last
            .get(topic)
            .map(|p| String::from_utf8_lossy(p).into_owned())
    }
}

type Outgoing = (String, Vec<u8>, bool);

/// An MQTT client (rollcall's own `Session`) on a thread inside a node's
/// namespace: it records everything on its filters, and publishes on
/// request. Dropping it ends the session and joins the thread.
pub struct MqttProbe {
    seen: Arc<(Mutex<Seen>, Condvar)>,
    out: mpsc::UnboundedSender<Outgoing>,
    shutdown: CancellationToken,
    thread: Option<JoinHandle<()>>,
}

impl MqttProbe {
    fn start(ns: &str, broker: &str, filters: &[&str], max_qos: Qos) -> MqttProbe {
        static CLIENTS: AtomicUsize = AtomicUsize::new(0);
        // One URL, or the nodes of a cluster as a comma list.
        let brokers: BrokerList = broker.parse().expect("broker URL");
        let filters: Vec<String> = filters.iter().map(|f| (*f).to_owned()).collect();
        let client_id = format!(
            "netns-probe-{}-{}",
            std::process::id(),
            CLIENTS.fetch_add(1, Ordering::Relaxed)
        );
        let seen = Arc::new((Mutex::new(Seen::default()), Condvar::new()));
        let (out, mut outgoing) = mpsc::unbounded_channel::<Outgoing>();
        let shutdown = CancellationToken::new();
        let ns = ns.to_owned();
        let thread = {
            let seen = seen.clone();
            let shutdown = shutdown.clone();
            std::thread::spawn(move || {
                enter(&ns);
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                rt.block_on(async move {
                    let tracker = TaskTracker::new();
                    let mut config = SessionConfig::for_brokers(&brokers, client_id);
                    config.keep_alive = Duration::from_secs(5);
                    config.max_subscribe_qos = max_qos;
                    let mut session =
                        Session::start(config, shutdown.clone(), &tracker).expect("probe session");
                    for f in &filters {
                        session.handle.subscribe(f).await.expect("subscribe");
                    }
                    loop {
                        tokio::select! {
                            () = shutdown.cancelled() => break,
                            Some((topic, payload, retain)) = outgoing.recv() => {
                                let _ = session
                                    .handle
                                    .publish(&topic, payload, Qos::AtLeastOnce, retain)
                                    .await;
                            }
                            msg = session.incoming.recv() => {
                                let Some(msg) = msg else { break };
                                let (lock, changed) = &*seen;
                                let mut s = lock.lock().unwrap_or_else(|e| e.into_inner());
                                s.last.insert(msg.topic.clone(), msg.payload.to_vec());
                                s.log.push((msg.topic, msg.payload.to_vec(), Instant::now()));
                                changed.notify_all();
                            }
                        }
                    }
                    shutdown.cancel();
                    tracker.close();
                    tracker.wait().await;
                });
            })
        };
        MqttProbe {
            seen,
            out,
            shutdown,
            thread: Some(thread),
        }
    }

    /// Publishes at QoS 1 (queued while the session is not connected).
    pub fn publish(&self, topic: &str, payload: impl Into<Vec<u8>>, retain: bool) {
        let _ = self.out.send((topic.to_owned(), payload.into(), retain));
    }

    /// Waits until `f` finds what it looks for in what arrived, and returns
    /// it; panics naming `what` after `timeout`.
    pub fn wait<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut f: impl FnMut(&Seen) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + timeout;
        let (lock, changed) = &*self.seen;
        let mut s = lock.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(t) = f(&s) {
                return t;
            }
            let now = Instant::now();
            assert!(
                now < deadline,
                "timed out after {timeout:?} waiting for {what}; last payloads: {:?}",
                s.last
                    .iter()
                    .map(|(t, p)| (t, String::from_utf8_lossy(p)))
                    .take(40)
                    .collect::<Vec<_>>()
            );
            s = changed
                .wait_timeout(s, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Forgets what has arrived so far.
    pub fn clear(&self) {
        let (lock, _) = &*self.seen;
        *lock.lock().unwrap_or_else(|e| e.into_inner()) = Seen::default();
    }

    /// Looks at what has arrived so far.
    pub fn with<T>(&self, f: impl FnOnce(&Seen) -> T) -> T {
        let (lock, _) = &*self.seen;
        f(&lock.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl Drop for MqttProbe {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
