//! The supply's origin: 500,000,000 NLOV in the whitepaper's eight buckets, credited once from the mint.

use crate::engine::{Ledger, LedgerError};
use crate::{AccountId, Kind, NANO_PER_NLOV, TOTAL_SUPPLY_NANO, Transfer, TransferId, account_flags, codes};

/// The whitepaper's allocation buckets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Bucket {
    EcosystemFund = 0,
    Team = 1,
    PublicSale = 2,
    PrivateSale = 3,
    Development = 4,
    Marketing = 5,
    Treasury = 6,
    Reserves = 7,
}

impl Bucket {
    pub const ALL: [Bucket; 8] = [
        Bucket::EcosystemFund,
        Bucket::Team,
        Bucket::PublicSale,
        Bucket::PrivateSale,
        Bucket::Development,
        Bucket::Marketing,
        Bucket::Treasury,
        Bucket::Reserves,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Bucket::EcosystemFund => "ecosystem fund",
            Bucket::Team => "team",
            Bucket::PublicSale => "public sale",
            Bucket::PrivateSale => "private sale",
            Bucket::Development => "development",
            Bucket::Marketing => "marketing",
            Bucket::Treasury => "treasury",
            Bucket::Reserves => "reserves",
        }
    }

    pub fn account(self) -> AccountId {
        AccountId::derive(&[b"genesis", self.name().as_bytes()])
    }
}

/// Each bucket's allocation in whole NLOV.
pub const GENESIS: [(Bucket, u64); 8] = [
    (Bucket::EcosystemFund, 100_000_000),
    (Bucket::Team, 80_000_000),
    (Bucket::PublicSale, 30_000_000),
    (Bucket::PrivateSale, 10_000_000),
    (Bucket::Development, 75_000_000),
    (Bucket::Marketing, 20_000_000),
    (Bucket::Treasury, 75_000_000),
    (Bucket::Reserves, 110_000_000),
];

const _: () = {
    let mut sum = 0;
    let mut i = 0;
    while i < GENESIS.len() {
        sum += GENESIS[i].1;
        i += 1;
    }
    assert!(sum * NANO_PER_NLOV == TOTAL_SUPPLY_NANO);
};

/// The mint's id.
pub fn mint() -> AccountId {
    AccountId::derive(&[b"mint"])
}

impl Ledger {
    /// A ledger holding the whole supply in the genesis buckets. Applying genesis twice changes nothing: its
    /// transfer ids are fixed.
    pub fn with_genesis(now_ms: u64) -> Result<Ledger, LedgerError> {
        let mut ledger = Ledger::new();
        ledger.genesis(now_ms)?;
        Ok(ledger)
    }

    /// Creates the mint and the buckets and credits each its allocation in one linked batch.
    pub fn genesis(&mut self, now_ms: u64) -> Result<(), LedgerError> {
        self.create_account(mint(), Kind::Mint, account_flags::MINT, "mint", now_ms)?;
        let mut batch = Vec::new();
        for (i, &(bucket, nlov)) in GENESIS.iter().enumerate() {
            self.create_account(
                bucket.account(),
                Kind::Genesis(bucket),
                account_flags::DEBITS_MUST_NOT_EXCEED_CREDITS,
                bucket.name(),
                now_ms,
            )?;
            let id = TransferId::derive(&[b"genesis", bucket.name().as_bytes()]);
            let mut t = Transfer::new(id, mint(), bucket.account(), nlov * NANO_PER_NLOV, codes::GENESIS);
            if i + 1 < GENESIS.len() {
                t = t.linked();
            }
            batch.push(t);
        }
        for result in self.submit(&batch, now_ms) {
            result.map_err(LedgerError::Genesis)?;
        }
        Ok(())
    }
}
