//! Fuzz target `request`: `Request::parse` on a query payload, and the same
//! bytes, when UTF-8, as a topic for `Topics::parse_query` (default root and
//! a `site1` root, host `h`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use rollcall_proto::topic::{covering_filter, matches};
use rollcall_proto::{Request, Topics};

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = Request::parse(data) {
        if let Some(topic) = &request.topic {
            assert!(!topic.contains(['+', '#']), "wildcard reply topic accepted");
        }
    }
    if let Ok(topic) = std::str::from_utf8(data) {
        let _ = Topics::default().parse_query("h", topic);
        if let Ok(site) = Topics::new("site1") {
            let _ = site.parse_query("h", topic);
        }
        let _ = matches(topic, "/h/gpio/get/x");
        let _ = matches("/h/+/get/#", topic);
        let _ = covering_filter([topic, "/h/gpio/get/x"]);
    }
});
