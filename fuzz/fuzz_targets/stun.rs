//! Fuzz target `stun`: `rollcall_net::stun::decode_binding_response` on any
//! UDP datagram that reaches the STUN client's socket. The transaction id is
//! taken from the datagram's own header (bytes 8..20) so that the fuzzer gets
//! past the id check into the attribute parser; a zero id is tried as well.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rollcall_net::stun::{TransactionId, decode_binding_response};

fuzz_target!(|data: &[u8]| {
    let _ = decode_binding_response(data, TransactionId([0; 12]));
    if let Some(id) = data.get(8..20) {
        let mut txid = [0; 12];
        txid.copy_from_slice(id);
        let _ = decode_binding_response(data, TransactionId(txid));
    }
});
