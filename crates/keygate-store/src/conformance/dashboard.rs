//! The dashboard's records: sign-ups without a key, users found by email, verified addresses,
//! sessions and one-time links.

use keygate_core::{AccountId, UserId};
use time::{Duration, OffsetDateTime};

use super::{create_fixture, new_account, new_user, not_found, now, ok, unique};
use crate::{EmailLink, KeyFilter, LinkPurpose, Role, Session, Store, StoreError};

pub async fn a_sign_up_stores_the_account_and_its_owner_without_a_key(store: &dyn Store) {
    let (mut account, owner, _) = new_account("signed-up");
    account.api_key_id = None;
    ok(
        store.create_account_with_owner(&account, &owner).await,
        "create_account_with_owner",
    );
    assert_eq!(
        ok(store.get_account(&account.id).await, "get_account"),
        account
    );
    assert_eq!(
        ok(store.get_user(&account.id, &owner.id).await, "get_user"),
        owner
    );
    let keys = ok(
        store
            .list_keys(
                Some(&account.id),
                KeyFilter::All,
                now(),
                &super::page(None, 10),
            )
            .await,
        "list_keys",
    );
    assert_eq!(keys.total, 0, "a sign-up makes no key");

    // The account name stays unique: the same name again stores nothing.
    let (mut again, other_owner, _) = new_account("unused");
    again.name = account.name.to_uppercase();
    assert!(matches!(
        store.create_account_with_owner(&again, &other_owner).await,
        Err(StoreError::Conflict("accounts_name"))
    ));
    not_found(
        store.get_user(&again.id, &other_owner.id).await,
        "the owner of a refused sign-up",
    );
}

pub async fn users_are_found_by_email_in_any_case_across_accounts(store: &dyn Store) {
    let a = create_fixture(store, "email-a").await;
    let b = create_fixture(store, "email-b").await;
    let address = format!("{}@Example.COM", unique("shared"));
    let mut first = new_user(&a.account.id, &unique("first"));
    first.email = address.clone();
    let mut second = new_user(&b.account.id, &unique("second"));
    second.email = address.to_lowercase();
    second.created_at = first.created_at + Duration::milliseconds(5);
    ok(store.create_user(&first).await, "create_user");
    ok(store.create_user(&second).await, "create_user");

    let found = ok(
        store.find_users_by_email(&address.to_uppercase(), 10).await,
        "find_users_by_email",
    );
    assert_eq!(
        found,
        vec![first.clone(), second],
        "oldest first, in any case"
    );
    let one = ok(
        store.find_users_by_email(&address, 1).await,
        "find_users_by_email with a limit",
    );
    assert_eq!(one, vec![first]);
    assert!(ok(
        store.find_users_by_email("nobody@example.com", 10).await,
        "find_users_by_email with an unknown address"
    )
    .is_empty());
}

pub async fn a_verified_address_is_recorded_and_cleared_when_it_changes(store: &dyn Store) {
    let f = create_fixture(store, "verified").await;
    assert_eq!(f.owner.email_verified_at, None);
    let at = now();
    ok(
        store
            .mark_email_verified(&f.account.id, &f.owner.id, at)
            .await,
        "mark_email_verified",
    );
    let user = ok(store.get_user(&f.account.id, &f.owner.id).await, "get_user");
    assert_eq!(user.email_verified_at, Some(at));

    // Changing anything but the address keeps it verified.
    let renamed = crate::User {
        first_name: "Renamed".into(),
        ..user.clone()
    };
    ok(store.update_user(&renamed).await, "update_user");
    let read = ok(store.get_user(&f.account.id, &f.owner.id).await, "get_user");
    assert_eq!(read.email_verified_at, Some(at));

    let moved = crate::User {
        email: "elsewhere@example.com".into(),
        ..read
    };
    ok(store.update_user(&moved).await, "update_user");
    let read = ok(store.get_user(&f.account.id, &f.owner.id).await, "get_user");
    assert_eq!(
        read.email_verified_at, None,
        "a new address is not verified"
    );

    not_found(
        store
            .mark_email_verified(&AccountId::generate(), &f.owner.id, at)
            .await,
        "mark_email_verified through another account",
    );
}

fn session(account: &AccountId, user: &UserId, expires_at: OffsetDateTime) -> Session {
    Session {
        token_hash: unique("session-hash"),
        account_id: account.clone(),
        user_id: user.clone(),
        created_at: now(),
        expires_at,
    }
}

pub async fn sessions_are_found_until_they_expire_and_end_on_logout(store: &dyn Store) {
    let f = create_fixture(store, "sessions").await;
    let t = now();
    let s = session(&f.account.id, &f.owner.id, t + Duration::hours(1));
    ok(store.create_session(&s).await, "create_session");
    assert_eq!(
        ok(store.find_session(&s.token_hash, t).await, "find_session"),
        s
    );
    not_found(
        store
            .find_session(&s.token_hash, t + Duration::hours(1))
            .await,
        "a session at its expiry",
    );
    not_found(
        store.find_session("no-such-hash", t).await,
        "an unknown session",
    );
    ok(store.delete_session(&s.token_hash).await, "delete_session");
    not_found(
        store.find_session(&s.token_hash, t).await,
        "a session after logout",
    );
    ok(
        store.delete_session(&s.token_hash).await,
        "deleting a deleted session",
    );
}

pub async fn ending_a_users_sessions_leaves_other_users_signed_in(store: &dyn Store) {
    let f = create_fixture(store, "end-sessions").await;
    let other = new_user(&f.account.id, &unique("colleague"));
    ok(store.create_user(&other).await, "create_user");
    let t = now();
    let later = t + Duration::hours(1);
    let mine = [
        session(&f.account.id, &f.owner.id, later),
        session(&f.account.id, &f.owner.id, later),
    ];
    let theirs = session(&f.account.id, &other.id, later);
    for s in mine.iter().chain([&theirs]) {
        ok(store.create_session(s).await, "create_session");
    }
    assert_eq!(
        ok(
            store.delete_user_sessions(&f.account.id, &f.owner.id).await,
            "delete_user_sessions"
        ),
        2
    );
    for s in &mine {
        not_found(
            store.find_session(&s.token_hash, t).await,
            "an ended session",
        );
    }
    ok(
        store.find_session(&theirs.token_hash, t).await,
        "another user's session",
    );

    // Deleting the user ends their sessions too.
    ok(
        store.delete_user(&f.account.id, &other.id).await,
        "delete_user",
    );
    not_found(
        store.find_session(&theirs.token_hash, t).await,
        "a deleted user's session",
    );
}

fn link(
    account: &AccountId,
    user: Option<&UserId>,
    purpose: LinkPurpose,
    expires_at: OffsetDateTime,
) -> EmailLink {
    EmailLink {
        token_hash: unique("link-hash"),
        purpose,
        account_id: account.clone(),
        user_id: user.cloned(),
        email: "someone@example.com".into(),
        role: (purpose == LinkPurpose::Invite).then_some(Role::Admin),
        created_by: user.cloned(),
        created_at: now(),
        expires_at,
        used_at: None,
    }
}

pub async fn a_mailed_link_is_used_once_and_never_after_expiry(store: &dyn Store) {
    let f = create_fixture(store, "links").await;
    let t = now();
    let later = t + Duration::hours(1);
    let reset = link(
        &f.account.id,
        Some(&f.owner.id),
        LinkPurpose::ResetPassword,
        later,
    );
    ok(store.create_email_link(&reset).await, "create_email_link");
    assert_eq!(
        ok(
            store
                .find_email_link(&reset.token_hash, LinkPurpose::ResetPassword, t)
                .await,
            "find_email_link"
        ),
        reset
    );
    not_found(
        store
            .use_email_link(&reset.token_hash, LinkPurpose::VerifyEmail, t)
            .await,
        "a link used for another purpose",
    );
    let used = ok(
        store
            .use_email_link(&reset.token_hash, LinkPurpose::ResetPassword, t)
            .await,
        "use_email_link",
    );
    assert_eq!(
        used,
        EmailLink {
            used_at: Some(t),
            ..reset.clone()
        }
    );
    not_found(
        store
            .use_email_link(&reset.token_hash, LinkPurpose::ResetPassword, t)
            .await,
        "a link used twice",
    );
    not_found(
        store
            .find_email_link(&reset.token_hash, LinkPurpose::ResetPassword, t)
            .await,
        "a used link",
    );

    let invite = link(&f.account.id, None, LinkPurpose::Invite, later);
    ok(store.create_email_link(&invite).await, "create_email_link");
    not_found(
        store
            .use_email_link(&invite.token_hash, LinkPurpose::Invite, later)
            .await,
        "a link at its expiry",
    );
    let (a, b) = super::both(
        store.use_email_link(&invite.token_hash, LinkPurpose::Invite, t),
        store.use_email_link(&invite.token_hash, LinkPurpose::Invite, t),
    )
    .await;
    assert!(
        a.is_ok() != b.is_ok(),
        "of two uses at once exactly one succeeds: {a:?} {b:?}"
    );
    let won = a.or(b).expect("one use succeeded");
    assert_eq!(won.role, Some(Role::Admin));
    assert_eq!(won.user_id, None);
}

pub async fn pruning_drops_expired_sessions_and_links_only(store: &dyn Store) {
    let f = create_fixture(store, "prune-dashboard").await;
    // Timestamps in 2001, which nothing else uses: pruning acts across the whole store.
    let t = OffsetDateTime::from_unix_timestamp(1_000_000_000).expect("a valid time");
    let expired = session(&f.account.id, &f.owner.id, t);
    let current = session(&f.account.id, &f.owner.id, t + Duration::days(1));
    let old_link = link(&f.account.id, None, LinkPurpose::Invite, t);
    for s in [&expired, &current] {
        ok(store.create_session(s).await, "create_session");
    }
    ok(
        store.create_email_link(&old_link).await,
        "create_email_link",
    );
    assert_eq!(
        ok(
            store.prune_dashboard(t + Duration::seconds(1)).await,
            "prune_dashboard"
        ),
        2
    );
    let before = t - Duration::days(1);
    not_found(
        store.find_session(&expired.token_hash, before).await,
        "a pruned session",
    );
    ok(
        store.find_session(&current.token_hash, before).await,
        "a current session",
    );
    not_found(
        store
            .find_email_link(&old_link.token_hash, LinkPurpose::Invite, before)
            .await,
        "a pruned link",
    );
}
