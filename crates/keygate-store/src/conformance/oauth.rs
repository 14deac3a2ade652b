//! OAuth storage rules: clients stay in their account, codes and refresh tokens are used once
//! even under races, and revoking a grant (directly, through a consent, or by deleting its
//! client) hands back the access tokens to deny.

use keygate_core::oauth::{generate_secret, secret_hash, SecretKind};
use keygate_core::{AccountId, ClientId, GrantId, UserId};
use time::Duration;

use super::{both, create_fixture, not_found, now, ok, page};
use crate::{
    AuthorizationCode, IssuedAccessToken, OAuthClient, OAuthConsent, OAuthGrant, RefreshToken,
    Store,
};

pub async fn run_all(store: &dyn Store) {
    clients_are_read_updated_and_deleted_within_their_account_only(store).await;
    a_code_is_redeemed_once_even_by_racing_requests(store).await;
    a_refresh_token_rotates_once_and_a_revoked_grant_not_at_all(store).await;
    revoking_a_grant_returns_its_unexpired_access_tokens(store).await;
    deleting_a_consent_revokes_that_users_grants_to_that_client(store).await;
    deleting_a_client_returns_its_unexpired_access_tokens(store).await;
}

fn client(account: &AccountId) -> OAuthClient {
    let t = now();
    OAuthClient {
        id: ClientId::generate(),
        account_id: account.clone(),
        name: "Partner app".into(),
        redirect_uris: vec![
            "https://partner.example.com/cb".into(),
            "http://127.0.0.1:9999/cb".into(),
        ],
        scope: "read write".into(),
        confidential: true,
        secret_hash: Some(secret_hash(&generate_secret(SecretKind::ClientSecret))),
        created_by: None,
        created_at: t,
        updated_at: t,
    }
}

fn code(c: &OAuthClient, user: &UserId) -> AuthorizationCode {
    let t = now();
    AuthorizationCode {
        code_hash: secret_hash(&generate_secret(SecretKind::AuthorizationCode)),
        client_id: c.id.clone(),
        account_id: c.account_id.clone(),
        user_id: user.clone(),
        redirect_uri: c.redirect_uris[0].clone(),
        scope: "read".into(),
        code_challenge: Some("E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM".into()),
        created_at: t,
        expires_at: t + Duration::seconds(60),
        used_at: None,
        grant_id: None,
    }
}

fn grant(c: &OAuthClient, user: &UserId) -> OAuthGrant {
    OAuthGrant {
        id: GrantId::generate(),
        client_id: c.id.clone(),
        account_id: c.account_id.clone(),
        user_id: user.clone(),
        scope: "read".into(),
        created_at: now(),
        revoked_at: None,
    }
}

fn refresh(grant: &GrantId) -> RefreshToken {
    let t = now();
    RefreshToken {
        token_hash: secret_hash(&generate_secret(SecretKind::RefreshToken)),
        grant_id: grant.clone(),
        created_at: t,
        expires_at: t + Duration::days(30),
        used_at: None,
    }
}

fn access(c: &OAuthClient, grant: Option<&GrantId>, ttl: Duration) -> IssuedAccessToken {
    IssuedAccessToken {
        jti: format!(
            "tok_{}",
            GrantId::generate().as_str().trim_start_matches("grant_")
        ),
        client_id: c.id.clone(),
        grant_id: grant.cloned(),
        expires_at: now() + ttl,
    }
}

/// A grant started by redeeming a fresh code, with its first refresh and access tokens.
async fn started_grant(
    store: &dyn Store,
    c: &OAuthClient,
    user: &UserId,
) -> (OAuthGrant, RefreshToken, IssuedAccessToken) {
    let code = code(c, user);
    ok(
        store.create_authorization_code(&code).await,
        "create_authorization_code",
    );
    let g = grant(c, user);
    let r = refresh(&g.id);
    let a = access(c, Some(&g.id), Duration::hours(1));
    let won = ok(
        store
            .redeem_authorization_code(&code.code_hash, &g, Some(&r), &a)
            .await,
        "redeem_authorization_code",
    );
    assert!(won, "a fresh code is redeemed");
    (g, r, a)
}

pub async fn clients_are_read_updated_and_deleted_within_their_account_only(store: &dyn Store) {
    let mine = create_fixture(store, "oauth-clients").await;
    let other = create_fixture(store, "oauth-clients-other").await;
    let c = client(&mine.account.id);
    ok(store.create_oauth_client(&c).await, "create_oauth_client");
    let mut public = client(&mine.account.id);
    public.confidential = false;
    public.secret_hash = None;
    ok(store.create_oauth_client(&public).await, "create public");

    assert_eq!(ok(store.get_oauth_client(None, &c.id).await, "get any"), c);
    assert_eq!(
        ok(
            store
                .get_oauth_client(Some(&mine.account.id), &public.id)
                .await,
            "get public"
        ),
        public
    );
    not_found(
        store.get_oauth_client(Some(&other.account.id), &c.id).await,
        "another account's client",
    );
    let listed = ok(
        store
            .list_oauth_clients(&mine.account.id, &page(None, 1))
            .await,
        "list",
    );
    assert_eq!(
        (listed.items, listed.total, listed.has_more),
        (vec![c.clone()], 2, true)
    );
    assert_eq!(
        ok(
            store
                .list_oauth_clients(&other.account.id, &page(None, 10))
                .await,
            "list other"
        )
        .total,
        0
    );

    let mut changed = c.clone();
    changed.name = "Renamed".into();
    changed.redirect_uris = vec!["https://new.example.com/cb".into()];
    changed.scope = "read".into();
    changed.secret_hash = Some(secret_hash("kgcs_rotated"));
    changed.updated_at = now() + Duration::seconds(1);
    ok(store.update_oauth_client(&changed).await, "update");
    assert_eq!(
        ok(store.get_oauth_client(None, &c.id).await, "get updated"),
        changed
    );
    let mut foreign = changed.clone();
    foreign.account_id = other.account.id.clone();
    not_found(
        store.update_oauth_client(&foreign).await,
        "update through another account",
    );

    not_found(
        store
            .delete_oauth_client(&other.account.id, &c.id, now())
            .await,
        "delete through another account",
    );
    ok(
        store
            .delete_oauth_client(&mine.account.id, &c.id, now())
            .await,
        "delete",
    );
    not_found(store.get_oauth_client(None, &c.id).await, "deleted client");
}

pub async fn a_code_is_redeemed_once_even_by_racing_requests(store: &dyn Store) {
    let f = create_fixture(store, "oauth-codes").await;
    let c = client(&f.account.id);
    ok(store.create_oauth_client(&c).await, "create_oauth_client");
    let code = code(&c, &f.owner.id);
    ok(store.create_authorization_code(&code).await, "create code");
    assert_eq!(
        ok(
            store.get_authorization_code(&code.code_hash).await,
            "get code"
        ),
        code
    );
    not_found(
        store
            .get_authorization_code(&secret_hash("kgac_unknown"))
            .await,
        "unknown code",
    );

    let (g1, g2) = (grant(&c, &f.owner.id), grant(&c, &f.owner.id));
    let (r1, r2) = (refresh(&g1.id), refresh(&g2.id));
    let (a1, a2) = (
        access(&c, Some(&g1.id), Duration::hours(1)),
        access(&c, Some(&g2.id), Duration::hours(1)),
    );
    let (first, second) = both(
        store.redeem_authorization_code(&code.code_hash, &g1, Some(&r1), &a1),
        store.redeem_authorization_code(&code.code_hash, &g2, Some(&r2), &a2),
    )
    .await;
    let (first, second) = (ok(first, "redeem 1"), ok(second, "redeem 2"));
    assert!(
        first ^ second,
        "exactly one redemption wins: {first} {second}"
    );
    let (winner, winner_refresh, loser_refresh) = if first {
        (&g1, &r1, &r2)
    } else {
        (&g2, &r2, &r1)
    };

    let used = ok(store.get_authorization_code(&code.code_hash).await, "used");
    assert_eq!(used.grant_id.as_ref(), Some(&winner.id));
    assert_eq!(used.used_at, Some(winner.created_at));
    let found = ok(
        store.get_refresh_token(&winner_refresh.token_hash).await,
        "the winner's refresh token",
    );
    assert_eq!(found.grant, *winner);
    assert_eq!(found.token, *winner_refresh);
    not_found(
        store.get_refresh_token(&loser_refresh.token_hash).await,
        "the loser wrote nothing",
    );
    // A later redemption loses too.
    let late = grant(&c, &f.owner.id);
    let late_access = access(&c, Some(&late.id), Duration::hours(1));
    assert!(!ok(
        store
            .redeem_authorization_code(&code.code_hash, &late, None, &late_access)
            .await,
        "late redeem"
    ));
}

pub async fn a_refresh_token_rotates_once_and_a_revoked_grant_not_at_all(store: &dyn Store) {
    let f = create_fixture(store, "oauth-refresh").await;
    let c = client(&f.account.id);
    ok(store.create_oauth_client(&c).await, "create_oauth_client");
    let (g, r1, _) = started_grant(store, &c, &f.owner.id).await;

    let mut r2 = refresh(&g.id);
    r2.created_at = now() + Duration::seconds(1);
    let a2 = access(&c, Some(&g.id), Duration::hours(1));
    let mut r2_racer = refresh(&g.id);
    r2_racer.created_at = r2.created_at;
    let a2_racer = access(&c, Some(&g.id), Duration::hours(1));
    let (x, y) = both(
        store.rotate_refresh_token(&r1.token_hash, &r2, &a2),
        store.rotate_refresh_token(&r1.token_hash, &r2_racer, &a2_racer),
    )
    .await;
    let (x, y) = (ok(x, "rotate 1"), ok(y, "rotate 2"));
    assert!(x ^ y, "exactly one rotation wins: {x} {y}");
    let next = if x { &r2 } else { &r2_racer };

    let old = ok(store.get_refresh_token(&r1.token_hash).await, "old token");
    assert_eq!(old.token.used_at, Some(next.created_at));
    let current = ok(store.get_refresh_token(&next.token_hash).await, "new token");
    assert_eq!(current.token.used_at, None);

    ok(store.revoke_oauth_grant(&g.id, now()).await, "revoke");
    let revoked = ok(
        store.get_refresh_token(&next.token_hash).await,
        "after revoke",
    );
    assert!(revoked.grant.revoked_at.is_some());
    let r3 = refresh(&g.id);
    let a3 = access(&c, Some(&g.id), Duration::hours(1));
    assert!(
        !ok(
            store.rotate_refresh_token(&next.token_hash, &r3, &a3).await,
            "rotate after revoke"
        ),
        "a revoked grant's refresh token does not rotate"
    );
    not_found(
        store.get_refresh_token(&r3.token_hash).await,
        "nothing written",
    );
}

pub async fn revoking_a_grant_returns_its_unexpired_access_tokens(store: &dyn Store) {
    let f = create_fixture(store, "oauth-revoke").await;
    let c = client(&f.account.id);
    ok(store.create_oauth_client(&c).await, "create_oauth_client");
    let (g, r1, a1) = started_grant(store, &c, &f.owner.id).await;
    let (other, _, other_access) = started_grant(store, &c, &f.owner.id).await;
    let r2 = refresh(&g.id);
    let a2 = access(&c, Some(&g.id), Duration::hours(1));
    assert!(ok(
        store.rotate_refresh_token(&r1.token_hash, &r2, &a2).await,
        "rotate"
    ));
    let expired = access(&c, Some(&g.id), Duration::seconds(-10));
    ok(store.record_access_token(&expired).await, "record expired");
    let unrelated = access(&c, None, Duration::hours(1));
    ok(
        store.record_access_token(&unrelated).await,
        "record client token",
    );

    let mut denied = ok(store.revoke_oauth_grant(&g.id, now()).await, "revoke");
    denied.sort_by(|a, b| a.jti.cmp(&b.jti));
    let mut expected = vec![a1, a2];
    expected.sort_by(|a, b| a.jti.cmp(&b.jti));
    assert_eq!(denied, expected);
    // Revoking again still names them, for a node that missed the first time.
    assert_eq!(
        ok(store.revoke_oauth_grant(&g.id, now()).await, "again").len(),
        2
    );
    let untouched = ok(
        store.revoke_oauth_grant(&other.id, now()).await,
        "the other grant",
    );
    assert_eq!(untouched, vec![other_access]);
}

pub async fn deleting_a_consent_revokes_that_users_grants_to_that_client(store: &dyn Store) {
    let f = create_fixture(store, "oauth-consent").await;
    let c = client(&f.account.id);
    let c2 = client(&f.account.id);
    ok(store.create_oauth_client(&c).await, "create_oauth_client");
    ok(store.create_oauth_client(&c2).await, "create second client");
    let t = now();
    let consent = OAuthConsent {
        account_id: f.account.id.clone(),
        user_id: f.owner.id.clone(),
        client_id: c.id.clone(),
        scope: "read".into(),
        created_at: t,
        updated_at: t,
    };
    ok(store.upsert_oauth_consent(&consent).await, "upsert");
    let widened = OAuthConsent {
        scope: "read write".into(),
        created_at: t + Duration::seconds(5),
        updated_at: t + Duration::seconds(5),
        ..consent.clone()
    };
    ok(store.upsert_oauth_consent(&widened).await, "widen");
    let stored = ok(
        store.get_oauth_consent(&f.owner.id, &c.id).await,
        "get consent",
    );
    assert_eq!(
        stored,
        OAuthConsent {
            created_at: t,
            ..widened.clone()
        },
        "the scope and update time change, the creation time stays"
    );
    let second = OAuthConsent {
        client_id: c2.id.clone(),
        created_at: t + Duration::seconds(1),
        updated_at: t + Duration::seconds(1),
        ..consent.clone()
    };
    ok(store.upsert_oauth_consent(&second).await, "second consent");
    let listed = ok(store.list_oauth_consents(&f.owner.id).await, "list");
    assert_eq!(
        listed.iter().map(|c| &c.client_id).collect::<Vec<_>>(),
        vec![&c.id, &c2.id]
    );

    let (_, r, a) = started_grant(store, &c, &f.owner.id).await;
    let (_, r_other, _) = started_grant(store, &c2, &f.owner.id).await;
    let denied = ok(
        store.delete_oauth_consent(&f.owner.id, &c.id, now()).await,
        "delete consent",
    );
    assert_eq!(denied, vec![a]);
    assert!(ok(store.get_refresh_token(&r.token_hash).await, "r")
        .grant
        .revoked_at
        .is_some());
    assert!(ok(store.get_refresh_token(&r_other.token_hash).await, "r2")
        .grant
        .revoked_at
        .is_none());
    not_found(
        store.get_oauth_consent(&f.owner.id, &c.id).await,
        "deleted consent",
    );
    not_found(
        store.delete_oauth_consent(&f.owner.id, &c.id, now()).await,
        "deleted twice",
    );
}

pub async fn deleting_a_client_returns_its_unexpired_access_tokens(store: &dyn Store) {
    let f = create_fixture(store, "oauth-delete").await;
    let c = client(&f.account.id);
    ok(store.create_oauth_client(&c).await, "create_oauth_client");
    let (_, r, a) = started_grant(store, &c, &f.owner.id).await;
    let machine = access(&c, None, Duration::hours(1));
    ok(store.record_access_token(&machine).await, "record");
    let mut denied = ok(
        store.delete_oauth_client(&f.account.id, &c.id, now()).await,
        "delete",
    );
    denied.sort_by(|x, y| x.jti.cmp(&y.jti));
    let mut expected = vec![a, machine];
    expected.sort_by(|x, y| x.jti.cmp(&y.jti));
    assert_eq!(denied, expected);
    not_found(
        store.get_refresh_token(&r.token_hash).await,
        "its tokens are gone",
    );
}
