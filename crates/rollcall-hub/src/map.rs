//! The cluster map across roll-calls: which hosts and services answered,
//! when each was last seen, and who was seen before and is missing now.
//! Pure: time is passed in.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::{HostSeen, ScanReport};

/// A change the map noticed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MapEvent {
    /// A host answered for the first time, or again after missing.
    HostAppeared(String),
    /// A host answered before and not this time.
    HostMissing(String),
    /// A service answered for the first time, or again after missing.
    ServiceAppeared(String, String),
    /// A service answered before and not this time, while its host answered.
    ServiceMissing(String, String),
}

/// One host in the map.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HostRecord {
    /// The latest answers.
    pub seen: HostSeen,
    /// When it last answered, unix ms.
    pub last_seen_ms: u64,
    /// Whether it answered the latest roll-call.
    pub present: bool,
    /// Services that answered before and not in the latest roll-call.
    pub missing_services: Vec<String>,
}

/// Every host ever seen.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ClusterMap {
    hosts: BTreeMap<String, HostRecord>,
}

impl ClusterMap {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every host, by name.
    pub fn hosts(&self) -> impl Iterator<Item = &HostRecord> {
        self.hosts.values()
    }

    /// Takes in a roll-call's report, received at `now_ms`; returns what changed.
    pub fn apply_scan(&mut self, report: &ScanReport, now_ms: u64) -> Vec<MapEvent> {
        let mut events = Vec::new();
        for seen in &report.hosts {
            let name = seen.hostname.clone();
            let previous = self.hosts.get(&name);
            if !previous.is_some_and(|p| p.present) {
                events.push(MapEvent::HostAppeared(name.clone()));
            }
            // Every service this host ever had, less those that answered now.
            let mut missing: Vec<String> = previous
                .map(|p| {
                    let known = p.seen.services.iter().map(|s| &s.function);
                    known
                        .chain(&p.missing_services)
                        .filter(|f| !seen.services.iter().any(|s| &s.function == *f))
                        .cloned()
                        .collect()
                })
                .unwrap_or_default();
            missing.sort();
            missing.dedup();
            for s in &seen.services {
                let was_there = previous.is_some_and(|p| {
                    p.present && p.seen.services.iter().any(|o| o.function == s.function)
                });
                if !was_there {
                    events.push(MapEvent::ServiceAppeared(name.clone(), s.function.clone()));
                }
            }
            for f in &missing {
                let newly = previous.is_some_and(|p| !p.missing_services.contains(f));
                if newly {
                    events.push(MapEvent::ServiceMissing(name.clone(), f.clone()));
                }
            }
            self.hosts.insert(
                name,
                HostRecord {
                    seen: seen.clone(),
                    last_seen_ms: now_ms,
                    present: true,
                    missing_services: missing,
                },
            );
        }
        for (name, record) in &mut self.hosts {
            let answered = report.hosts.iter().any(|h| &h.hostname == name);
            if !answered && record.present {
                record.present = false;
                events.push(MapEvent::HostMissing(name.clone()));
            }
        }
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ServiceSeen;

    fn report(hosts: &[(&str, &[&str])]) -> ScanReport {
        ScanReport {
            id: 1,
            elapsed_ms: 0,
            window_ms: 0,
            other_ids: 0,
            duplicates: 0,
            lost_in_session: 0,
            hosts: hosts
                .iter()
                .map(|(h, services)| HostSeen {
                    hostname: h.to_string(),
                    ipaddr: None,
                    extaddr: None,
                    t_ms: Some(1),
                    apps: None,
                    version: None,
                    services: services
                        .iter()
                        .map(|f| ServiceSeen {
                            function: f.to_string(),
                            inputs: None,
                            outputs: None,
                            control: None,
                            t_ms: 1,
                            interfaces: None,
                            health: None,
                        })
                        .collect(),
                })
                .collect(),
        }
    }

    #[test]
    fn hosts_and_services_appear_go_missing_and_come_back() {
        let mut map = ClusterMap::new();
        let e = map.apply_scan(&report(&[("a", &["gpio", "system"]), ("b", &[])]), 10);
        assert!(e.contains(&MapEvent::HostAppeared("a".into())));
        assert!(e.contains(&MapEvent::ServiceAppeared("a".into(), "gpio".into())));
        assert!(
            map.apply_scan(&report(&[("a", &["gpio", "system"]), ("b", &[])]), 20)
                .is_empty()
        );

        let e = map.apply_scan(&report(&[("a", &["system"])]), 30);
        assert_eq!(
            e,
            vec![
                MapEvent::ServiceMissing("a".into(), "gpio".into()),
                MapEvent::HostMissing("b".into())
            ]
        );
        let b = map.hosts().find(|h| h.seen.hostname == "b").unwrap();
        assert_eq!((b.present, b.last_seen_ms), (false, 20));
        // Still missing: said once only.
        assert!(
            map.apply_scan(&report(&[("a", &["system"])]), 40)
                .is_empty()
        );

        let e = map.apply_scan(&report(&[("a", &["gpio", "system"]), ("b", &[])]), 50);
        assert!(e.contains(&MapEvent::HostAppeared("b".into())));
        assert!(e.contains(&MapEvent::ServiceAppeared("a".into(), "gpio".into())));
        let a = map.hosts().find(|h| h.seen.hostname == "a").unwrap();
        assert!(a.missing_services.is_empty());
    }
}
