//! STUN Binding messages (RFC 5389) as bytes: building requests and
//! responses and decoding them. No sockets here, so that the decoder, which
//! reads untrusted network input, can be fuzzed and property-tested alone.
//!
//! Only what address discovery needs is covered: Binding requests, Binding
//! success responses, and the MAPPED-ADDRESS and XOR-MAPPED-ADDRESS
//! attributes. Any other attribute is skipped.

use std::net::{IpAddr, SocketAddr};

use crate::NetError;

/// The fixed value in every RFC 5389 header, which tells STUN from the
/// older RFC 3489 and from other protocols sharing the port.
pub const MAGIC_COOKIE: u32 = 0x2112_A442;
/// Size of the message header.
pub const HEADER_LEN: usize = 20;

const BINDING_REQUEST: u16 = 0x0001;
const BINDING_SUCCESS: u16 = 0x0101;
const BINDING_ERROR: u16 = 0x0111;
const MAPPED_ADDRESS: u16 = 0x0001;
const XOR_MAPPED_ADDRESS: u16 = 0x0020;
const FAMILY_V4: u8 = 0x01;
const FAMILY_V6: u8 = 0x02;

/// The 96-bit id that pairs a response with its request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TransactionId(pub [u8; 12]);

impl TransactionId {
    /// A fresh random id; RFC 5389 asks for one that cannot be guessed, so
    /// that an off-path attacker cannot forge our mapped address.
    pub fn random() -> Self {
        Self(rand::random())
    }
}

/// A Binding request with no attributes.
pub fn encode_binding_request(txid: TransactionId) -> [u8; HEADER_LEN] {
    let mut bytes = [0; HEADER_LEN];
    write_header(&mut bytes, BINDING_REQUEST, 0, txid);
    bytes
}

/// A Binding success response carrying `mapped` as XOR-MAPPED-ADDRESS.
pub fn encode_binding_response(txid: TransactionId, mapped: SocketAddr) -> Vec<u8> {
    let (family, address): (u8, Vec<u8>) = match mapped.ip() {
        IpAddr::V4(ip) => (FAMILY_V4, ip.octets().to_vec()),
        IpAddr::V6(ip) => (FAMILY_V6, ip.octets().to_vec()),
    };
    let mut value = vec![0, family];
    value.extend_from_slice(&xor_port(mapped.port()).to_be_bytes());
    value.extend(xor_address(&address, txid));

    let attribute_len = 4 + value.len();
    let mut bytes = vec![0; HEADER_LEN];
    write_header(&mut bytes, BINDING_SUCCESS, attribute_len as u16, txid);
    bytes.extend_from_slice(&XOR_MAPPED_ADDRESS.to_be_bytes());
    bytes.extend_from_slice(&(value.len() as u16).to_be_bytes());
    bytes.extend(value);
    bytes
}

/// The transaction id of `bytes` if they are a well-formed Binding request.
pub fn decode_binding_request(bytes: &[u8]) -> Option<TransactionId> {
    let (message_type, txid, _) = split_message(bytes).ok()?;
    (message_type == BINDING_REQUEST).then_some(txid)
}

/// The mapped address in a Binding success response to the request `txid`.
/// XOR-MAPPED-ADDRESS wins over MAPPED-ADDRESS, which only old servers
/// send alone. Never panics, whatever the bytes.
pub fn decode_binding_response(bytes: &[u8], txid: TransactionId) -> Result<SocketAddr, NetError> {
    let (message_type, received_txid, mut attributes) = split_message(bytes)?;
    if received_txid != txid {
        return Err(NetError::Stun("transaction id does not match the request"));
    }
    match message_type {
        BINDING_SUCCESS => {}
        BINDING_ERROR => return Err(NetError::Stun("the server answered with an error")),
        _ => return Err(NetError::Stun("not a Binding response")),
    }

    let mut mapped = None;
    while !attributes.is_empty() {
        let (kind, value, rest) = split_attribute(attributes)?;
        attributes = rest;
        match kind {
            XOR_MAPPED_ADDRESS => return decode_address(value, Some(txid)),
            MAPPED_ADDRESS if mapped.is_none() => mapped = Some(decode_address(value, None)?),
            _ => {}
        }
    }
    mapped.ok_or(NetError::Stun("no mapped address in the response"))
}

fn write_header(bytes: &mut [u8], message_type: u16, length: u16, txid: TransactionId) {
    bytes[0..2].copy_from_slice(&message_type.to_be_bytes());
    bytes[2..4].copy_from_slice(&length.to_be_bytes());
    bytes[4..8].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
    bytes[8..20].copy_from_slice(&txid.0);
}

/// Checks the header; returns the type, the transaction id and the
/// attribute bytes.
fn split_message(bytes: &[u8]) -> Result<(u16, TransactionId, &[u8]), NetError> {
    let Some((header, attributes)) = bytes.split_first_chunk::<HEADER_LEN>() else {
        return Err(NetError::Stun("shorter than a STUN header"));
    };
    let message_type = u16::from_be_bytes([header[0], header[1]]);
    let length = usize::from(u16::from_be_bytes([header[2], header[3]]));
    let cookie = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
    if message_type & 0xC000 != 0 || cookie != MAGIC_COOKIE {
        return Err(NetError::Stun("not a STUN message"));
    }
    if length != attributes.len() || length % 4 != 0 {
        return Err(NetError::Stun("message length does not match"));
    }
    let mut txid = [0; 12];
    txid.copy_from_slice(&header[8..]);
    Ok((message_type, TransactionId(txid), attributes))
}

/// Splits off one attribute: its type, its value, and what follows its
/// padding.
fn split_attribute(bytes: &[u8]) -> Result<(u16, &[u8], &[u8]), NetError> {
    let truncated = NetError::Stun("truncated attribute");
    let Some((header, rest)) = bytes.split_first_chunk::<4>() else {
        return Err(truncated);
    };
    let kind = u16::from_be_bytes([header[0], header[1]]);
    let length = usize::from(u16::from_be_bytes([header[2], header[3]]));
    let padded = length.next_multiple_of(4);
    if rest.len() < padded {
        return Err(truncated);
    }
    Ok((kind, &rest[..length], &rest[padded..]))
}

fn decode_address(value: &[u8], xor_with: Option<TransactionId>) -> Result<SocketAddr, NetError> {
    let Some((head, address)) = value.split_first_chunk::<4>() else {
        return Err(NetError::Stun("address attribute too short"));
    };
    let port = u16::from_be_bytes([head[2], head[3]]);
    let (port, address) = match xor_with {
        Some(txid) => (xor_port(port), xor_address(address, txid)),
        None => (port, address.to_vec()),
    };
    let ip = match head[1] {
        FAMILY_V4 => <[u8; 4]>::try_from(address.as_slice())
            .ok()
            .map(IpAddr::from),
        FAMILY_V6 => <[u8; 16]>::try_from(address.as_slice())
            .ok()
            .map(IpAddr::from),
        _ => None,
    };
    let ip = ip.ok_or(NetError::Stun("unknown address family or length"))?;
    Ok(SocketAddr::new(ip, port))
}

fn xor_port(port: u16) -> u16 {
    port ^ (MAGIC_COOKIE >> 16) as u16
}

/// XORs an address with the cookie followed by the transaction id, which
/// covers 4 bytes for IPv4 and all 16 for IPv6. The operation is its own
/// inverse.
fn xor_address(address: &[u8], txid: TransactionId) -> Vec<u8> {
    let key = MAGIC_COOKIE.to_be_bytes().into_iter().chain(txid.0);
    address
        .iter()
        .zip(key)
        .map(|(byte, key)| byte ^ key)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const TXID: TransactionId = TransactionId([7; 12]);

    fn with_attributes(message_type: u16, txid: TransactionId, attributes: &[u8]) -> Vec<u8> {
        let mut bytes = vec![0; HEADER_LEN];
        write_header(&mut bytes, message_type, attributes.len() as u16, txid);
        bytes.extend_from_slice(attributes);
        bytes
    }

    #[test]
    fn request_has_the_rfc_header() {
        let bytes = encode_binding_request(TXID);
        assert_eq!(
            &bytes[..8],
            &[0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xA4, 0x42]
        );
        assert_eq!(decode_binding_request(&bytes), Some(TXID));
        assert!(decode_binding_response(&bytes, TXID).is_err());
    }

    #[test]
    fn decodes_the_rfc_5769_ipv4_sample() {
        // RFC 5769, 2.2: 192.0.2.1:32853 between SOFTWARE and FINGERPRINT
        // attributes, which must be skipped (MESSAGE-INTEGRITY left out).
        let txid = TransactionId([
            0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86, 0xfa, 0x87, 0xdf, 0xae,
        ]);
        let mut attributes = vec![0x80, 0x22, 0x00, 0x0b];
        attributes.extend_from_slice(b"test vector\x20");
        attributes.extend_from_slice(&[
            0x00, 0x20, 0x00, 0x08, 0x00, 0x01, 0xa1, 0x47, 0xe1, 0x12, 0xa6, 0x43,
        ]);
        attributes.extend_from_slice(&[0x80, 0x28, 0x00, 0x04, 0xc0, 0x7d, 0x4c, 0x96]);
        let bytes = with_attributes(BINDING_SUCCESS, txid, &attributes);
        assert_eq!(
            decode_binding_response(&bytes, txid).unwrap(),
            "192.0.2.1:32853".parse().unwrap()
        );
    }

    #[test]
    fn falls_back_to_mapped_address() {
        let attributes = [
            0x00, 0x01, 0x00, 0x08, 0x00, 0x01, 0x1f, 0x90, 203, 0, 113, 9,
        ];
        let bytes = with_attributes(BINDING_SUCCESS, TXID, &attributes);
        assert_eq!(
            decode_binding_response(&bytes, TXID).unwrap(),
            "203.0.113.9:8080".parse().unwrap()
        );
    }

    #[test]
    fn rejects_foreign_and_broken_responses() {
        let good = encode_binding_response(TXID, "198.51.100.4:4000".parse().unwrap());
        assert!(decode_binding_response(&good, TransactionId([8; 12])).is_err());
        assert!(decode_binding_response(&good[..good.len() - 4], TXID).is_err());
        let error = with_attributes(BINDING_ERROR, TXID, &[]);
        assert!(decode_binding_response(&error, TXID).is_err());
        let empty = with_attributes(BINDING_SUCCESS, TXID, &[]);
        assert!(decode_binding_response(&empty, TXID).is_err());
        let mut bad_cookie = good.clone();
        bad_cookie[4] ^= 1;
        assert!(decode_binding_response(&bad_cookie, TXID).is_err());
    }

    proptest! {
        #[test]
        fn responses_round_trip(ip in any::<IpAddr>(), port in any::<u16>(), txid in any::<[u8; 12]>()) {
            let txid = TransactionId(txid);
            let mapped = SocketAddr::new(ip, port);
            let bytes = encode_binding_response(txid, mapped);
            prop_assert_eq!(decode_binding_response(&bytes, txid).unwrap(), mapped);
        }

        #[test]
        fn decoding_random_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
            let _ = decode_binding_response(&bytes, TXID);
            let _ = decode_binding_request(&bytes);
        }

        #[test]
        fn decoding_random_attributes_never_panics(attributes in proptest::collection::vec(any::<u8>(), 0..96)) {
            // A valid header makes the decoder walk the random attributes.
            let bytes = with_attributes(BINDING_SUCCESS, TXID, &attributes);
            let _ = decode_binding_response(&bytes, TXID);
        }
    }
}
