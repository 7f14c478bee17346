//! What the chain tests share: a LiteSVM-backed JSON-RPC server.

pub mod localnet;
