//! Fuzz target `rollcall`: `RollCall::parse` on whatever a UDP datagram or an
//! MQTT `/udp/request` payload may carry. A roll-call that parses must also
//! survive its own round trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rollcall_proto::{RollCall, RollCallLimits};

fuzz_target!(|data: &[u8]| {
    // The datagram limit, and the MQTT payload limit used for `/udp/request`.
    let _ = RollCall::parse(data, RollCallLimits::default());
    let limits = RollCallLimits {
        max_len: rollcall_proto::MAX_PAYLOAD,
    };
    if let Ok(rc) = RollCall::parse(data, limits) {
        // Compact output may still be longer than the input (`1e5` prints as
        // `100000.0`), so the re-parse has no size limit.
        let unlimited = RollCallLimits { max_len: usize::MAX };
        let again = RollCall::parse(&rc.to_bytes(), unlimited).expect("a parsed roll-call re-parses");
        // Floats in unknown fields may move by one ULP (serde_json without
        // `float_roundtrip`), so compare the protocol's own fields only.
        assert_eq!(
            (&again.cmd, again.id, &again.replyto, &again.topic, &again.broker, again.window_ms, again.v),
            (&rc.cmd, rc.id, &rc.replyto, &rc.topic, &rc.broker, rc.window_ms, rc.v)
        );
        assert_eq!(again.extra.len(), rc.extra.len());
    }
});
