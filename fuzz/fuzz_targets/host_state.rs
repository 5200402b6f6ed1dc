//! Fuzz target `host_state`: a payload on a host's `/{host}/$state`, through
//! `HostState::parse` (the hub reads every host's, the agent its own).
//! Whatever the bytes, nothing panics; a state that parses prints as a
//! payload that parses back the same, starting with the same state word; and
//! the staleness rule holds: only an `offline` with a number below the
//! latest `online`'s is stale.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rollcall_proto::{HostState, Liveness};

fuzz_target!(|data: &[u8]| {
    let Ok(Some(state)) = HostState::parse(data) else {
        return;
    };
    let payload = state.to_payload();
    assert_eq!(HostState::parse(&payload), Ok(Some(state)));
    assert!(payload.starts_with(state.liveness.word().as_bytes()));
    // The latest `online` seen, from the first bytes: every case in turn.
    let latest = data.first().map(|&b| u64::from(b));
    let stale = state.is_stale_after(latest);
    let expected = match (state.liveness, state.session, latest) {
        (Liveness::Offline, Some(n), Some(l)) => n < l,
        _ => false,
    };
    assert_eq!(stale, expected);
    assert!(!state.is_stale_after(None));
});
