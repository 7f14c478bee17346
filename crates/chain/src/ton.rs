//! NLOV on TON (issue 14): a TEP-74 jetton whose whole supply is minted once into the network's custody wallet and
//! whose minter then has no admin, so it only ever moves through custody (bridged out of the ledger, never minted
//! beyond what the ledger holds). This module builds and reads what custody signs and sees on TON:
//! - addresses (TEP-2: raw `0:hex` and user-friendly base64, bounceable or not, test-only or not);
//! - the custody's wallet (v4r2): an external message carrying one jetton `transfer` (op `0x0f8a7ea5`);
//! - deposits: the `transfer_notification` (op `0x7362d09c`) the custody's jetton wallet sends its owner when someone
//!   transfers NLOV to custody with a text comment naming their Neurolov account.
//!
//! Cells, bags of cells and the wallet contracts' code are `tonlib-core`'s; the message layouts are TEP-74's.

use std::sync::Arc;

use num_bigint::BigUint;
pub use tonlib_core::TonAddress;
use tonlib_core::cell::{ArcCell, BagOfCells, Cell, CellBuilder, TonCellError};
use tonlib_core::wallet::mnemonic::KeyPair;
pub use tonlib_core::wallet::ton_wallet::TonWallet;
use tonlib_core::wallet::wallet_version::WalletVersion;

/// TEP-74 `transfer`: the owner asks its jetton wallet to move jettons.
pub const OP_TRANSFER: u32 = 0x0f8a_7ea5;
/// TEP-74 `transfer_notification`: a jetton wallet tells its owner jettons arrived.
pub const OP_TRANSFER_NOTIFICATION: u32 = 0x7362_d09c;
/// TEP-74 `internal_transfer`: jetton wallet to jetton wallet.
pub const OP_INTERNAL_TRANSFER: u32 = 0x178d_4519;
/// A text comment's prefix in a forward payload or a message body.
pub const OP_COMMENT: u32 = 0;
/// Longest comment read from a deposit (an account id is 64 hex characters).
pub const MAX_COMMENT_BYTES: usize = 256;

/// Toncoin a withdrawal attaches to its jetton transfer, in nanotons: gas for both jetton wallets; the rest comes
/// back to custody as `excesses`.
pub const WITHDRAWAL_ATTACHED_NANOTON: u64 = 50_000_000;
/// Toncoin a deposit forwards to custody with its notification, in nanotons (> 0, or no notification is sent).
pub const DEPOSIT_FORWARD_NANOTON: u64 = 10_000_000;
/// Toncoin a deposit attaches, in nanotons.
pub const DEPOSIT_ATTACHED_NANOTON: u64 = 100_000_000;

#[derive(Debug, thiserror::Error)]
pub enum TonError {
    #[error("not a TON address: {0}")]
    Address(String),
    #[error("a key is 64 bytes (seed then public key), got {0}")]
    Key(usize),
    #[error("cell: {0}")]
    Cell(#[from] TonCellError),
    #[error("not a {what}: {detail}")]
    NotA { what: &'static str, detail: String },
}

/// Parses any TEP-2 form (raw `wc:hex`, user-friendly base64 or base64url, any flags). The all-zero address is
/// refused: the cell layout stores it as `addr_none`, so jettons sent there would be lost.
pub fn parse_address(text: &str) -> Result<TonAddress, TonError> {
    let address: TonAddress = text.trim().parse().map_err(|e| TonError::Address(format!("{text}: {e}")))?;
    if address == TonAddress::NULL {
        return Err(TonError::Address(format!("{text}: the zero address")));
    }
    if address.workchain != 0 && address.workchain != -1 {
        return Err(TonError::Address(format!("{text}: workchain {} does not exist", address.workchain)));
    }
    Ok(address)
}

/// The TEP-2 user-friendly form: base64url, bounceable unless `non_bounceable`, for mainnet unless `testnet`.
pub fn friendly(address: &TonAddress, non_bounceable: bool, testnet: bool) -> String {
    address.to_base64_url_flags(non_bounceable, testnet)
}

/// The wallet (v4r2, the default subwallet) that an Ed25519 key in Solana's keypair layout (32-byte seed, then the
/// 32-byte public key) controls — the same key files the network uses everywhere.
pub fn wallet(keypair_bytes: &[u8]) -> Result<TonWallet, TonError> {
    if keypair_bytes.len() != 64 {
        return Err(TonError::Key(keypair_bytes.len()));
    }
    let key_pair = KeyPair { public_key: keypair_bytes[32..].to_vec(), secret_key: keypair_bytes.to_vec() };
    Ok(TonWallet::new(WalletVersion::V4R2, key_pair)?)
}

/// A text comment: op 0 then the text (snake format when it does not fit one cell).
pub fn comment(text: &str) -> Result<Cell, TonError> {
    let mut b = CellBuilder::new();
    b.store_u32(32, OP_COMMENT)?;
    store_snake(&mut b, text.as_bytes())?;
    Ok(b.build()?)
}

fn store_snake(b: &mut CellBuilder, bytes: &[u8]) -> Result<(), TonCellError> {
    let room = b.remaining_bits() / 8;
    let (here, rest) = bytes.split_at(bytes.len().min(room));
    b.store_slice(here)?;
    if !rest.is_empty() {
        let mut tail = CellBuilder::new();
        store_snake(&mut tail, rest)?;
        b.store_reference(&tail.build()?.to_arc())?;
    }
    Ok(())
}

/// TEP-74 `transfer` body.
#[derive(Clone, Debug, PartialEq)]
pub struct JettonTransfer {
    pub query_id: u64,
    pub amount: u64,
    /// The new owner (a wallet, not its jetton wallet).
    pub destination: TonAddress,
    /// Where the unspent toncoin goes back (`excesses`).
    pub response_destination: TonAddress,
    pub forward_nanoton: u64,
    pub forward_payload: Option<Cell>,
}

impl JettonTransfer {
    pub fn to_cell(&self) -> Result<Cell, TonError> {
        let mut b = CellBuilder::new();
        b.store_u32(32, OP_TRANSFER)?
            .store_u64(64, self.query_id)?
            .store_coins(&BigUint::from(self.amount))?
            .store_address(&self.destination)?
            .store_address(&self.response_destination)?
            .store_bit(false)? // no custom payload
            .store_coins(&BigUint::from(self.forward_nanoton))?;
        match &self.forward_payload {
            None => {
                b.store_bit(false)?;
            }
            Some(payload) => {
                b.store_bit(true)?.store_reference(&Arc::new(payload.clone()))?;
            }
        }
        Ok(b.build()?)
    }

    /// Reads a `transfer` body (None: another op).
    pub fn parse(body: &Cell) -> Result<Option<JettonTransfer>, TonError> {
        let mut p = body.parser();
        if p.remaining_bits() < 32 || p.load_u32(32)? != OP_TRANSFER {
            return Ok(None);
        }
        let query_id = p.load_u64(64)?;
        let amount = coins_u64(p.load_coins()?)?;
        let destination = p.load_address()?;
        let response_destination = p.load_address()?;
        let _custom_payload = p.load_maybe_cell_ref()?;
        let forward_nanoton = coins_u64(p.load_coins()?)?;
        let forward_payload = p.load_either_cell_or_cell_ref()?;
        let forward_payload = (forward_payload.bit_len() > 0).then(|| forward_payload.as_ref().clone());
        Ok(Some(JettonTransfer {
            query_id,
            amount,
            destination,
            response_destination,
            forward_nanoton,
            forward_payload,
        }))
    }
}

fn coins_u64(coins: BigUint) -> Result<u64, TonError> {
    u64::try_from(coins).map_err(|e| TonError::NotA { what: "64-bit amount", detail: e.to_string() })
}

/// An internal message carrying `body` to `dest` with `value_nanoton`, bounceable: if the receiver fails, the
/// toncoin (and the jettons' state) come back.
pub fn internal_message(dest: &TonAddress, value_nanoton: u64, body: Cell) -> Result<Cell, TonError> {
    let mut b = CellBuilder::new();
    b.store_bit(false)? // int_msg_info$0
        .store_bit(true)? // ihr_disabled
        .store_bit(true)? // bounce
        .store_bit(false)? // bounced
        .store_address(&TonAddress::NULL)? // src: addr_none, the sender fills it in
        .store_address(dest)?
        .store_coins(&BigUint::from(value_nanoton))?
        .store_bit(false)? // no extra currencies
        .store_coins(&BigUint::from(0u8))? // ihr_fee
        .store_coins(&BigUint::from(0u8))? // fwd_fee
        .store_u64(64, 0)? // created_lt
        .store_u32(32, 0)? // created_at
        .store_bit(false)? // no state init
        .store_bit(true)? // body in a reference
        .store_reference(&body.to_arc())?;
    Ok(b.build()?)
}

/// A wallet's signed external message, ready to send, with what identifies it on chain.
#[derive(Clone, Debug, PartialEq)]
pub struct SignedMessage {
    /// The bag of cells to send (`sendBoc`).
    pub boc: Vec<u8>,
    /// Hex of the signed body's cell hash: the wallet's transaction shows it as its inbound message's `body_hash`.
    pub body_hash: String,
    /// The wallet's seqno the message consumes.
    pub seqno: u32,
    /// Unix time after which the wallet refuses it.
    pub valid_until: u32,
}

/// Where an external message sits in its wallet's order: the seqno it consumes, the unix time after which the
/// wallet refuses it, and whether it also deploys the wallet (its first message carries the state init).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Envelope {
    pub seqno: u32,
    pub valid_until: u32,
    pub deploy: bool,
}

/// `wallet` signs one external message sending `internal` (mode 3: pay fees separately, ignore errors).
pub fn sign(wallet: &TonWallet, internal: Cell, envelope: Envelope) -> Result<SignedMessage, TonError> {
    let Envelope { seqno, valid_until, deploy: with_state_init } = envelope;
    let body = wallet.create_external_body(valid_until, seqno, [internal.to_arc()])?;
    let signed = wallet.sign_external_body(&body)?;
    let body_hash = signed.cell_hash().to_hex();
    let message = wallet
        .wrap_signed_body(signed, with_state_init)
        .map_err(|e| TonError::Cell(TonCellError::InternalError(e.to_string())))?;
    let boc = BagOfCells::from_root(message).serialize(true)?;
    Ok(SignedMessage { boc, body_hash, seqno, valid_until })
}

/// The custody's withdrawal: `custody` tells its jetton wallet `custody_jetton_wallet` to move `amount` to `to`,
/// tagged with `query_id` (the withdrawal's), excess toncoin back to custody.
pub fn withdrawal(
    custody: &TonWallet,
    custody_jetton_wallet: &TonAddress,
    to: &TonAddress,
    amount: u64,
    query_id: u64,
    envelope: Envelope,
) -> Result<SignedMessage, TonError> {
    let transfer = JettonTransfer {
        query_id,
        amount,
        destination: to.clone(),
        response_destination: custody.address.clone(),
        forward_nanoton: 0,
        forward_payload: None,
    };
    let internal = internal_message(custody_jetton_wallet, WITHDRAWAL_ATTACHED_NANOTON, transfer.to_cell()?)?;
    sign(custody, internal, envelope)
}

/// A user's deposit: `user` tells its own jetton wallet to move `amount` to the custody wallet with `account` (a
/// Neurolov account id) as the comment, forwarding enough toncoin for the notification custody reads.
pub fn deposit(
    user: &TonWallet,
    user_jetton_wallet: &TonAddress,
    custody: &TonAddress,
    amount: u64,
    account: &str,
    envelope: Envelope,
) -> Result<SignedMessage, TonError> {
    let transfer = JettonTransfer {
        query_id: 0,
        amount,
        destination: custody.clone(),
        response_destination: user.address.clone(),
        forward_nanoton: DEPOSIT_FORWARD_NANOTON,
        forward_payload: Some(comment(account)?),
    };
    let internal = internal_message(user_jetton_wallet, DEPOSIT_ATTACHED_NANOTON, transfer.to_cell()?)?;
    sign(user, internal, envelope)
}

/// A TEP-74 `transfer_notification` to a wallet: `amount` jettons arrived from `sender`, with its comment if the
/// forward payload is one.
#[derive(Clone, Debug, PartialEq)]
pub struct TransferNotification {
    pub query_id: u64,
    pub amount: u64,
    pub sender: TonAddress,
    pub comment: Option<String>,
}

impl TransferNotification {
    /// Reads a notification body (None: another op).
    pub fn parse(body: &Cell) -> Result<Option<TransferNotification>, TonError> {
        let mut p = body.parser();
        if p.remaining_bits() < 32 || p.load_u32(32)? != OP_TRANSFER_NOTIFICATION {
            return Ok(None);
        }
        let query_id = p.load_u64(64)?;
        let amount = coins_u64(p.load_coins()?)?;
        let sender = p.load_address()?;
        // The forward payload: Either Cell ^Cell. A missing bit (old senders) reads as no payload.
        let payload = if p.remaining_bits() == 0 { None } else { Some(p.load_either_cell_or_cell_ref()?) };
        let comment = payload.and_then(|c| comment_of(&c));
        Ok(Some(TransferNotification { query_id, amount, sender, comment }))
    }
}

/// The text of a comment cell (op 0 then UTF-8 in snake format), or None.
pub fn comment_of(cell: &Cell) -> Option<String> {
    let mut p = cell.parser();
    if p.remaining_bits() < 32 || p.load_u32(32).ok()? != OP_COMMENT {
        return None;
    }
    let mut bytes = Vec::new();
    let mut current: Cell = p.load_remaining().ok()?;
    loop {
        bytes.extend_from_slice(current.data().get(..current.bit_len() / 8)?);
        if bytes.len() > MAX_COMMENT_BYTES {
            return None;
        }
        match current.references().first() {
            Some(next) => current = next.as_ref().clone(),
            None => break,
        }
    }
    String::from_utf8(bytes).ok()
}

/// Reads a bag of cells with one root.
pub fn cell_from_boc(boc: &[u8]) -> Result<Cell, TonError> {
    let root = BagOfCells::parse(boc)?.single_root()?;
    Ok(root.as_ref().clone())
}

/// The query id a withdrawal's jetton transfer carries: the first 8 bytes of its ledger transfer id.
pub fn query_id(transfer_id: &[u8]) -> u64 {
    let mut bytes = [0u8; 8];
    let n = transfer_id.len().min(8);
    bytes[..n].copy_from_slice(&transfer_id[..n]);
    u64::from_be_bytes(bytes)
}

/// The cell an address is passed as to get methods (`tvm.Slice`).
pub fn address_cell(address: &TonAddress) -> Result<ArcCell, TonError> {
    let mut b = CellBuilder::new();
    b.store_address(address)?;
    Ok(b.build()?.to_arc())
}

/// A deposit in a custody wallet's transaction: a `transfer_notification` that really comes from the custody's own
/// jetton wallet (anyone can send a wallet a message that looks like one: only its jetton wallet's count), not
/// bounced. Returns the amount and the comment.
pub fn deposit_of(
    tx: &crate::toncenter::TonTransaction,
    custody_jetton_wallet: &TonAddress,
) -> Option<(u64, Option<String>)> {
    let msg = tx.in_msg.as_ref()?;
    if msg.bounced || msg.source.as_ref() != Some(custody_jetton_wallet) {
        return None;
    }
    let note = TransferNotification::parse(msg.body.as_ref()?).ok()??;
    (note.amount > 0).then_some((note.amount, note.comment))
}

/// The custody wallet's transaction that accepted the external message whose signed body hashes to `body_hash`.
pub fn accepted<'a>(
    wallet_txs: &'a [crate::toncenter::TonTransaction],
    body_hash: &str,
) -> Option<&'a crate::toncenter::TonTransaction> {
    wallet_txs.iter().find(|tx| tx.in_msg.as_ref().is_some_and(|m| m.source.is_none() && m.body_hash == body_hash))
}

/// What the custody's jetton wallet did with the transfer `query_id` its owner `custody` sent: `Some(true)` when it
/// sent the jettons on (an `internal_transfer` went out), `Some(false)` when it refused (nothing went out but the
/// bounce), None when it has not processed it yet.
pub fn transfer_outcome(
    jetton_wallet_txs: &[crate::toncenter::TonTransaction],
    custody: &TonAddress,
    query_id: u64,
) -> Option<bool> {
    let tx = jetton_wallet_txs.iter().find(|tx| {
        tx.in_msg.as_ref().is_some_and(|m| {
            m.source.as_ref() == Some(custody)
                && m.body
                    .as_ref()
                    .and_then(|b| JettonTransfer::parse(b).ok().flatten())
                    .is_some_and(|t| t.query_id == query_id)
        })
    })?;
    let sent_on = tx.out_msgs.iter().any(|m| {
        !m.bounced && m.body.as_ref().is_some_and(|b| b.parser().load_u32(32).ok() == Some(OP_INTERNAL_TRANSFER))
    });
    Some(sent_on)
}

/// The seqno and `valid_until` a signed v4 wallet message (as [`sign`] makes it) carries: what decides, after a
/// restart, whether it was accepted (the wallet's seqno moved past it) or can never be (the chain's time passed it).
pub fn signed_seqno(boc: &[u8]) -> Result<(u32, u32), TonError> {
    use tonlib_core::tlb_types::block::message::Message;
    use tonlib_core::tlb_types::tlb::TLB as _;
    let message = Message::from_boc(boc)?;
    let mut p = message.body.value.parser();
    // signature:bits512 subwallet_id:uint32 valid_until:uint32 seqno:uint32
    p.skip_bits(512 + 32)?;
    let valid_until = p.load_u32(32)?;
    let seqno = p.load_u32(32)?;
    Ok((seqno, valid_until))
}
