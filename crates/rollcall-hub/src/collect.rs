//! Collecting one roll-call's answers: only answers carrying its id count,
//! each (host, function) once, each stamped with when it arrived. Pure: the
//! arrival time is passed in.

use std::collections::BTreeMap;
use std::time::Duration;

use rollcall_proto::{Answer, Health, Interfaces};
use serde::Serialize;

/// What became of one offered answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    /// A new answer, counted.
    Counted,
    /// This (host, function) has answered already.
    Duplicate,
    /// An answer to another roll-call.
    OtherId,
    /// Not an answer at all.
    Malformed,
}

/// One service's answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServiceSeen {
    /// Its function.
    pub function: String,
    /// Flat field: topics it consumes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inputs: Option<String>,
    /// Flat field: topics it publishes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outputs: Option<String>,
    /// Flat field: its configuration topic.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub control: Option<String>,
    /// Milliseconds from the roll-call's sending to this answer.
    pub t_ms: u64,
    /// Its full interfaces, where it sent them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interfaces: Option<Interfaces>,
    /// Its health, where it sent one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health: Option<Health>,
}

/// One host's answers.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HostSeen {
    /// Its name.
    pub hostname: String,
    /// Its address, as its agent reported it.
    pub ipaddr: Option<String>,
    /// Its external address, where known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub extaddr: Option<String>,
    /// Milliseconds from the roll-call's sending to the agent's host answer
    /// (`None` when only services answered).
    pub t_ms: Option<u64>,
    /// The services the agent listed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub apps: Option<Vec<String>>,
    /// The agent's version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The services that answered, by function.
    pub services: Vec<ServiceSeen>,
}

/// A service that answered briefly, with the digest of its retained
/// `$description` and no interfaces: the scanner looks for them
/// (docs/protocol.md section 3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    /// The answering host.
    pub host: String,
    /// The service.
    pub function: String,
    /// The digest its answer carried.
    pub digest: String,
}

/// What became of the brief answers' descriptions in one roll-call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct DigestCounts {
    /// The scanner held the description with that digest already.
    pub known: u64,
    /// Read from the service's retained `$description`, the digest matching.
    pub read: u64,
    /// Read, but not the description the digest names (or not one of that
    /// service): the service is left without interfaces.
    pub mismatched: u64,
    /// Nothing usable retained within the wait, or not read because the
    /// roll-call has read as many as it may: the service is left without
    /// interfaces. (A scanner that leaves reading to its caller,
    /// [`Descriptions::Watched`](crate::Descriptions::Watched), counts
    /// nothing here.)
    pub unread: u64,
}

impl DigestCounts {
    /// Every brief answer got its interfaces (or there was none).
    pub fn all_found(&self) -> bool {
        self.mismatched == 0 && self.unread == 0
    }
}

/// The outcome of one roll-call.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScanReport {
    /// The roll-call's id.
    pub id: u64,
    /// How long the scan waited, in milliseconds.
    pub elapsed_ms: u64,
    /// The `window_ms` the roll-call asked for.
    pub window_ms: u64,
    /// Answers ignored because they carried another id.
    pub other_ids: u64,
    /// Answers seen twice.
    pub duplicates: u64,
    /// Messages the scanner's MQTT session dropped during the scan because
    /// its buffer was full: answers lost on our side.
    pub lost_in_session: u64,
    /// Brief answers whose description was not found or did not match
    /// (left out of the JSON when every one was found, as it was before
    /// answers could be brief).
    #[serde(skip_serializing_if = "DigestCounts::all_found")]
    pub digests: DigestCounts,
    /// Every host that answered, by name.
    pub hosts: Vec<HostSeen>,
}

impl ScanReport {
    /// Every service answer in the report.
    pub fn service_count(&self) -> usize {
        self.hosts.iter().map(|h| h.services.len()).sum()
    }

    /// When the last answer arrived, in milliseconds from the sending.
    pub fn last_answer_ms(&self) -> Option<u64> {
        self.hosts
            .iter()
            .flat_map(|h| h.t_ms.into_iter().chain(h.services.iter().map(|s| s.t_ms)))
            .max()
    }
}

/// Gathers the answers of one roll-call.
#[derive(Debug, Clone)]
pub struct Collector {
    id: u64,
    window_ms: u64,
    hosts: BTreeMap<String, HostSeen>,
    other_ids: u64,
    duplicates: u64,
    wanted: Vec<Wanted>,
}

impl Collector {
    /// Collects answers to roll-call `id`.
    pub fn new(id: u64, window_ms: u64) -> Self {
        Collector {
            id,
            window_ms,
            hosts: BTreeMap::new(),
            other_ids: 0,
            duplicates: 0,
            wanted: Vec::new(),
        }
    }

    /// Offers one MQTT payload that arrived `at` after the roll-call was sent.
    pub fn offer(&mut self, payload: &[u8], at: Duration) -> Offer {
        let Ok(answer) = Answer::parse(payload) else {
            return Offer::Malformed;
        };
        if answer.id != self.id {
            self.other_ids += 1;
            return Offer::OtherId;
        }
        let t_ms = at.as_millis() as u64;
        let host = self
            .hosts
            .entry(answer.hostname.clone())
            .or_insert_with(|| HostSeen {
                hostname: answer.hostname.clone(),
                ipaddr: None,
                extaddr: None,
                t_ms: None,
                apps: None,
                version: None,
                services: Vec::new(),
            });
        host.ipaddr = host.ipaddr.take().or(answer.ipaddr.clone());
        host.extaddr = host.extaddr.take().or(answer.extaddr.clone());
        if answer.is_host() {
            if host.t_ms.is_some() {
                self.duplicates += 1;
                return Offer::Duplicate;
            }
            host.t_ms = Some(t_ms);
            host.apps = answer.apps;
            host.version = answer.version;
            return Offer::Counted;
        }
        if host.services.iter().any(|s| s.function == answer.function) {
            self.duplicates += 1;
            return Offer::Duplicate;
        }
        if let (None, Some(digest)) = (&answer.interfaces, &answer.digest) {
            self.wanted.push(Wanted {
                host: answer.hostname.clone(),
                function: answer.function.clone(),
                digest: digest.clone(),
            });
        }
        let at = host
            .services
            .partition_point(|s| s.function < answer.function);
        host.services.insert(
            at,
            ServiceSeen {
                function: answer.function,
                inputs: answer.inputs,
                outputs: answer.outputs,
                control: answer.control,
                t_ms,
                interfaces: answer.interfaces,
                health: answer.health,
            },
        );
        Offer::Counted
    }

    /// The brief answers counted since the last call, whose interfaces are
    /// still to be found.
    pub fn take_wanted(&mut self) -> Vec<Wanted> {
        std::mem::take(&mut self.wanted)
    }

    /// Gives `function` of `host` the interfaces its brief answer's digest
    /// names; `false` when no such answer was counted, or it has some.
    pub fn describe(&mut self, host: &str, function: &str, interfaces: Interfaces) -> bool {
        let Some(service) = self
            .hosts
            .get_mut(host)
            .and_then(|h| h.services.iter_mut().find(|s| s.function == function))
        else {
            return false;
        };
        if service.interfaces.is_some() {
            return false;
        }
        service.interfaces = Some(interfaces);
        true
    }

    /// Hosts that sent their host answer.
    pub fn hosts_answered(&self) -> usize {
        self.hosts.values().filter(|h| h.t_ms.is_some()).count()
    }

    /// Service answers so far.
    pub fn services_answered(&self) -> usize {
        self.hosts.values().map(|h| h.services.len()).sum()
    }

    /// At least `hosts` hosts answered, and every service each listed has
    /// answered. Hosts seen only through service answers (a foreign service
    /// on a host without an agent) list nothing to wait for.
    pub fn complete(&self, hosts: usize) -> bool {
        self.hosts_answered() >= hosts
            && self.hosts.values().filter(|h| h.t_ms.is_some()).all(|h| {
                h.apps
                    .iter()
                    .flatten()
                    .all(|a| h.services.iter().any(|s| &s.function == a))
            })
    }

    /// The report, after waiting `elapsed`.
    pub fn finish(self, elapsed: Duration) -> ScanReport {
        ScanReport {
            id: self.id,
            elapsed_ms: elapsed.as_millis() as u64,
            window_ms: self.window_ms,
            other_ids: self.other_ids,
            duplicates: self.duplicates,
            lost_in_session: 0,
            digests: DigestCounts::default(),
            hosts: self.hosts.into_values().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(id: u64, name: &str, apps: &[&str]) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "id": id, "hostname": name, "function": "host", "ipaddr": "127.0.0.1", "apps": apps
        }))
        .unwrap()
    }

    fn service(id: u64, name: &str, function: &str) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "id": id, "hostname": name, "function": function, "inputs": "/x"
        }))
        .unwrap()
    }

    #[test]
    fn only_this_roll_calls_answers_count_each_once() {
        let mut c = Collector::new(7, 0);
        let ms = Duration::from_millis;
        assert_eq!(c.offer(&host(7, "a", &["system"]), ms(3)), Offer::Counted);
        assert_eq!(c.offer(&host(7, "a", &["system"]), ms(4)), Offer::Duplicate);
        assert_eq!(c.offer(&host(8, "b", &[]), ms(4)), Offer::OtherId);
        assert_eq!(c.offer(b"nonsense", ms(4)), Offer::Malformed);
        assert!(!c.complete(1));
        assert_eq!(c.offer(&service(7, "a", "system"), ms(5)), Offer::Counted);
        assert_eq!(c.offer(&service(7, "a", "system"), ms(6)), Offer::Duplicate);
        assert!(c.complete(1));
        assert!(!c.complete(2));
        let r = c.finish(ms(10));
        assert_eq!(r.hosts.len(), 1);
        assert_eq!(r.hosts[0].t_ms, Some(3));
        assert_eq!(r.hosts[0].services[0].t_ms, 5);
        assert_eq!((r.other_ids, r.duplicates), (1, 2));
        assert_eq!(r.last_answer_ms(), Some(5));
    }

    #[test]
    fn brief_answers_are_wanted_until_described() {
        let mut c = Collector::new(3, 0);
        let brief = |function: &str, digest: &str| {
            serde_json::to_vec(&serde_json::json!({
                "id": 3, "hostname": "a", "function": function, "digest": digest,
                "outputs": "/a/x/+"
            }))
            .unwrap()
        };
        let ms = Duration::from_millis;
        assert_eq!(
            c.offer(&brief("x", "0123456789abcdef"), ms(1)),
            Offer::Counted
        );
        // Not a digest: the answer counts, nothing is wanted.
        assert_eq!(c.offer(&brief("y", "not-a-digest"), ms(1)), Offer::Counted);
        // A full answer is wanted for nothing.
        assert_eq!(c.offer(&service(3, "a", "z"), ms(1)), Offer::Counted);
        let wanted = c.take_wanted();
        assert_eq!(
            wanted,
            [Wanted {
                host: "a".into(),
                function: "x".into(),
                digest: "0123456789abcdef".into()
            }]
        );
        assert!(c.take_wanted().is_empty());
        assert!(c.describe("a", "x", Interfaces::default()));
        assert!(!c.describe("a", "x", Interfaces::default()), "once");
        assert!(!c.describe("b", "x", Interfaces::default()));
        let r = c.finish(ms(2));
        let x = &r.hosts[0].services[0];
        assert_eq!((x.function.as_str(), x.interfaces.is_some()), ("x", true));
        assert_eq!(x.outputs.as_deref(), Some("/a/x/+"));
        assert!(r.hosts[0].services[1].interfaces.is_none());
    }

    #[test]
    fn a_service_answer_before_its_host_answer_is_kept() {
        let mut c = Collector::new(1, 0);
        c.offer(&service(1, "a", "gpio"), Duration::from_millis(1));
        assert!(!c.complete(1));
        c.offer(&host(1, "a", &["gpio"]), Duration::from_millis(2));
        assert!(c.complete(1));
        // A service answer from a host whose agent never answers does not
        // hold the others up.
        c.offer(&service(1, "lonely", "pump"), Duration::from_millis(3));
        assert!(c.complete(1));
        assert_eq!(c.finish(Duration::ZERO).service_count(), 2);
    }
}
