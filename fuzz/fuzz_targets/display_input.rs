//! Fuzz target `display_input`: what arrives on the display service's input
//! topic (`/{host}/display/text`, the notes' `/display`) and its control
//! topic, through `rollcall_services::display::parse_input`, then the whole
//! service on a simulated 16x2 display.
//!
//! Whatever the bytes, nothing panics; the screen keeps its size (2 rows of
//! 16 characters); and a refused message leaves the screen as it was.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rollcall_hw::display::sim::SimDisplay;
use rollcall_proto::Topics;
use rollcall_services::display::{DisplayService, parse_input};
use rollcall_services::{Ctx, Service};

fuzz_target!(|data: &[u8]| {
    let _ = parse_input(data);
    let topics = Topics::default();
    let ctx = Ctx {
        host: "pibot01",
        topics: &topics,
        now_ms: 1,
    };
    let sim = SimDisplay::new(16, 2, &["A"]);
    let handle = sim.handle();
    let mut svc = DisplayService::new(Box::new(sim));
    svc.on_message("/pibot01/display/text", b"before", &ctx)
        .expect("plain text is shown");
    for topic in ["/pibot01/display/text", "/dcontrol"] {
        let before = handle.contents();
        let result = if topic == "/dcontrol" {
            rollcall_proto::Request::parse(data)
                .map_err(rollcall_services::ServiceError::from)
                .and_then(|r| svc.control(&r.body, &ctx))
        } else {
            svc.on_message(topic, data, &ctx)
        };
        let after = handle.contents();
        assert_eq!(after.len(), 2);
        assert!(
            after.iter().all(|row| row.chars().count() == 16),
            "{after:?}"
        );
        if result.is_err() {
            assert_eq!(after, before, "a refused message changed the screen");
        }
    }
});
