//! The wire between Neurolov's coordinator and its provider nodes: ed25519 identities (base58 ids that are also
//! Solana addresses, Solana CLI keypair files), domain-separated signatures, signed envelopes, and the version-1
//! messages. Pure: no IO; serde lives here because these are the edge types.

pub mod chain;
pub mod envelope;
pub mod identity;
pub mod inference;
pub mod messages;
pub mod request;

pub use envelope::{Envelope, EnvelopeError};
pub use identity::{Id, IdError, KeyCache, KeyError, Keypair, Signature, SignatureError};
pub use messages::{FromNode, PROTOCOL_VERSION, ToNode};
