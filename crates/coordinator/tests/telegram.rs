//! Telegram Mini App `initData` (issue 15) against known answers: the Telegram Mini Apps documentation's example
//! (HMAC), data Telegram really signed (its Ed25519 `signature`, checked with Telegram's published production key),
//! and vectors computed with Python's `hmac` (an independent implementation); then every way to get it wrong.

#![allow(clippy::unwrap_used)] // A panic is the failure report.

use neurolov_coordinator::telegram::init_data::{
    InitDataError, TELEGRAM_PUBLIC_KEY, TELEGRAM_TEST_PUBLIC_KEY, Verifier, parse, sign, to_query,
};
use neurolov_coordinator::telegram::{Telegram, TelegramConfig};

/// docs.telegram-mini-apps.com, "Init Data": the example and its bot token.
const DOCS_TOKEN: &str = "5768337691:AAH5YkoiEuPk8-FZa32hStHTqXiLPtAEhx8";
const DOCS_INIT_DATA: &str = "query_id=AAHdF6IQAAAAAN0XohDhrOrc&user=%7B%22id%22%3A279058397%2C%22first_name%22%3A%22Vladislav%22%2C%22last_name%22%3A%22Kibenko%22%2C%22username%22%3A%22vdkfrost%22%2C%22language_code%22%3A%22ru%22%2C%22is_premium%22%3Atrue%7D&auth_date=1662771648&hash=c501b71e775f74ce10e377dea85a7ea24ecd640b223ea86dfe453e0eaed2e2b2";

/// The init-data libraries' published sample: data Telegram issued (Bot API 8.0, with its Ed25519 `signature`).
const SIGNED_TOKEN: &str = "7342037359:AAHI25ES9xCOMPokpYoz-p8XVrZUdygo2J4";
const SIGNED_INIT_DATA: &str = "user=%7B%22id%22%3A279058397%2C%22first_name%22%3A%22Vladislav%20%2B%20-%20%3F%20%5C%2F%22%2C%22last_name%22%3A%22Kibenko%22%2C%22username%22%3A%22vdkfrost%22%2C%22language_code%22%3A%22ru%22%2C%22is_premium%22%3Atrue%2C%22allows_write_to_pm%22%3Atrue%2C%22photo_url%22%3A%22https%3A%5C%2F%5C%2Ft.me%5C%2Fi%5C%2Fuserpic%5C%2F320%5C%2F4FPEE4tmP3ATHa57u6MqTDih13LTOiMoKoLDRG4PnSA.svg%22%7D&chat_instance=8134722200314281151&chat_type=private&auth_date=1733509682&signature=TYJxVcisqbWjtodPepiJ6ghziUL94-KNpG8Pau-X7oNNLNBM72APCpi_RKiUlBvcqo5L-LAxIc3dnTzcZX_PDg&hash=a433d8f9847bd6addcc563bff7cc82c89e97ea0d90c11fe5729cae6796a36d73";

/// Computed with Python: `hmac.new(hmac.new(b"WebAppData", token, sha256).digest(), check_string, sha256)`.
const OWN_TOKEN: &str = "123456789:TEST-token_for-neurolov";
const OWN_INIT_DATA: &str = "auth_date=1700000000&query_id=AAQ-neurolov-1&user=%7B%22id%22%3A42%2C%22first_name%22%3A%22Ada%22%2C%22username%22%3A%22ada%22%7D&start_param=ref_7&chat_type=private&hash=abdaef1e80e742cb886bb7c2b418cee6b9d0205b510cff59896bfa8a97ea971f";

fn verifier(token: &str) -> Verifier {
    Verifier::new(token, TELEGRAM_PUBLIC_KEY, 3600).unwrap()
}

#[test]
fn the_published_examples_validate() {
    let docs = verifier(DOCS_TOKEN).validate(DOCS_INIT_DATA, 1_662_771_648 + 60).unwrap();
    assert_eq!((docs.user_id, docs.first_name.as_str()), (279_058_397, "Vladislav"));
    assert!(docs.hash.starts_with("c501b71e775f74ce"));
    // Telegram's own Ed25519 signature over the third-party check string, with its production key.
    let signed = verifier(SIGNED_TOKEN).validate(SIGNED_INIT_DATA, 1_733_509_682 + 20).unwrap();
    assert_eq!((signed.user_id, signed.first_name.as_str()), (279_058_397, "Vladislav + - ? /"));
    let own = verifier(OWN_TOKEN).validate(OWN_INIT_DATA, 1_700_000_100).unwrap();
    assert_eq!((own.user_id, own.username.as_deref(), own.start_param.as_deref()), (42, Some("ada"), Some("ref_7")));
    // Our signer gives Python's answer.
    assert_eq!(sign(&parse(OWN_INIT_DATA).unwrap(), OWN_TOKEN), parse(OWN_INIT_DATA).unwrap()["hash"]);
}

#[test]
fn every_way_to_get_it_wrong_is_refused() {
    let check = |verifier: &Verifier, raw: &str, now_s: u64, want: fn(&InitDataError) -> bool| match verifier
        .validate(raw, now_s)
    {
        Err(e) => assert!(want(&e), "{raw}: {e}"),
        Ok(d) => panic!("accepted {raw}: {d:?}"),
    };
    let own = verifier(OWN_TOKEN);
    let now = 1_700_000_100;
    // A tampered field: another user id.
    check(&own, &OWN_INIT_DATA.replace("%3A42%2C", "%3A43%2C"), now, |e| *e == InitDataError::BadHash);
    // Reordered fields are the same data: accepted.
    let mut parts: Vec<&str> = OWN_INIT_DATA.split('&').collect();
    parts.reverse();
    assert_eq!(own.validate(&parts.join("&"), now).unwrap().user_id, 42);
    // A field given twice (which would count?), a field added, one removed.
    check(&own, &format!("{OWN_INIT_DATA}&auth_date=1700000000"), now, |e| matches!(e, InitDataError::Malformed(_)));
    check(&own, &format!("{OWN_INIT_DATA}&extra=1"), now, |e| *e == InitDataError::BadHash);
    check(&own, &OWN_INIT_DATA.replace("&start_param=ref_7", ""), now, |e| *e == InitDataError::BadHash);
    check(&own, &OWN_INIT_DATA.replace("&hash=", "&nohash="), now, |e| *e == InitDataError::Missing("hash"));
    // Stale (an hour and a second), from the future, another bot's token.
    check(&own, OWN_INIT_DATA, 1_700_000_000 + 3601, |e| matches!(e, InitDataError::Stale { .. }));
    check(&own, OWN_INIT_DATA, 1_700_000_000 - 3600, |e| *e == InitDataError::FromTheFuture);
    check(&verifier(DOCS_TOKEN), OWN_INIT_DATA, now, |e| *e == InitDataError::BadHash);
    // Telegram's signature under the test environment's key, or altered, or from another bot: refused.
    let signed_at = 1_733_509_682 + 20;
    let test_env = Verifier::new(SIGNED_TOKEN, TELEGRAM_TEST_PUBLIC_KEY, 3600).unwrap();
    check(&test_env, SIGNED_INIT_DATA, signed_at, |e| *e == InitDataError::BadSignature);
    // (Re-signed with the bot's HMAC so only the Ed25519 check can catch it.)
    let mut fields = parse(SIGNED_INIT_DATA).unwrap();
    fields.insert("signature".into(), fields["signature"].replace('T', "U"));
    fields.insert("hash".into(), sign(&fields, SIGNED_TOKEN));
    let forged = to_query(&fields);
    check(&verifier(SIGNED_TOKEN), &forged, signed_at, |e| *e == InitDataError::BadSignature);
    // Oversized and garbage.
    check(&own, &"a=1&".repeat(2000), now, |e| *e == InitDataError::TooLong);
    check(&own, "%%%&&&===", now, |e| matches!(e, InitDataError::Missing(_) | InitDataError::Malformed(_)));
}

#[test]
fn a_sign_in_is_spent_once_and_each_user_has_one_key() {
    let cfg = TelegramConfig {
        bot_token: OWN_TOKEN.into(),
        webhook_secret: "s".into(),
        api_base: "http://127.0.0.1:9".into(),
        telegram_public_key: TELEGRAM_PUBLIC_KEY.into(),
        max_age_s: 3600,
        public_url: "https://example.org".into(),
        web_app_js: String::new(),
    };
    let telegram = Telegram::new(cfg.clone(), [7; 32]).unwrap();
    let now = 1_700_000_100;
    assert_eq!(telegram.sign_in(OWN_INIT_DATA, now).unwrap().user_id, 42);
    let again = telegram.sign_in(OWN_INIT_DATA, now + 10);
    assert!(matches!(again, Err(neurolov_coordinator::telegram::SignInError::InitData(InitDataError::Replayed))));
    // One key per user, the same after a restart (it derives from the secret), another for another secret.
    assert_eq!(telegram.user_key(42).id(), Telegram::new(cfg.clone(), [7; 32]).unwrap().user_key(42).id());
    assert_ne!(telegram.user_key(42).id(), telegram.user_key(43).id());
    assert_ne!(telegram.user_key(42).id(), Telegram::new(cfg, [8; 32]).unwrap().user_key(42).id());
}
