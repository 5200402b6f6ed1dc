//! Roll-call signatures (docs/protocol.md section 8): HMAC-SHA256 over the object
//! without `sig`, keys sorted, serialised compactly, as lowercase hex.
//!
//! Freshness (`ts` within 30 s) and replay (`nonce` seen before) need the
//! clock and memory, so the caller checks them; this module only signs and
//! verifies bytes.

use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

use crate::ProtoError;
use crate::json::Object;

type HmacSha256 = Hmac<Sha256>;

/// The shortest cluster key accepted, in bytes.
pub const MIN_KEY_BYTES: usize = 16;

/// Checks a cluster key before anything is signed or verified with it: at
/// least [`MIN_KEY_BYTES`] bytes (an empty or short key lets anyone sign),
/// and no zero byte. HMAC pads a key shorter than its block with zero
/// bytes, so keys that differ only by trailing zeros would sign alike; with
/// no zero byte in any accepted key, two accepted keys that differ sign
/// differently.
pub fn check_key(key: &[u8]) -> Result<(), ProtoError> {
    if key.len() < MIN_KEY_BYTES {
        return Err(ProtoError::Key(format!(
            "{} bytes is too short: a key that can be guessed lets anyone sign; use at \
             least {MIN_KEY_BYTES} (for example `openssl rand -hex 16`)",
            key.len()
        )));
    }
    if key.contains(&0) {
        return Err(ProtoError::Key("must not contain a zero byte".into()));
    }
    Ok(())
}

/// The canonical bytes a signature covers: compact JSON, keys sorted, no `sig`.
fn canonical(map: &Object) -> Vec<u8> {
    // serde_json's Map is a BTreeMap here (no `preserve_order`), so keys come out sorted.
    let mut copy = map.clone();
    copy.remove("sig");
    serde_json::to_vec(&Value::Object(copy)).unwrap_or_default()
}

fn mac(key: &[u8]) -> HmacSha256 {
    // HMAC accepts keys of any length; new_from_slice cannot fail for it.
    <HmacSha256 as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!())
}

/// Adds `sig` to `map`, which should already carry `ts` and `nonce`.
pub fn sign(map: &mut Object, key: &[u8]) {
    let mut m = mac(key);
    m.update(&canonical(map));
    let sig = hex::encode(m.finalize().into_bytes());
    map.insert("sig".into(), sig.into());
}

/// Checks `map`'s `sig` against `key`, in constant time.
pub fn verify(map: &Object, key: &[u8]) -> Result<(), ProtoError> {
    let sig = match map.get("sig") {
        Some(Value::String(s)) => s,
        Some(_) => return Err(ProtoError::Signature("`sig` must be a hex string")),
        None => return Err(ProtoError::Signature("no `sig`")),
    };
    let bytes = hex::decode(sig).map_err(|_| ProtoError::Signature("`sig` is not hex"))?;
    let mut m = mac(key);
    m.update(&canonical(map));
    m.verify_slice(&bytes)
        .map_err(|_| ProtoError::Signature("bad signature"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_empty_and_zero_padded_keys_are_refused() {
        assert!(check_key(b"").is_err());
        assert!(check_key(b"fifteen bytes..").is_err());
        assert_eq!(check_key(b"sixteen bytes..."), Ok(()));
        assert!(check_key(b"sixteen bytes...\0").is_err());
        // Why: HMAC pads with zeros, so these two would sign alike.
        let mut a: Object = serde_json::from_str(r#"{"id":1}"#).unwrap();
        let mut b = a.clone();
        sign(&mut a, b"sixteen bytes...");
        sign(&mut b, b"sixteen bytes...\0");
        assert_eq!(a["sig"], b["sig"]);
    }

    #[test]
    fn signed_objects_verify_and_tampered_ones_do_not() {
        let mut map: Object =
            serde_json::from_str(r#"{"cmd":"status","id":1,"ts":5,"nonce":"n"}"#).unwrap();
        sign(&mut map, b"k");
        assert!(verify(&map, b"k").is_ok());
        assert!(verify(&map, b"other").is_err());
        map.insert("id".into(), 2.into());
        assert_eq!(
            verify(&map, b"k"),
            Err(ProtoError::Signature("bad signature"))
        );
        map.remove("sig");
        assert!(verify(&map, b"k").is_err());
    }
}
