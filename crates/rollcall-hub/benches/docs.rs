//! How long the documentation generators take on a large cluster, and how
//! big their output is: the dashboard makes them on every request.
//!
//! The map: 1,000 hosts, each with a `system` service (five retained
//! outputs, five `get` functions, a control) and a `gpio` service (two
//! outputs it drives and one input it reads, naming pins, plus its
//! functions and controls), and one more host with a logger consuming
//! `/+/system/#`: 5,000 data-flow edges, one arrow per host in the
//! pictures. Each generator runs `RUNS` times on one snapshot; the table
//! gives the fastest and the median run.
//!
//! Run with `cargo bench -p rollcall-hub --bench docs`. Markdown on stdout.

use std::time::{Duration, Instant};

use rollcall_hub::docs::{AsyncApiOptions, Format};
use rollcall_hub::{ClusterMap, HostSeen, ScanReport, ServiceSeen};
use rollcall_proto::{Health, Interface, Interfaces, Topics, ValueType};

const HOSTS: usize = 1000;
const RUNS: usize = 7;

fn service(function: &str, interfaces: Interfaces) -> ServiceSeen {
    ServiceSeen {
        function: function.to_owned(),
        inputs: None,
        outputs: None,
        control: None,
        t_ms: 1,
        interfaces: Some(interfaces),
        health: Some(Health::Ok),
    }
}

fn system(host: &str) -> ServiceSeen {
    let names = ["uptime", "load", "mem_total", "mem_available", "cpu_temp"];
    service(
        "system",
        Interfaces {
            outputs: names
                .iter()
                .map(|n| {
                    Interface::new(*n, format!("/{host}/system/{n}"), ValueType::Float)
                        .unit("s")
                        .retained()
                        .doc("a reading")
                })
                .collect(),
            functions: names
                .iter()
                .map(|n| Interface::new(*n, format!("/{host}/system/get/{n}"), ValueType::Float))
                .collect(),
            controls: vec![Interface::new(
                "control",
                format!("/{host}/system/control"),
                ValueType::Json,
            )],
            ..Interfaces::default()
        },
    )
}

fn gpio(host: &str) -> ServiceSeen {
    let set = |name: &str, pin: u32| {
        Interface::new(name, format!("/{host}/gpio/set/{name}"), ValueType::Bool)
            .range(0.0, 1.0)
            .doc(&format!("drives pin {pin}"))
    };
    service(
        "gpio",
        Interfaces {
            inputs: vec![set("pump", 25), set("lamp", 23)],
            outputs: vec![
                Interface::new(
                    "button",
                    format!("/{host}/gpio/input/button"),
                    ValueType::Bool,
                )
                .retained()
                .doc("pin 22, reported on change"),
            ],
            functions: vec![Interface::new(
                "all",
                format!("/{host}/gpio/get"),
                ValueType::Json,
            )],
            controls: vec![Interface::new(
                "control",
                format!("/{host}/gpio/control"),
                ValueType::Json,
            )],
        },
    )
}

fn host(name: &str, services: Vec<ServiceSeen>) -> HostSeen {
    HostSeen {
        hostname: name.to_owned(),
        ipaddr: Some("198.18.0.1".into()),
        extaddr: None,
        t_ms: Some(1),
        apps: Some(services.iter().map(|s| s.function.clone()).collect()),
        version: Some("0.1.0".into()),
        services,
    }
}

fn main() {
    let mut hosts: Vec<HostSeen> = (0..HOSTS)
        .map(|i| {
            let name = format!("pi{i:04}");
            host(&name, vec![system(&name), gpio(&name)])
        })
        .collect();
    hosts.push(host(
        "archive",
        vec![service(
            "logger",
            Interfaces {
                inputs: vec![Interface::new("readings", "/+/system/#", ValueType::Json)],
                ..Interfaces::default()
            },
        )],
    ));
    let report = ScanReport {
        id: 1,
        elapsed_ms: 0,
        window_ms: 0,
        other_ids: 0,
        duplicates: 0,
        lost_in_session: 0,
        digests: Default::default(),
        hosts,
    };
    let mut map = ClusterMap::new();
    map.apply_scan(&report, 1_795_990_469_000);
    let started = Instant::now();
    let snapshot = map.snapshot(1_795_990_470_000);
    let snapshot_took = started.elapsed();
    let services: usize = snapshot.hosts.iter().map(|h| h.services.len()).sum();
    println!(
        "Map: {} hosts, {services} services, {} data-flow edges; `snapshot` took {:.1} ms.",
        snapshot.hosts.len(),
        snapshot.edges.len(),
        ms(snapshot_took)
    );
    println!();
    println!("| document | fastest | median | size |");
    println!("| --- | ---: | ---: | ---: |");
    let options = AsyncApiOptions {
        broker: None,
        topics: Some(Topics::default()),
    };
    for format in Format::ALL {
        let mut times = Vec::with_capacity(RUNS);
        let mut size = 0;
        for _ in 0..RUNS {
            let started = Instant::now();
            let text = format.render(&snapshot, &options);
            times.push(started.elapsed());
            size = text.len();
            std::hint::black_box(text);
        }
        times.sort();
        println!(
            "| {} | {:.1} ms | {:.1} ms | {:.1} MB |",
            format.file_name(),
            ms(times[0]),
            ms(times[RUNS / 2]),
            size as f64 / 1e6
        );
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
