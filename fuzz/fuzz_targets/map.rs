//! Fuzz target `map`: `ClusterMap::ingest` on whatever arrives on the topics
//! the hub subscribes to (`$state`, `$description`, values), as a sequence
//! of (topic, payload) messages separated by NUL bytes, into a map that
//! already knows a service with an exact and a wildcard output. Each message
//! is taken twice at the same time: the second time must report nothing.
//! At the end the snapshot (edges and pin maps included) must serialise and
//! read back unchanged.
#![no_main]

#[path = "common/hub_input.rs"]
mod hub_input;

use libfuzzer_sys::fuzz_target;
use rollcall_hub::MapSnapshot;

const SEED: &[u8] = br#"{"function":"s","interfaces":{"inputs":[{"name":"i","topic":"/h/s/set/+","type":"json","doc":"drives pin 4"}],"outputs":[{"name":"a","topic":"/h/s/a","type":"json","doc":"pin 4"},{"name":"b","topic":"/h/s/+/b","type":"json"}]}}"#;

fuzz_target!(|data: &[u8]| {
    let Some((flags, topics, mut map, data)) = hub_input::start(data, SEED) else {
        return;
    };
    let mut now = 1u64;
    for (topic, payload) in hub_input::messages(data) {
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
