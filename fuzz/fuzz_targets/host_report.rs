//! Fuzz target `host_report`: `HostReport::parse` on an MQTT `/udp/report`
//! payload, as every service on a host reads it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rollcall_proto::HostReport;

fuzz_target!(|data: &[u8]| {
    if let Ok(report) = HostReport::parse(data) {
        let again = HostReport::parse(&report.to_bytes()).expect("a parsed report re-parses");
        assert_eq!(
            (&again.hostname, again.ipaddr, again.extaddr, again.rollcall.id),
            (&report.hostname, report.ipaddr, report.extaddr, report.rollcall.id)
        );
    }
});
