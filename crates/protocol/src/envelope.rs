//! Signed envelopes: every message a node sends is the JSON text of its payload, the sender's id and an ed25519
//! signature over exactly that text. The receiver checks the signature before it parses the payload, so a message
//! cannot be altered in flight or attributed to another node, and a signed commitment is evidence anyone can
//! re-check later.

use serde::{Serialize, de::DeserializeOwned};

use crate::identity::{Id, KeyCache, Keypair, Signature, SignatureError};

/// Signature domain of node messages.
pub const DOMAIN: &str = "neurolov/node-message/v1";
/// Largest payload accepted.
pub const MAX_PAYLOAD_BYTES: usize = 64 * 1024;

/// A signed message.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Envelope {
    pub signer: Id,
    /// The payload's JSON text, exactly as signed.
    pub payload: String,
    pub signature: Signature,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    #[error("payload is {0} bytes, the limit is {MAX_PAYLOAD_BYTES}")]
    TooLarge(usize),
    #[error(transparent)]
    Signature(#[from] SignatureError),
    #[error("payload is not a valid message: {0}")]
    Malformed(String),
}

impl Envelope {
    /// Serializes and signs `message`.
    pub fn seal<T: Serialize>(keypair: &Keypair, message: &T) -> Envelope {
        let payload = serde_json::to_string(message).unwrap_or_default();
        let signature = keypair.sign(DOMAIN, payload.as_bytes());
        Envelope { signer: keypair.id(), payload, signature }
    }

    /// Verifies the signature, then parses the payload.
    pub fn open<T: DeserializeOwned>(&self) -> Result<T, EnvelopeError> {
        self.open_with(&mut KeyCache::default())
    }

    /// [`Envelope::open`], with the signer's key from `keys` when it signed the last envelope opened with it.
    pub fn open_with<T: DeserializeOwned>(&self, keys: &mut KeyCache) -> Result<T, EnvelopeError> {
        if self.payload.len() > MAX_PAYLOAD_BYTES {
            return Err(EnvelopeError::TooLarge(self.payload.len()));
        }
        keys.verify(&self.signer, DOMAIN, self.payload.as_bytes(), &self.signature)?;
        serde_json::from_str(&self.payload).map_err(|e| EnvelopeError::Malformed(e.to_string()))
    }

    /// Parses an envelope from a WebSocket text frame, refusing oversized frames before parsing.
    pub fn from_frame(frame: &str) -> Result<Envelope, EnvelopeError> {
        if frame.len() > MAX_PAYLOAD_BYTES * 2 + 1024 {
            return Err(EnvelopeError::TooLarge(frame.len()));
        }
        serde_json::from_str(frame).map_err(|e| EnvelopeError::Malformed(e.to_string()))
    }
}
