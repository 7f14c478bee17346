//! Signed HTTP requests: how a client (or a node uploading its result) proves who sends a request. The signer signs
//! `METHOD \n PATH \n TIMESTAMP_MS \n blake3(body)` in domain [`DOMAIN`] and sends three headers: [`HEADER_CLIENT`]
//! (its id), [`HEADER_TIMESTAMP`] (ms since the Unix epoch) and [`HEADER_SIGNATURE`] (base58). The coordinator
//! checks them (and refuses replays) in `neurolov_coordinator::auth`.

use crate::identity::Keypair;

pub const DOMAIN: &str = "neurolov/client-request/v1";
pub const HEADER_CLIENT: &str = "x-neurolov-client";
pub const HEADER_TIMESTAMP: &str = "x-neurolov-timestamp";
pub const HEADER_SIGNATURE: &str = "x-neurolov-signature";

/// The bytes a request's signer signs.
pub fn message(method: &str, path: &str, timestamp_ms: u64, body: &[u8]) -> Vec<u8> {
    message_for_body_hash(method, path, timestamp_ms, blake3::hash(body).to_hex().as_str())
}

/// [`message`] given the body's blake3 hash (hex) instead of the body: a blob upload's body is named by its hash, so
/// its signature can be checked before the body is read.
pub fn message_for_body_hash(method: &str, path: &str, timestamp_ms: u64, body_hash_hex: &str) -> Vec<u8> {
    format!("{method}\n{path}\n{timestamp_ms}\n{body_hash_hex}").into_bytes()
}

/// The three headers for a request.
pub fn sign(kp: &Keypair, method: &str, path: &str, timestamp_ms: u64, body: &[u8]) -> [(&'static str, String); 3] {
    let sig = kp.sign(DOMAIN, &message(method, path, timestamp_ms, body));
    [
        (HEADER_CLIENT, kp.id().to_string()),
        (HEADER_TIMESTAMP, timestamp_ms.to_string()),
        (HEADER_SIGNATURE, sig.to_string()),
    ]
}
