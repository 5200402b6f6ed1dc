//! Fuzz target `gate`: a datagram as the agent's gate sees it. The bytes
//! are parsed as a roll-call and offered to a gate with a cluster key and to
//! one without, from a source address taken from the first byte; the same
//! bytes also go through `sign::verify` as a JSON object.
//!
//! Whatever the bytes, nothing panics; the keyed gate admits nothing that
//! does not verify with its key; and no roll-call is admitted twice.
#![no_main]

use std::net::IpAddr;

use libfuzzer_sys::fuzz_target;
use rollcall_agent::gate::{Gate, Refusal};
use rollcall_proto::{RollCall, RollCallLimits, json, sign};

const KEY: &[u8] = b"the fuzz target's cluster key";
const NOW_MS: u64 = 1_800_000_000_000;

fuzz_target!(|data: &[u8]| {
    if let Ok(map) = json::parse_object(data, rollcall_proto::MAX_DATAGRAM) {
        let _ = sign::verify(&map, KEY);
    }
    let Ok(rc) = RollCall::parse(data, RollCallLimits::default()) else {
        return;
    };
    let source = data
        .first()
        .map(|b| IpAddr::from([198, 18, 0, *b]))
        .filter(|_| data.len() % 2 == 0);
    let mut keyed = Gate::new(20, Some(KEY.to_vec()));
    keyed.start_at(NOW_MS - 1_000);
    let mut open = Gate::new(20, None);
    for gate in [&mut keyed, &mut open] {
        if gate.admit(&rc, source, NOW_MS).is_ok() {
            assert_eq!(
                gate.admit(&rc, source, NOW_MS),
                Err(Refusal::Duplicate),
                "admitted twice"
            );
        }
    }
    let mut keyed = Gate::new(20, Some(KEY.to_vec()));
    if keyed.admit(&rc, source, NOW_MS).is_ok() {
        assert_eq!(sign::verify(&rc.to_object(), KEY), Ok(()), "admitted unsigned");
    }
});
