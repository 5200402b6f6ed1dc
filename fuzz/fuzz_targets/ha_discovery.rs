//! Fuzz target `ha_discovery`: Home Assistant discovery
//! (`rollcall_hub::ha::discovery`) on a cluster map built from the `map`
//! target's input (NUL-separated `$state`, `$description` and value
//! messages), and what the hub learns back from the broker
//! (`Published::observe`) on the same messages under the discovery prefix.
//! Every config must pass the hub's own checks, keep its ids to
//! `[a-zA-Z0-9_-]`, have a unique `unique_id`, and every topic must be one
//! a broker takes.
#![no_main]

#[path = "common/hub_input.rs"]
mod hub_input;

use std::collections::BTreeSet;

use libfuzzer_sys::fuzz_target;
use rollcall_hub::ha::{HaOptions, Published, check_config, discovery};

const SEED: &[u8] = br#"{"function":"s","interfaces":{"inputs":[{"name":"i","topic":"/h/s/set/i","type":"float","unit":"V","min":0,"max":5}],"outputs":[{"name":"i","topic":"/h/s/i","type":"float","unit":"V"},{"name":"b","topic":"/h/s/b","type":"json","doc":"{\"button\":..,\"pressed\":..}"}]}}"#;

fuzz_target!(|data: &[u8]| {
    let Some((flags, topics, mut map, data)) = hub_input::start(data, SEED) else {
        return;
    };
    let options = HaOptions {
        prefix: "homeassistant".into(),
        topics: topics.clone(),
    };
    let mut published = Published::default();
    for (topic, payload) in hub_input::messages(data) {
        map.apply_message(&topics, &topic, payload, 1);
        published.observe(&options, &format!("homeassistant{topic}"), payload);
    }
    let snapshot = map.snapshot(1_000 * u64::from(flags));
    let d = discovery(&snapshot, &options);
    let mut ids = BTreeSet::new();
    for (topic, payload) in &d.messages {
        assert!(rollcall_proto::topic::check_topic(topic, "topic").is_ok(), "{topic}");
        let levels: Vec<&str> = topic.split('/').collect();
        if levels.last() != Some(&"config") {
            assert!(payload == b"online" || payload == b"offline");
            continue;
        }
        assert_eq!(levels.len(), 5, "{topic}");
        for id in &levels[2..4] {
            assert!(
                id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'),
                "{topic}"
            );
        }
        let config: serde_json::Value = serde_json::from_slice(payload).expect("JSON");
        assert_eq!(check_config(levels[1], &config), Ok(()), "{topic}");
        assert!(ids.insert(config["unique_id"].as_str().unwrap().to_owned()));
    }
    let _ = published.plan(&d.messages, flags & 1 == 1, flags & 2 == 2);
});
