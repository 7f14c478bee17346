//! The chains NLOV lives on besides the coordinator's ledger (issue 14): Solana, where the SPL mint is canonical, and
//! TON, where a jetton carries what the network's custody bridged. The names and limits every layer shares.

/// A chain the network keeps custody on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Chain {
    Solana = 0,
    Ton = 1,
}

impl Chain {
    pub const ALL: [Chain; 2] = [Chain::Solana, Chain::Ton];

    pub fn as_str(self) -> &'static str {
        match self {
            Chain::Solana => "solana",
            Chain::Ton => "ton",
        }
    }

    /// Its number in ledger account kinds (`neurolov_ledger::Kind::Outside`).
    pub fn number(self) -> u8 {
        self as u8
    }
}

impl std::fmt::Display for Chain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Chain {
    type Err = String;

    fn from_str(s: &str) -> Result<Chain, String> {
        Chain::ALL.into_iter().find(|c| c.as_str() == s).ok_or_else(|| format!("unknown chain {s} (solana or ton)"))
    }
}

/// Longest address the network accepts on any chain (a TON raw address is 66 characters, a Solana one at most 44).
pub const MAX_CHAIN_ADDRESS_BYTES: usize = 128;
/// Longest chain transaction id (a Solana signature is at most 88 base58 characters; a TON hash 64 hex ones).
pub const MAX_CHAIN_TX_ID_BYTES: usize = 128;
/// Largest signed chain transaction kept for re-sending (Solana's packet is 1,232 bytes; a TON external message a
/// few hundred).
pub const MAX_SIGNED_TX_BYTES: usize = 4_096;
