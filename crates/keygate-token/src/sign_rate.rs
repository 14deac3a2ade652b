//! Signing and verification throughput, for the performance report. Ignored by default; run it
//! optimised and single-threaded so the figures are per core:
//!
//! `cargo test --release -p keygate-token sign_rate -- --ignored --nocapture --test-threads=1`
//!
//! It prints, for each algorithm, whole tokens signed per second next to the raw aws-lc-rs
//! signing rate of the same key over a fixed 200-byte message, so the cost of our JWS framing
//! (JSON, base64url, allocation) is the difference between the two; and tokens verified per
//! second.

use std::hint::black_box;
use std::time::{Duration, Instant};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::RSA_PKCS1_SHA256;
use keygate_core::{AccountId, KeyId, Scope, UserId};
use time::OffsetDateTime;

use crate::key::KeyPair;
use crate::test_support::key;
use crate::{Algorithm, AuthClaims, AuthMethod, Verifier};

const RUN_FOR: Duration = Duration::from_secs(2);

/// Calls `f` repeatedly for [`RUN_FOR`] and returns calls per second.
fn rate(mut f: impl FnMut()) -> f64 {
    let start = Instant::now();
    let mut calls = 0u64;
    while start.elapsed() < RUN_FOR {
        for _ in 0..16 {
            f();
        }
        calls += 16;
    }
    calls as f64 / start.elapsed().as_secs_f64()
}

#[test]
#[ignore = "benchmark: run with --release --ignored --nocapture"]
fn sign_rate() {
    let now = OffsetDateTime::now_utc();
    let claims = AuthClaims {
        iss: "https://keygate.example".into(),
        sub: None,
        account_id: AccountId::generate(),
        owner_id: UserId::generate(),
        method: AuthMethod::ApiKey,
        key_id: Some(KeyId::generate()),
        scope: Scope::Write,
        jti: "0192f1a4c7d87c3e9b5a1d2e3f405162".into(),
        iat: now.unix_timestamp(),
        exp: now.unix_timestamp() + 3600,
    };
    let message = [0x5au8; 200];
    let rng = SystemRandom::new();
    println!(
        "profile: {}",
        if cfg!(debug_assertions) {
            "debug (numbers are meaningless)"
        } else {
            "release"
        }
    );
    for alg in [Algorithm::Rs256, Algorithm::EdDsa] {
        let key = key(alg);
        let token = key.sign(&claims).expect("sign");
        let mut verifier = Verifier::new(claims.iss.clone());
        verifier.insert_key(&key).expect("valid JWK");

        let tokens = rate(|| {
            black_box(key.sign(black_box(&claims)).expect("sign"));
        });
        let raw = match &key.pair {
            KeyPair::Rsa(rsa) => {
                let mut signature = vec![0; rsa.public_modulus_len()];
                rate(|| {
                    rsa.sign(&RSA_PKCS1_SHA256, &rng, black_box(&message), &mut signature)
                        .expect("sign");
                })
            }
            KeyPair::Ed25519(ed) => rate(|| {
                black_box(ed.sign(black_box(&message)));
            }),
        };
        let verified = rate(|| {
            black_box(
                verifier
                    .verify::<AuthClaims>(black_box(&token), now)
                    .expect("valid"),
            );
        });
        println!(
            "{alg:<6} token length {:>4} B | tokens signed {tokens:>9.0}/s | raw aws-lc-rs sign (200 B) {raw:>9.0}/s | framing overhead {:>5.1}% | tokens verified {verified:>9.0}/s",
            token.len(),
            (raw / tokens - 1.0) * 100.0,
        );
    }
}
