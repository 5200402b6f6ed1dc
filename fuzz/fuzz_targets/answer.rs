//! Fuzz target `answer`: `Answer::parse` on whatever arrives on a scanner's
//! answer topic, from rollcall or from any foreign program.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rollcall_proto::Answer;

fuzz_target!(|data: &[u8]| {
    if let Ok(answer) = Answer::parse(data) {
        let _ = answer.is_host();
    }
});
