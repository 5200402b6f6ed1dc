//! Fuzz target `host_report`: `HostReport::parse` on an MQTT `/udp/report`
//! payload, as every service on a host reads it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rollcall_proto::HostReport;

fuzz_target!(|data: &[u8]| {
    if let Ok(report) = HostReport::parse(data) {
        let bytes = report.to_bytes();
        // Compact output may still be longer than the input (`1e5` prints as
        // `100000.0`) and so over the size limit; only compare when it fits.
        if bytes.len() > rollcall_proto::MAX_PAYLOAD {
            return;
        }
        let again = HostReport::parse(&bytes).expect("a parsed report re-parses");
        assert_eq!(
            (&again.hostname, again.ipaddr, again.extaddr, again.rollcall.id),
            (&report.hostname, report.ipaddr, report.extaddr, report.rollcall.id)
        );
    }
});
