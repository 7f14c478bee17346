//! API keys (issue 13): the bearer secrets OpenAI's clients send (`Authorization: Bearer nlv-…`), each bound to the
//! ledger account its requests spend from. An account makes its keys with a signed request (`neurolov keys create`);
//! the coordinator keeps only a blake3 hash of each secret (a secret is 24 random bytes: a fast hash is enough, and a
//! stolen database gives no usable key), and revoking one is final.

use std::collections::HashMap;
use std::sync::RwLock;

use neurolov_api::openai as oa;
use neurolov_protocol::Id;

/// Keys one account may hold unrevoked at once, and the longest name.
pub const MAX_KEYS_PER_ACCOUNT: usize = 32;
pub const MAX_KEY_NAME_BYTES: usize = 64;
/// What every secret starts with (so a leaked one is recognizable to secret scanners).
pub const KEY_PREFIX: &str = "nlv-";

/// A key as kept: the hash of its secret is the map's key.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct KeyDoc {
    pub id: String,
    pub name: String,
    pub owner: Id,
    pub created_ms: u64,
    pub revoked_ms: Option<u64>,
}

impl KeyDoc {
    pub(crate) fn entry(&self) -> oa::KeyEntry {
        oa::KeyEntry {
            id: self.id.clone(),
            name: self.name.clone(),
            owner: self.owner.to_string(),
            created_ms: self.created_ms,
            revoked_ms: self.revoked_ms,
        }
    }
}

/// Why a key was refused or could not be made.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("no API key given: send `Authorization: Bearer <key>` (make one with `neurolov keys create`)")]
    Missing,
    #[error("this API key is not valid")]
    Unknown,
    #[error("this API key was revoked")]
    Revoked,
    #[error("an account may hold at most {MAX_KEYS_PER_ACCOUNT} keys; revoke one first")]
    TooMany,
    #[error("a key's name is at most {MAX_KEY_NAME_BYTES} bytes")]
    NameTooLong,
    #[error("no key {0} of this account")]
    NotYours(String),
    #[error("no randomness for a new key: {0}")]
    Random(String),
}

/// Every key, by the hash of its secret.
#[derive(Default)]
pub(crate) struct Keys(RwLock<HashMap<String, KeyDoc>>);

fn secret_hash(secret: &str) -> String {
    blake3::hash(secret.as_bytes()).to_hex().to_string()
}

impl Keys {
    /// The keys on record.
    pub(crate) async fn load(pool: &sqlx::SqlitePool) -> anyhow::Result<Keys> {
        let rows: Vec<(String, String)> = sqlx::query_as("SELECT hash, doc FROM api_keys").fetch_all(pool).await?;
        let keys = rows
            .into_iter()
            .map(|(hash, doc)| Ok((hash, serde_json::from_str(&doc)?)))
            .collect::<anyhow::Result<_>>()?;
        Ok(Keys(RwLock::new(keys)))
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, KeyDoc>> {
        self.0.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, KeyDoc>> {
        self.0.write().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The account a request's `Authorization` header spends from.
    pub(crate) fn authenticate(&self, authorization: Option<&str>) -> Result<Id, KeyError> {
        let secret = authorization.and_then(|h| h.strip_prefix("Bearer ")).map(str::trim).ok_or(KeyError::Missing)?;
        let keys = self.read();
        let doc = keys.get(&secret_hash(secret)).ok_or(KeyError::Unknown)?;
        match doc.revoked_ms {
            Some(_) => Err(KeyError::Revoked),
            None => Ok(doc.owner),
        }
    }

    /// A new key for `owner`: the secret (shown once) and its record, with the hash to store it under.
    pub(crate) fn create(&self, owner: Id, name: &str, now_ms: u64) -> Result<(String, String, KeyDoc), KeyError> {
        if name.len() > MAX_KEY_NAME_BYTES {
            return Err(KeyError::NameTooLong);
        }
        let mut keys = self.write();
        if keys.values().filter(|k| k.owner == owner && k.revoked_ms.is_none()).count() >= MAX_KEYS_PER_ACCOUNT {
            return Err(KeyError::TooMany);
        }
        let mut bytes = [0u8; 24];
        getrandom::fill(&mut bytes).map_err(|e| KeyError::Random(e.to_string()))?;
        let secret = format!("{KEY_PREFIX}{}", bs58::encode(bytes).into_string());
        let hash = secret_hash(&secret);
        let doc =
            KeyDoc { id: hash[..16].to_string(), name: name.to_string(), owner, created_ms: now_ms, revoked_ms: None };
        keys.insert(hash.clone(), doc.clone());
        Ok((secret, hash, doc))
    }

    /// `owner`'s keys, oldest first.
    pub(crate) fn of(&self, owner: &Id) -> Vec<KeyDoc> {
        let mut mine: Vec<KeyDoc> = self.read().values().filter(|k| k.owner == *owner).cloned().collect();
        mine.sort_by_key(|k| (k.created_ms, k.id.clone()));
        mine
    }

    /// Revokes `owner`'s key `id` (revoking it again changes nothing); its record and hash to store.
    pub(crate) fn revoke(&self, owner: &Id, id: &str, now_ms: u64) -> Result<(String, KeyDoc), KeyError> {
        let mut keys = self.write();
        let (hash, doc) = keys
            .iter_mut()
            .find(|(_, k)| k.owner == *owner && k.id == id)
            .ok_or_else(|| KeyError::NotYours(id.to_string()))?;
        doc.revoked_ms.get_or_insert(now_ms);
        Ok((hash.clone(), doc.clone()))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // A panic is the failure report.

    use super::*;

    #[test]
    fn a_key_authenticates_its_owner_until_revoked_and_only_its_owner_revokes_it() {
        let keys = Keys::default();
        let (alice, bob) =
            (neurolov_protocol::Keypair::from_seed([1; 32]).id(), neurolov_protocol::Keypair::from_seed([2; 32]).id());
        let (secret, _, doc) = keys.create(alice, "laptop", 5).unwrap();
        assert!(secret.starts_with(KEY_PREFIX));
        assert_eq!(keys.authenticate(Some(&format!("Bearer {secret}"))).unwrap(), alice);
        assert!(matches!(keys.authenticate(Some("Bearer nlv-guess")), Err(KeyError::Unknown)));
        assert!(matches!(keys.authenticate(Some(&secret)), Err(KeyError::Missing)), "the scheme is required");
        assert!(matches!(keys.authenticate(None), Err(KeyError::Missing)));
        assert!(matches!(keys.revoke(&bob, &doc.id, 6), Err(KeyError::NotYours(_))));
        keys.revoke(&alice, &doc.id, 7).unwrap();
        assert!(matches!(keys.authenticate(Some(&format!("Bearer {secret}"))), Err(KeyError::Revoked)));
        assert_eq!(keys.of(&alice)[0].revoked_ms, Some(7));
        assert!(keys.of(&bob).is_empty());
    }

    #[test]
    fn an_account_holds_a_bounded_number_of_keys() {
        let keys = Keys::default();
        let alice = neurolov_protocol::Keypair::from_seed([1; 32]).id();
        for i in 0..MAX_KEYS_PER_ACCOUNT {
            keys.create(alice, &format!("k{i}"), i as u64).unwrap();
        }
        assert!(matches!(keys.create(alice, "one more", 99), Err(KeyError::TooMany)));
        assert!(matches!(keys.create(alice, &"x".repeat(MAX_KEY_NAME_BYTES + 1), 99), Err(KeyError::NameTooLong)));
    }
}
