//! Fuzz target `docs`: the documentation generators on a cluster map built
//! from whatever arrives on the hub's topics (the `map` target's input: a
//! flags byte, then NUL-separated (topic, payload) messages: `$state`,
//! `$description`, values). Every output must stay well-formed whatever
//! the names, topics, units and docs: the SVG parses as XML, every Markdown
//! table row has its header's number of cells, every DOT string is closed
//! and every DOT line ends a statement, and every `$ref` of the AsyncAPI
//! document resolves inside it.
#![no_main]

#[path = "common/hub_input.rs"]
mod hub_input;

use libfuzzer_sys::fuzz_target;
use rollcall_hub::docs::{self, AsyncApiOptions};
use serde_json::Value;

const SEED: &[u8] = br#"{"function":"s","interfaces":{"inputs":[{"name":"i","topic":"/+/s/#","type":"json","doc":"drives pin 4"}],"outputs":[{"name":"a","topic":"/h/s/a","type":"float","unit":"s","min":0,"max":5,"doc":"pin 4"}]}}"#;

/// A GFM row's cells: split on pipes not escaped by a backslash.
fn cells(row: &str) -> usize {
    let mut n = 1;
    let mut escaped = false;
    for c in row.chars() {
        if c == '|' && !escaped {
            n += 1;
        }
        escaped = c == '\\' && !escaped;
    }
    n
}

fn markdown_tables_hold(md: &str) {
    let mut width = None;
    for line in md.lines() {
        if line.starts_with('|') {
            assert!(line.ends_with('|'), "{line}");
            let n = cells(line);
            assert_eq!(n, *width.get_or_insert(n), "{line}");
        } else {
            width = None;
        }
    }
}

fn dot_holds(dot: &str) {
    let mut in_string = false;
    let mut chars = dot.chars();
    while let Some(c) = chars.next() {
        match (in_string, c) {
            (true, '\\') => assert!(chars.next().is_some(), "a string ends in a backslash"),
            (_, '"') => in_string = !in_string,
            (false, '\n') => {}
            _ => {}
        }
    }
    assert!(!in_string, "a string left open");
    for line in dot.lines() {
        let t = line.trim();
        assert!(
            t.is_empty() || t.ends_with(';') || t.ends_with('{') || t == "}",
            "{line}"
        );
    }
}

fn refs_resolve(doc: &Value, v: &Value) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(r)) = m.get("$ref") {
                let pointer = r.strip_prefix('#').expect("a local $ref");
                assert!(doc.pointer(pointer).is_some(), "dangling {r}");
            }
            m.values().for_each(|v| refs_resolve(doc, v));
        }
        Value::Array(a) => a.iter().for_each(|v| refs_resolve(doc, v)),
        _ => {}
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((flags, topics, mut map, data)) = hub_input::start(data, SEED) else {
        return;
    };
    for (topic, payload) in hub_input::messages(data) {
        map.apply_message(&topics, &topic, payload, 1);
    }
    let snapshot = map.snapshot(1_000 * u64::from(flags));

    let svg = docs::svg(&snapshot);
    if let Err(e) = roxmltree::Document::parse(&svg) {
        panic!("{e}\n{svg}");
    }
    markdown_tables_hold(&docs::markdown(&snapshot));
    dot_holds(&docs::dot(&snapshot));
    let doc = docs::asyncapi_with(
        &snapshot,
        &AsyncApiOptions {
            broker: None,
            topics: Some(topics),
        },
    );
    assert_eq!(doc["asyncapi"], "3.0.0");
    refs_resolve(&doc, &doc);
});
