//! Identities, signatures and envelopes against their contracts: Solana keypair files round-trip and are checked,
//! ids are base58 public keys, tampered or foreign messages fail to open, and the seeded generator is pinned to
//! test vectors that the browser's implementation must reproduce.

#![allow(clippy::unwrap_used)] // Test helpers unwrap: a panic is the failure report.

use neurolov_protocol::messages::{ClaimedHardware, NodeKind, seeded_f32};
use neurolov_protocol::{Envelope, EnvelopeError, FromNode, Id, IdError, KeyError, Keypair, SignatureError};
use proptest::prelude::*;

fn keypair(n: u8) -> Keypair {
    Keypair::from_seed([n; 32])
}

#[test]
fn rfc8032_test_vector_1() {
    // RFC 8032 §7.1, TEST 1: the empty message.
    let secret = hex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60");
    let kp = Keypair::from_seed(secret.try_into().unwrap());
    assert_eq!(kp.id().as_bytes().to_vec(), hex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"));
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

#[test]
fn solana_keypair_files_round_trip_and_are_checked() {
    let kp = keypair(7);
    let json = kp.to_solana_json();
    let bytes: Vec<u8> = serde_json::from_str(&json).unwrap();
    assert_eq!(bytes.len(), 64);
    assert_eq!(&bytes[32..], kp.id().as_bytes());
    assert_eq!(Keypair::from_solana_json(&json).unwrap().id(), kp.id());

    let mut wrong_half = bytes.clone();
    wrong_half[40] ^= 1;
    let cases = [
        ("[1, 2, 3]".to_string(), "Format"),
        ("not json".to_string(), "Format"),
        (serde_json::to_string(&vec![300u32; 64]).unwrap(), "Format"),
        (serde_json::to_string(&wrong_half).unwrap(), "Mismatch"),
    ];
    for (text, want) in cases {
        let err = Keypair::from_solana_json(&text).unwrap_err();
        let got = match err {
            KeyError::Format(_) => "Format",
            KeyError::Mismatch => "Mismatch",
        };
        assert_eq!(got, want, "{text}");
    }
}

#[test]
fn ids_are_base58_public_keys() {
    let id = keypair(1).id();
    let text = id.to_string();
    assert!((32..=44).contains(&text.len()), "{text}");
    assert_eq!(text.parse::<Id>().unwrap(), id);
    assert_eq!(serde_json::to_string(&id).unwrap(), format!("\"{text}\""));
    assert!(matches!("0OIl".parse::<Id>(), Err(IdError::NotBase58(_))));
    assert!(matches!("abc".parse::<Id>(), Err(IdError::WrongLength(_))));
}

fn register(kp: &Keypair) -> FromNode {
    FromNode::Register {
        version: 1,
        session: "nonce".into(),
        seq: 0,
        operator: kp.id(),
        kind: NodeKind::Native,
        claimed: ClaimedHardware::default(),
        price_nano_per_gflop: 5,
        slots: 2,
        operator_delegation: None,
    }
}

#[test]
fn envelopes_open_only_untampered() {
    let kp = keypair(2);
    let env = Envelope::seal(&kp, &register(&kp));
    assert_eq!(env.open::<FromNode>().unwrap(), register(&kp));

    let mut tampered = env.clone();
    tampered.payload = tampered.payload.replace("\"price_nano_per_gflop\":5", "\"price_nano_per_gflop\":1");
    assert!(matches!(tampered.open::<FromNode>(), Err(EnvelopeError::Signature(SignatureError::Invalid(_)))));

    let mut impostor = env.clone();
    impostor.signer = keypair(3).id();
    assert!(matches!(impostor.open::<FromNode>(), Err(EnvelopeError::Signature(_))));

    let huge = Envelope::seal(&kp, &"x".repeat(70_000));
    assert!(matches!(huge.open::<String>(), Err(EnvelopeError::TooLarge(_))));

    let garbage = Envelope::seal(&kp, &serde_json::json!({"type": "launch_missiles"}));
    assert!(matches!(garbage.open::<FromNode>(), Err(EnvelopeError::Malformed(_))));

    assert!(matches!(Envelope::from_frame("{\"signer\": 1}"), Err(EnvelopeError::Malformed(_))));
}

#[test]
fn seeded_inputs_match_their_test_vectors() {
    // Pinned values: browsers implement the same generator and must reproduce these exactly.
    let v = seeded_f32(42, 4);
    let bits: Vec<u32> = v.iter().map(|x| x.to_bits()).collect();
    assert_eq!(bits, SEED_42_BITS, "{v:?}");
    assert!(seeded_f32(7, 10_000).iter().all(|x| (-1.0..1.0).contains(x)));
    assert_ne!(seeded_f32(1, 8), seeded_f32(2, 8));
    assert_ne!(seeded_f32(1, 8), seeded_f32(1 << 32 | 1, 8).iter().map(|x| -x).collect::<Vec<_>>());
}

/// Computed independently by the JavaScript form (Math.imul) in docs/PROTOCOL.md under Node.js 20.
const SEED_42_BITS: [u32; 4] = [1045368696, 3184774480, 1060402788, 1051578048];

proptest! {
    #[test]
    fn any_message_survives_sealing(seed in any::<[u8; 32]>(), price in any::<u64>(), slots in 0u32..64) {
        let kp = Keypair::from_seed(seed);
        let msg = FromNode::Register {
            version: 1,
            session: "s".into(),
            seq: 3,
            operator: kp.id(),
            kind: NodeKind::Browser,
            claimed: ClaimedHardware::default(),
            price_nano_per_gflop: price,
            slots,
            operator_delegation: None,
        };
        prop_assert_eq!(Envelope::seal(&kp, &msg).open::<FromNode>().unwrap(), msg);
    }
}
