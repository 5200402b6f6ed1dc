//! Fuzz target `answer`: `Answer::parse` on whatever arrives on a scanner's
//! answer topic, from rollcall or from any foreign program, and
//! `Description::parse_payload` with the digest check on whatever a scanner
//! reads from a `$description` a brief answer names.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rollcall_proto::{Answer, Description};

fuzz_target!(|data: &[u8]| {
    if let Ok(answer) = Answer::parse(data) {
        let _ = answer.is_host();
        // A digest is only ever kept shaped as one.
        if let Some(digest) = &answer.digest {
            assert!(rollcall_proto::is_digest(digest));
        }
    }
    let digest = rollcall_proto::digest(data);
    assert!(rollcall_proto::is_digest(&digest));
    if let Ok(description) = Description::parse_payload(data) {
        // What was read can be published again and read back (within the
        // size limit: `1` comes back as `1.0`, so a payload may grow).
        let again = description.to_payload("h");
        if again.len() <= rollcall_proto::MAX_PAYLOAD {
            assert_eq!(Description::parse_payload(&again).ok(), Some(description));
        }
    }
});
