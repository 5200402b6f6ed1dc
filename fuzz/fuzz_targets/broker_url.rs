//! Fuzz target `broker_url`: a broker URL as it comes from a roll-call's
//! `broker` field or a configuration file, through `BrokerUrl`'s parser.
//! Whatever the text, nothing panics, and a URL that parses prints as text
//! that parses back to the same URL.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rollcall_net::BrokerUrl;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(url) = text.parse::<BrokerUrl>() {
        let again: BrokerUrl = url.to_string().parse().expect("a printed URL parses");
        assert_eq!(again, url);
    }
});
