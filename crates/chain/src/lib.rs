//! Settlement adapters (issue 14): what the network signs and reads on the chains NLOV lives on besides its own
//! ledger. `solana` builds the canonical SPL token's genesis and the custody's withdrawal transactions; `ton` the
//! jetton's custody messages, `toncenter` reads and sends them. The ledger side — holds, deposits credited once, the withdrawal states — is `neurolov_core::custody`;
//! sending, confirming and watching the chains is the coordinator shell's.

pub mod rpc;
pub mod solana;
pub mod ton;
pub mod toncenter;
