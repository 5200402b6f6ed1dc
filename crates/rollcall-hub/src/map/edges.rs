//! Data-flow edges: service A publishes where service B listens. Two topics
//! or filters are joined when some topic matches both, with MQTT wildcards on
//! either side, so `/h/+/temp` feeds `/h/kitchen/#`.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// One end of an edge: a topic (or filter) of one service.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Endpoint {
    /// The host the service runs on.
    pub host: String,
    /// The service's function name.
    pub service: String,
    /// The topic or filter as the service described it.
    pub topic: String,
}

/// Data flows `from` one service's output `to` another service's input.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Edge {
    /// The publishing side (an entry of its `outputs`).
    pub from: Endpoint,
    /// The consuming side (an entry of its `inputs`).
    pub to: Endpoint,
    /// When the hub last received a message on a topic both ends match
    /// (the hub's clock, unix ms); null when it has received none since it
    /// started following the publisher.
    #[serde(default)]
    pub last_crossed_ms: Option<u64>,
    /// No message crossed it for the map's `edge_stale_after_ms`: either
    /// its last one is older, or none came in that long of following the
    /// publisher. A broken link shows as a stale edge.
    #[serde(default)]
    pub stale: bool,
}

impl Edge {
    /// An edge nothing is known to have crossed yet.
    pub fn new(from: Endpoint, to: Endpoint) -> Self {
        Edge {
            from,
            to,
            last_crossed_ms: None,
            stale: false,
        }
    }
}

/// Whether some topic matches both MQTT filters `a` and `b` (plain topics are
/// filters without wildcards). `#` also matches its parent level (`a/#`
/// matches `a`), and a leading wildcard never matches a topic starting with
/// `$` (MQTT 3.1.1 §4.7.2).
pub fn filters_overlap(a: &str, b: &str) -> bool {
    let dollar = |f: &str| f.starts_with('$');
    let wild = |f: &str| f.starts_with(['+', '#']);
    if (dollar(a) && wild(b)) || (dollar(b) && wild(a)) {
        return false;
    }
    let mut x = a.split('/');
    let mut y = b.split('/');
    loop {
        match (x.next(), y.next()) {
            (Some("#"), _) | (_, Some("#")) => return true,
            (None, None) => return true,
            (Some("+"), Some(_)) | (Some(_), Some("+")) => {}
            (Some(p), Some(q)) if p == q => {}
            _ => return false,
        }
    }
}

/// The leading levels before the first wildcard, at most [`KEY_LEVELS`] of
/// them; a filter whose first `KEY_LEVELS` levels are literal can only
/// overlap a filter with the same ones, or one with a wildcard among them.
const KEY_LEVELS: usize = 3;

fn bucket_key(filter: &str) -> Option<String> {
    let levels: Vec<&str> = filter.splitn(KEY_LEVELS + 1, '/').collect();
    if levels.len() <= KEY_LEVELS {
        // Shorter filters are rare (a bare `/x`); comparing them with
        // everything keeps the bucketing simple and still correct.
        return None;
    }
    let head = &levels[..KEY_LEVELS];
    if head.iter().any(|l| *l == "+" || *l == "#") {
        return None;
    }
    Some(head.join("/"))
}

/// Every (output, input) pair whose filters overlap, between different
/// services, sorted. Inputs are bucketed by their leading literal levels so
/// that a thousand hosts cost a thousand small comparisons, not a million.
pub(crate) fn compute<'a>(
    outputs: impl IntoIterator<Item = Endpoint>,
    inputs: impl IntoIterator<Item = &'a Endpoint>,
) -> Vec<Edge> {
    let mut buckets: HashMap<String, Vec<&Endpoint>> = HashMap::new();
    let mut loose: Vec<&Endpoint> = Vec::new();
    let mut all: Vec<&Endpoint> = Vec::new();
    for input in inputs {
        match bucket_key(&input.topic) {
            Some(key) => buckets.entry(key).or_default().push(input),
            None => loose.push(input),
        }
        all.push(input);
    }
    let mut edges = Vec::new();
    for output in outputs {
        let candidates: Box<dyn Iterator<Item = &&Endpoint>> = match bucket_key(&output.topic) {
            Some(key) => Box::new(buckets.get(&key).into_iter().flatten().chain(&loose)),
            None => Box::new(all.iter()),
        };
        for input in candidates {
            let same_service = input.host == output.host && input.service == output.service;
            if !same_service && filters_overlap(&output.topic, &input.topic) {
                edges.push(Edge::new(output.clone(), (*input).clone()));
            }
        }
    }
    edges.sort();
    edges.dedup();
    edges
}

#[cfg(test)]
mod tests {
    use super::*;
    use rollcall_proto::topic::matches;

    #[test]
    fn overlap_follows_mqtt_wildcards_on_both_sides() {
        for (a, b) in [
            ("/h/t", "/h/t"),
            ("/h/+", "/h/t"),
            ("/h/+/x", "/h/a/+"),
            ("/h/#", "/h"),
            ("/h/#", "/h/a/b/c"),
            ("#", "/anything"),
            ("+/+", "/x"),
            ("/a/+/c", "/a/#"),
            ("/a/b/#", "/a/+/c/d"),
        ] {
            assert!(filters_overlap(a, b), "{a} {b}");
            assert!(filters_overlap(b, a), "{b} {a}");
        }
        for (a, b) in [
            ("/h/t", "/h/u"),
            ("/h/+", "/h/t/x"),
            ("/h/t", "/h"),
            ("/a/+/c", "/a/b/d"),
            ("+/x", "$SYS/x"),
            ("#", "$SYS/x"),
        ] {
            assert!(!filters_overlap(a, b), "{a} {b}");
            assert!(!filters_overlap(b, a), "{b} {a}");
        }
    }

    use proptest::prelude::*;

    /// A filter of 1 to 4 levels over a small alphabet, `#` only last.
    fn filter() -> impl Strategy<Value = String> {
        (
            prop::collection::vec(prop::sample::select(vec!["", "a", "b", "+"]), 0..4),
            prop::sample::select(vec!["", "a", "b", "+", "#"]),
        )
            .prop_map(|(mut levels, last)| {
                levels.push(last);
                levels.join("/")
            })
    }

    /// Every topic of 1 to 5 levels over the filters' literals and one
    /// they never use: if some topic matches both filters, one of these does.
    fn witnesses() -> Vec<String> {
        let mut levels: Vec<Vec<&str>> = vec![vec![]];
        let mut out = Vec::new();
        for _ in 0..5 {
            levels = levels
                .iter()
                .flat_map(|l| {
                    ["", "a", "b", "c"].into_iter().map(move |x| {
                        let mut l = l.clone();
                        l.push(x);
                        l
                    })
                })
                .collect();
            out.extend(levels.iter().map(|l| l.join("/")));
        }
        out
    }

    proptest! {
        #[test]
        fn overlap_is_having_a_topic_both_match(a in filter(), b in filter()) {
            let brute = witnesses()
                .iter()
                .any(|t| matches(&a, t) && matches(&b, t));
            prop_assert_eq!(filters_overlap(&a, &b), brute, "{} {}", a, b);
        }
    }

    fn end(host: &str, service: &str, topic: &str) -> Endpoint {
        Endpoint {
            host: host.into(),
            service: service.into(),
            topic: topic.into(),
        }
    }

    #[test]
    fn bucketing_finds_what_comparing_everything_finds() {
        let outputs = vec![
            end("a", "sensor", "/a/sensor/temp"),
            end("a", "sensor", "/+/sensor/temp"),
            end("b", "gpio", "/b/gpio/input/x"),
            end("c", "x", "/t"),
        ];
        let inputs = vec![
            end("b", "display", "/a/sensor/#"),
            end("b", "display", "/+/+/temp"),
            end("c", "log", "#"),
            end("c", "log2", "/t"),
            end("b", "gpio", "/b/gpio/input/x"),
            end("a", "other", "/a/other/in"),
        ];
        let got = compute(outputs.clone(), &inputs);
        let mut brute = Vec::new();
        for o in &outputs {
            for i in &inputs {
                if (o.host != i.host || o.service != i.service)
                    && filters_overlap(&o.topic, &i.topic)
                {
                    brute.push(Edge::new(o.clone(), i.clone()));
                }
            }
        }
        brute.sort();
        assert_eq!(got, brute);
        // The gpio service's own topic is not an edge to itself.
        assert!(
            !got.iter()
                .any(|e| e.from.service == "gpio" && e.to.service == "gpio")
        );
        assert_eq!(got.len(), 9, "{got:#?}");
    }
}
