//! Identities: an ed25519 keypair per node, operator or client; its id is the base58 public key, which is also a
//! valid Solana address. Keys are read from and written to Solana CLI keypair files (a JSON array of 64 bytes:
//! secret then public). Every signature is domain-separated, so a signature made for one purpose can never be
//! replayed as another.

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};

/// Bytes of a public key (an id).
pub const ID_BYTES: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("id is not base58: {0}")]
    NotBase58(String),
    #[error("id decodes to {0} bytes, an ed25519 public key has 32")]
    WrongLength(usize),
    #[error("id is not a valid ed25519 public key")]
    NotAPoint,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("keypair file is not a JSON array of 64 bytes: {0}")]
    Format(String),
    #[error("keypair file's public half does not match its secret half")]
    Mismatch,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("signature is not base58 of 64 bytes")]
    Malformed,
    #[error("signature does not verify for {0}")]
    Invalid(Id),
}

/// A public identity: node, operator (the account that is paid) or client.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Id([u8; ID_BYTES]);

impl Id {
    pub fn as_bytes(&self) -> &[u8; ID_BYTES] {
        &self.0
    }

    /// Parses a base58 id, checking that it is a valid ed25519 point (so signatures can be verified against it).
    pub fn from_base58(s: &str) -> Result<Id, IdError> {
        let bytes = bs58::decode(s).into_vec().map_err(|e| IdError::NotBase58(e.to_string()))?;
        let bytes: [u8; ID_BYTES] = bytes.as_slice().try_into().map_err(|_| IdError::WrongLength(bytes.len()))?;
        VerifyingKey::from_bytes(&bytes).map_err(|_| IdError::NotAPoint)?;
        Ok(Id(bytes))
    }

    fn key(&self) -> Result<VerifyingKey, SignatureError> {
        VerifyingKey::from_bytes(&self.0).map_err(|_| SignatureError::Invalid(*self))
    }
}

impl std::fmt::Display for Id {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&bs58::encode(self.0).into_string())
    }
}

impl std::fmt::Debug for Id {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Id({self})")
    }
}

impl std::str::FromStr for Id {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Id, IdError> {
        Id::from_base58(s)
    }
}

impl serde::Serialize for Id {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Id {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Id, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Id::from_base58(&s).map_err(serde::de::Error::custom)
    }
}

/// An ed25519 signature, base58 on the wire.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Signature([u8; 64]);

impl Signature {
    pub fn to_bytes(&self) -> [u8; 64] {
        self.0
    }

    pub fn from_base58(s: &str) -> Result<Signature, SignatureError> {
        let bytes = bs58::decode(s).into_vec().map_err(|_| SignatureError::Malformed)?;
        Ok(Signature(bytes.as_slice().try_into().map_err(|_| SignatureError::Malformed)?))
    }
}

impl std::fmt::Display for Signature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&bs58::encode(self.0).into_string())
    }
}

impl std::fmt::Debug for Signature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Signature({self})")
    }
}

impl serde::Serialize for Signature {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Signature {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Signature, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Signature::from_base58(&s).map_err(serde::de::Error::custom)
    }
}

/// A secret key with its public id.
#[derive(Clone)]
pub struct Keypair(SigningKey);

impl std::fmt::Debug for Keypair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Keypair({})", self.id())
    }
}

impl Keypair {
    /// The keypair whose secret is `seed` (32 bytes from a CSPRNG; the caller draws them).
    pub fn from_seed(seed: [u8; 32]) -> Keypair {
        Keypair(SigningKey::from_bytes(&seed))
    }

    /// Reads a Solana CLI keypair file's contents: `[s0, …, s31, p0, …, p31]`.
    pub fn from_solana_json(text: &str) -> Result<Keypair, KeyError> {
        let bytes: Vec<u8> = serde_json::from_str(text).map_err(|e| KeyError::Format(e.to_string()))?;
        let bytes: [u8; 64] =
            bytes.as_slice().try_into().map_err(|_| KeyError::Format(format!("{} bytes", bytes.len())))?;
        SigningKey::from_keypair_bytes(&bytes).map(Keypair).map_err(|_| KeyError::Mismatch)
    }

    /// The Solana CLI keypair file format.
    pub fn to_solana_json(&self) -> String {
        serde_json::to_string(&self.0.to_keypair_bytes().to_vec()).unwrap_or_default()
    }

    pub fn id(&self) -> Id {
        Id(self.0.verifying_key().to_bytes())
    }

    /// The 32-byte secret seed: whoever has it holds the account (a custodial key handed to its user).
    pub fn seed(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// Signs `message` for `domain` (see [`signed_bytes`]).
    pub fn sign(&self, domain: &str, message: &[u8]) -> Signature {
        Signature(self.0.sign(&signed_bytes(domain, message)).to_bytes())
    }
}

/// Signature domain of an operator's delegation to a node.
pub const DELEGATION_DOMAIN: &str = "neurolov/operator-delegation/v1";

/// The operator's signature that lets `node` work (and be slashed) on its behalf.
pub fn delegate(operator: &Keypair, node: &Id) -> Signature {
    operator.sign(DELEGATION_DOMAIN, node.as_bytes())
}

/// Checks that `operator` delegated to `node`; a node that is its own operator needs no delegation.
pub fn check_delegation(operator: &Id, node: &Id, delegation: Option<&Signature>) -> Result<(), SignatureError> {
    if operator == node {
        return Ok(());
    }
    let sig = delegation.ok_or(SignatureError::Invalid(*operator))?;
    verify(operator, DELEGATION_DOMAIN, node.as_bytes(), sig)
}

/// What is actually signed: the domain's length, the domain, then the message — so no (domain, message) pair
/// can be read as another.
pub fn signed_bytes(domain: &str, message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + domain.len() + message.len());
    out.extend_from_slice(&(domain.len() as u16).to_le_bytes());
    out.extend_from_slice(domain.as_bytes());
    out.extend_from_slice(message);
    out
}

/// Checks `signature` by `signer` over `message` for `domain` (strict verification: no malleable signatures).
pub fn verify(signer: &Id, domain: &str, message: &[u8], signature: &Signature) -> Result<(), SignatureError> {
    KeyCache::default().verify(signer, domain, message, signature)
}

/// The last signer's public key, decompressed, for the next message from the same signer: a node session signs
/// every frame with one key, and decompressing it (a field square root) was a fifth of checking a heartbeat.
#[derive(Default)]
pub struct KeyCache(Option<(Id, VerifyingKey)>);

impl KeyCache {
    /// [`verify`], with the signer's key from the cache when it is the last one's.
    pub fn verify(
        &mut self,
        signer: &Id,
        domain: &str,
        message: &[u8],
        signature: &Signature,
    ) -> Result<(), SignatureError> {
        let key = match &self.0 {
            Some((id, key)) if id == signer => *key,
            _ => {
                let key = signer.key()?;
                self.0 = Some((*signer, key));
                key
            }
        };
        let sig = ed25519_dalek::Signature::from_bytes(&signature.0);
        key.verify_strict(&signed_bytes(domain, message), &sig).map_err(|_| SignatureError::Invalid(*signer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cached key verifies exactly as a fresh one: the right signer passes, a forgery under a cached signer's
    /// name fails, and a new signer replaces the cached one.
    #[test]
    fn the_key_cache_verifies_as_a_fresh_key_does() {
        let (a, b) = (Keypair::from_seed([1; 32]), Keypair::from_seed([2; 32]));
        let mut keys = KeyCache::default();
        let signed = |kp: &Keypair, m: &[u8]| kp.sign("d", m);
        assert_eq!(keys.verify(&a.id(), "d", b"x", &signed(&a, b"x")), Ok(()));
        assert_eq!(keys.verify(&a.id(), "d", b"x", &signed(&b, b"x")), Err(SignatureError::Invalid(a.id())));
        assert_eq!(keys.verify(&a.id(), "d", b"y", &signed(&a, b"x")), Err(SignatureError::Invalid(a.id())));
        assert_eq!(keys.verify(&b.id(), "d", b"x", &signed(&b, b"x")), Ok(()));
        assert_eq!(keys.verify(&a.id(), "e", b"x", &signed(&a, b"x")), Err(SignatureError::Invalid(a.id())));
        assert_eq!(keys.verify(&a.id(), "d", b"x", &signed(&a, b"x")), verify(&a.id(), "d", b"x", &signed(&a, b"x")));
    }
}
