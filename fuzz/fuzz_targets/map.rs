//! Fuzz target `map`: `ClusterMap::ingest` on whatever arrives on the topics
//! the hub subscribes to (`$state`, `$description`, values), as a sequence
//! of (topic, payload) messages separated by NUL bytes, into a map that
//! already knows a service with an exact and a wildcard output. Each message
//! is taken twice at the same time: the second time must report nothing.
//! At the end the snapshot (edges and pin maps included) must serialise and
//! read back unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rollcall_hub::{ClusterMap, MapSnapshot};
use rollcall_proto::Topics;

const SEED: &[u8] = br#"{"function":"s","interfaces":{"inputs":[{"name":"i","topic":"/h/s/set/+","type":"json","doc":"drives pin 4"}],"outputs":[{"name":"a","topic":"/h/s/a","type":"json","doc":"pin 4"},{"name":"b","topic":"/h/s/+/b","type":"json"}]}}"#;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, data)) = data.split_first() else {
        return;
    };
    let topics = if flags & 1 == 0 {
        Topics::default()
    } else {
        Topics::new("site1").unwrap()
    };
    let root = topics.root().to_owned();
    let mut map = ClusterMap::new();
    map.apply_message(&topics, &format!("{root}/h/s/$description"), SEED, 0);
    let mut parts = data.split(|b| *b == 0);
    let mut now = 1u64;
    while let (Some(topic), Some(payload)) = (parts.next(), parts.next()) {
        let topic = String::from_utf8_lossy(topic);
        let first = map.ingest(&topics, &topic, payload, now);
        let again = map.ingest(&topics, &topic, payload, now);
        if first.is_ok() {
            assert_eq!(again, Ok(Vec::new()), "{topic} twice");
        }
        now += u64::from(flags >> 1) * 1000;
        map.expire(now);
        let _ = map.take_watch_changes();
    }
    let snapshot = map.snapshot(now);
    let json = serde_json::to_vec(&snapshot).unwrap();
    let back: MapSnapshot = serde_json::from_slice(&json).unwrap();
    assert_eq!(back, snapshot);
});
