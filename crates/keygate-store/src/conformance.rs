//! The conformance suite: what every [`Store`] backend must do, written once against the trait
//! so SQLite and PostgreSQL cannot drift apart. A backend's test crate migrates an empty
//! database and calls [`run_all`]; each function can also be called on its own.
//!
//! The functions share that one database, so each makes its own accounts under unique names and
//! none assumes the tables are empty. They do assume that no one else writes to the database
//! while they run: the account listing checks exact totals, and the revocation feed checks read
//! back exactly the entries they published after the feed's latest id. Pruning deletes across
//! the whole feed, so its check works with timestamps in 2001 that nothing else uses. Timestamps
//! are built from whole milliseconds because that is what the backends keep.

mod dashboard;
pub mod oauth;
pub mod webhooks;

use std::fmt::Debug;
use std::future::{poll_fn, Future};
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::Poll;

use keygate_core::{key, AccountId, Environment, KeyHash, KeyId, Scope, UserId};
use serde_json::json;
use time::{Duration, OffsetDateTime};

use crate::{
    Account, AccountStatus, ApiKey, AuditEntry, AuditFilter, CredentialDigest, CreditEntry,
    CreditKind, CreditOutcome, KeyFilter, KeyStatus, PageRequest, PasswordVerifiers, Revocation,
    RevocationKind, Role, SigningKeyRecord, Store, StoreError, StoreResult, UsageIncrement,
    UsageRow, User,
};

/// Runs every check below, one after the other, on one migrated store.
pub async fn run_all(store: &dyn Store) {
    the_store_names_its_backend_and_answers_a_ping(store).await;

    accounts_are_created_with_their_owner_and_first_key(store).await;
    accounts_are_found_by_name_in_any_case(store).await;
    account_updates_are_persisted(store).await;
    account_names_are_unique_in_any_case(store).await;
    a_failed_account_creation_leaves_nothing_behind(store).await;
    deleting_an_account_deletes_its_users_keys_and_usage(store).await;
    accounts_are_listed_in_creation_order_in_pages(store).await;
    an_accounts_own_key_is_persisted_and_read_back_everywhere(store).await;

    users_are_created_and_found_by_username_in_any_case(store).await;
    user_updates_are_persisted(store).await;
    usernames_are_unique_within_an_account_only(store).await;
    users_of_another_account_are_not_found(store).await;
    deleted_users_are_gone(store).await;
    users_are_listed_in_creation_order_in_pages(store).await;
    users_are_found_by_credential_lookup_within_their_account_only(store).await;

    keys_are_read_only_through_their_own_account(store).await;
    operator_keys_belong_to_no_account(store).await;
    a_key_is_found_by_its_hash_with_its_accounts_current_state(store).await;
    key_hashes_are_unique(store).await;
    keys_are_created_in_batches_all_or_nothing(store).await;
    keys_are_listed_under_the_status_they_have_at_the_given_time(store).await;
    revoked_keys_are_listed_only_under_the_revoked_filter(store).await;
    keys_are_listed_in_creation_order_in_pages(store).await;
    key_updates_persist_every_mutable_field(store).await;
    updating_a_key_keeps_its_last_use(store).await;
    rolling_a_key_creates_the_new_one_and_updates_the_old_together(store).await;
    a_failed_roll_changes_nothing(store).await;
    a_key_is_found_by_its_id_with_its_accounts_current_state(store).await;

    usage_accumulates_per_key_and_day_across_batches(store).await;
    last_use_only_moves_forward(store).await;
    last_use_is_the_latest_days(store).await;
    usage_is_reported_for_the_requested_days_and_account_only(store).await;
    usage_batches_flushed_at_once_by_several_nodes_all_count(store).await;
    a_large_flush_counts_every_key_and_moves_last_use_forward_only(store).await;

    grants_and_debits_change_the_balance_and_the_ledger_together(store).await;
    a_debit_larger_than_the_balance_changes_nothing(store).await;
    an_idempotency_key_applies_once(store).await;
    concurrent_debits_never_take_the_balance_below_zero(store).await;
    the_monthly_refill_tops_up_once_per_period_and_never_lowers(store).await;

    audit_entries_are_read_back_newest_first_in_pages(store).await;
    audit_entries_are_filtered_by_account_action_actor_object_and_time(store).await;
    audit_entries_older_than_the_cutoff_are_purged(store).await;

    signing_keys_are_listed_in_creation_order_with_every_field(store).await;
    rotation_retires_the_older_keys_only_and_keeps_earlier_retirements(store).await;

    webhooks::run_all(store).await;
    oauth::run_all(store).await;

    the_revocation_feed_hands_out_entries_in_id_order_after_a_cursor(store).await;
    only_unexpired_token_revocations_are_in_force(store).await;
    dashboard::a_sign_up_stores_the_account_and_its_owner_without_a_key(store).await;
    dashboard::users_are_found_by_email_in_any_case_across_accounts(store).await;
    dashboard::a_verified_address_is_recorded_and_cleared_when_it_changes(store).await;
    dashboard::sessions_are_found_until_they_expire_and_end_on_logout(store).await;
    dashboard::ending_a_users_sessions_leaves_other_users_signed_in(store).await;
    dashboard::a_mailed_link_is_used_once_and_never_after_expiry(store).await;
    dashboard::pruning_drops_expired_sessions_and_links_only(store).await;

    // Last: it deletes across the whole feed (though only entries from 2001).
    pruning_drops_expired_entries_and_old_ones_without_expiry(store).await;
}

// ---------------------------------------------------------------------------------------------
// Store.

pub async fn the_store_names_its_backend_and_answers_a_ping(store: &dyn Store) {
    assert!(!store.backend_name().is_empty());
    ok(store.ping().await, "ping");
}

// ---------------------------------------------------------------------------------------------
// Accounts.

pub async fn accounts_are_created_with_their_owner_and_first_key(store: &dyn Store) {
    let f = create_fixture(store, "created").await;

    assert_eq!(
        ok(store.get_account(&f.account.id).await, "get_account"),
        f.account
    );
    assert_eq!(
        ok(store.get_user(&f.account.id, &f.owner.id).await, "get_user"),
        f.owner
    );
    assert_eq!(
        ok(
            store.get_key(Some(&f.account.id), &f.key.id).await,
            "get_key"
        ),
        f.key
    );
    not_found(
        store.get_account(&AccountId::generate()).await,
        "get_account with an unknown id",
    );
}

pub async fn accounts_are_found_by_name_in_any_case(store: &dyn Store) {
    let f = create_fixture(store, "Found-By-Name").await;

    for name in [
        f.account.name.clone(),
        f.account.name.to_lowercase(),
        f.account.name.to_uppercase(),
    ] {
        assert_eq!(
            ok(
                store.find_account_by_name(&name).await,
                "find_account_by_name"
            ),
            f.account,
            "looking up {name:?}"
        );
    }
    not_found(
        store.find_account_by_name(&unique("no-such-account")).await,
        "find_account_by_name with an unknown name",
    );
}

pub async fn account_updates_are_persisted(store: &dyn Store) {
    let f = create_fixture(store, "before-update").await;
    let old_name = f.account.name.clone();

    let mut changed = f.account.clone();
    changed.name = unique("After-Update");
    changed.email = "billing@example.org".into();
    changed.plan = "enterprise".into();
    changed.status = AccountStatus::Disabled;
    changed.updated_at = f.account.updated_at + Duration::minutes(5);
    ok(store.update_account(&changed).await, "update_account");

    assert_eq!(
        ok(store.get_account(&changed.id).await, "get_account"),
        changed
    );
    assert_eq!(
        ok(
            store
                .find_account_by_name(&changed.name.to_lowercase())
                .await,
            "find_account_by_name with the new name"
        ),
        changed
    );
    not_found(
        store.find_account_by_name(&old_name).await,
        "find_account_by_name with the old name",
    );

    let mut ghost = changed.clone();
    ghost.id = AccountId::generate();
    ghost.name = unique("ghost");
    not_found(
        store.update_account(&ghost).await,
        "update_account of an unknown account",
    );
}

pub async fn account_names_are_unique_in_any_case(store: &dyn Store) {
    let first = create_fixture(store, "Unique-Name").await;

    let (mut account, owner, key) = new_account("unused");
    account.name = first.account.name.to_uppercase();
    conflict(
        store.create_account(&account, &owner, &key).await,
        "accounts_name",
        "create_account with a name taken in another case",
    );
    not_found(
        store.get_account(&account.id).await,
        "get_account of the refused account",
    );

    let second = create_fixture(store, "other-name").await;
    let mut renamed = second.account.clone();
    renamed.name = first.account.name.to_lowercase();
    conflict(
        store.update_account(&renamed).await,
        "accounts_name",
        "update_account to a name taken in another case",
    );
    assert_eq!(
        ok(store.get_account(&second.account.id).await, "get_account"),
        second.account
    );
}

pub async fn a_failed_account_creation_leaves_nothing_behind(store: &dyn Store) {
    let existing = create_fixture(store, "existing").await;

    // The first key reuses a stored hash, so the last insert of the transaction fails.
    let (account, owner, mut key) = new_account("half-made");
    key.hash = existing.key.hash;
    conflict(
        store.create_account(&account, &owner, &key).await,
        "api_keys_hash",
        "create_account whose first key reuses a hash",
    );
    not_found(
        store.get_account(&account.id).await,
        "get_account of the refused account",
    );
    not_found(
        store.find_account_by_name(&account.name).await,
        "find_account_by_name of the refused account",
    );
    not_found(
        store.get_user(&account.id, &owner.id).await,
        "get_user of the refused account's owner",
    );
    let found = ok(
        store.find_key_by_hash(&existing.key.hash).await,
        "find_key_by_hash",
    );
    assert_eq!(found.key, existing.key);
}

pub async fn deleting_an_account_deletes_its_users_keys_and_usage(store: &dyn Store) {
    let doomed = create_fixture(store, "doomed").await;
    let bystander = create_fixture(store, "bystander").await;
    let user = new_user(&doomed.account.id, &unique("member"));
    ok(store.create_user(&user).await, "create_user");
    let second_key = new_key(Some(&doomed.account.id), Some(&user.id), "second");
    ok(store.create_key(&second_key).await, "create_key");
    let day = 19_000;
    let t = now();
    ok(
        store
            .record_usage(&[
                usage(&doomed.key, day, 3, t),
                usage(&bystander.key, day, 4, t),
            ])
            .await,
        "record_usage",
    );

    ok(
        store.delete_account(&doomed.account.id).await,
        "delete_account",
    );

    let id = &doomed.account.id;
    not_found(store.get_account(id).await, "get_account after delete");
    not_found(
        store.find_account_by_name(&doomed.account.name).await,
        "find_account_by_name after delete",
    );
    for u in [&doomed.owner, &user] {
        not_found(store.get_user(id, &u.id).await, "get_user after delete");
    }
    for k in [&doomed.key, &second_key] {
        not_found(store.get_key(Some(id), &k.id).await, "get_key after delete");
        not_found(
            store.find_key_by_hash(&k.hash).await,
            "find_key_by_hash after delete",
        );
    }
    let users = ok(store.list_users(id, &page(None, 10)).await, "list_users");
    assert_eq!((users.items.len(), users.total), (0, 0));
    let keys = ok(
        store
            .list_keys(Some(id), KeyFilter::All, now(), &page(None, 10))
            .await,
        "list_keys",
    );
    assert_eq!((keys.items.len(), keys.total), (0, 0));
    assert_eq!(
        ok(store.usage_by_day(id, day, day).await, "usage_by_day"),
        vec![]
    );
    not_found(store.delete_account(id).await, "delete_account twice");

    // Nothing of the other account went with it.
    assert_eq!(
        ok(
            store.get_account(&bystander.account.id).await,
            "get_account"
        ),
        bystander.account
    );
    assert_eq!(
        ok(
            store.find_key_by_hash(&bystander.key.hash).await,
            "find_key_by_hash"
        )
        .key,
        ApiKey {
            last_used_at: Some(t),
            ..bystander.key.clone()
        }
    );
    assert_eq!(
        ok(
            store.usage_by_day(&bystander.account.id, day, day).await,
            "usage_by_day"
        ),
        vec![row(&bystander.key, day, 4)]
    );
}

pub async fn accounts_are_listed_in_creation_order_in_pages(store: &dyn Store) {
    // Ids sort by creation time, so everything made after the marker follows it in the listing.
    let marker = create_fixture(store, "page-marker").await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(
            create_fixture(store, &format!("paged-{i}"))
                .await
                .account
                .id,
        );
    }
    let total = ok(store.list_accounts(&page(None, 1)).await, "list_accounts").total;
    assert!(total >= 6, "total {total} counts every account");

    let mut after = Some(marker.account.id.to_string());
    let mut seen = Vec::new();
    for expected_len in [2, 2, 1] {
        let p = ok(
            store.list_accounts(&page(after.as_deref(), 2)).await,
            "list_accounts",
        );
        assert_eq!(p.items.len(), expected_len);
        assert_eq!(p.total, total, "the total counts all pages");
        assert_eq!(p.has_more, expected_len == 2);
        seen.extend(p.items.iter().map(|a| a.id.clone()));
        after = p.items.last().map(|a| a.id.to_string());
    }
    assert_eq!(seen, ids);

    let first = ok(store.list_accounts(&page(None, 1)).await, "list_accounts");
    assert_eq!(first.items.len(), 1);
    assert!(first.has_more);
    let all = ok(
        store.list_accounts(&page(None, total as u32)).await,
        "list_accounts",
    );
    assert_eq!(all.items.len() as u64, total);
    assert!(!all.has_more);
    assert!(all.items.windows(2).all(|w| w[0].id < w[1].id));

    let past_the_end = ok(
        store.list_accounts(&page(Some(ids[4].as_str()), 2)).await,
        "list_accounts",
    );
    assert!(past_the_end.items.is_empty());
    assert!(!past_the_end.has_more);
    assert_eq!(past_the_end.total, total);
}

pub async fn an_accounts_own_key_is_persisted_and_read_back_everywhere(store: &dyn Store) {
    // Created with its own key (as every fixture is) and without one.
    let f = create_fixture(store, "own-key").await;
    assert!(f.account.api_key_id.is_some());
    expect_account_everywhere(store, &f.account, &f.key, "created with its own key").await;

    let (mut bare, owner, key) = new_account("no-own-key");
    bare.api_key_id = None;
    ok(
        store.create_account(&bare, &owner, &key).await,
        "create_account without an own key",
    );
    expect_account_everywhere(store, &bare, &key, "created without an own key").await;

    // Re-creating the account's key points it at the new one; the other account keeps its own.
    let recreated = new_key(Some(&f.account.id), Some(&f.owner.id), "re-created");
    ok(store.create_key(&recreated).await, "create_key");
    let mut moved = f.account.clone();
    moved.api_key_id = Some(recreated.id.clone());
    moved.updated_at = f.account.updated_at + Duration::seconds(1);
    ok(store.update_account(&moved).await, "update_account");
    expect_account_everywhere(store, &moved, &f.key, "after its key was re-created").await;
    expect_account_everywhere(store, &bare, &key, "beside an update of another account").await;

    // Set by an update, then cleared by one.
    let mut set = bare.clone();
    set.api_key_id = Some(key.id.clone());
    set.updated_at = bare.updated_at + Duration::seconds(1);
    ok(store.update_account(&set).await, "update_account");
    expect_account_everywhere(store, &set, &key, "after its own key was set").await;

    let mut cleared = moved.clone();
    cleared.api_key_id = None;
    cleared.updated_at = moved.updated_at + Duration::seconds(1);
    ok(store.update_account(&cleared).await, "update_account");
    expect_account_everywhere(store, &cleared, &recreated, "after its own key was cleared").await;
}

/// Every read that returns an account returns `expected`: by id, by name, in the listing and
/// joined to `key`.
async fn expect_account_everywhere(
    store: &dyn Store,
    expected: &Account,
    key: &ApiKey,
    when: &str,
) {
    assert_eq!(
        ok(store.get_account(&expected.id).await, "get_account"),
        *expected,
        "get_account {when}"
    );
    assert_eq!(
        ok(
            store.find_account_by_name(&expected.name).await,
            "find_account_by_name"
        ),
        *expected,
        "find_account_by_name {when}"
    );
    let listed = ok(
        store.list_accounts(&page(None, 100_000)).await,
        "list_accounts",
    );
    assert_eq!(
        listed.items.iter().find(|a| a.id == expected.id),
        Some(expected),
        "list_accounts {when}"
    );
    assert_eq!(
        ok(store.find_key_by_hash(&key.hash).await, "find_key_by_hash")
            .account
            .as_deref(),
        Some(expected),
        "find_key_by_hash {when}"
    );
    assert_eq!(
        ok(store.find_key_by_id(&key.id).await, "find_key_by_id")
            .account
            .as_deref(),
        Some(expected),
        "find_key_by_id {when}"
    );
}

// ---------------------------------------------------------------------------------------------
// Users.

pub async fn users_are_created_and_found_by_username_in_any_case(store: &dyn Store) {
    let f = create_fixture(store, "users").await;
    let user = new_user(&f.account.id, &unique("jane.doe"));
    ok(store.create_user(&user).await, "create_user");

    assert_eq!(
        ok(store.get_user(&f.account.id, &user.id).await, "get_user"),
        user
    );
    for name in [user.username.clone(), user.username.to_uppercase()] {
        assert_eq!(
            ok(
                store.find_user_by_username(&f.account.id, &name).await,
                "find_user_by_username"
            ),
            user,
            "looking up {name:?}"
        );
    }
    not_found(
        store.get_user(&f.account.id, &UserId::generate()).await,
        "get_user with an unknown id",
    );
    not_found(
        store
            .find_user_by_username(&f.account.id, "nobody-by-this-name")
            .await,
        "find_user_by_username with an unknown name",
    );
}

pub async fn user_updates_are_persisted(store: &dyn Store) {
    let f = create_fixture(store, "user-update").await;
    let user = new_user(&f.account.id, &unique("before"));
    ok(store.create_user(&user).await, "create_user");

    let mut changed = user.clone();
    changed.email = "renamed@example.org".into();
    changed.username = unique("after");
    changed.first_name = "Renée".into();
    changed.last_name = "O'Brien".into();
    changed.role = Role::Admin;
    changed.verifiers = PasswordVerifiers {
        password: Some("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into()),
        md5: None,
        sha1: Some("$argon2id$v=19$m=19456,t=2,p=1$c2FsdDI$aGFzaDI".into()),
    };
    changed.updated_at = user.updated_at + Duration::seconds(30);
    ok(store.update_user(&changed).await, "update_user");

    assert_eq!(
        ok(store.get_user(&f.account.id, &user.id).await, "get_user"),
        changed
    );
    assert_eq!(
        ok(
            store
                .find_user_by_username(&f.account.id, &changed.username)
                .await,
            "find_user_by_username with the new name"
        ),
        changed
    );
    not_found(
        store
            .find_user_by_username(&f.account.id, &user.username)
            .await,
        "find_user_by_username with the old name",
    );

    let mut ghost = changed.clone();
    ghost.id = UserId::generate();
    not_found(
        store.update_user(&ghost).await,
        "update_user of an unknown user",
    );
}

pub async fn usernames_are_unique_within_an_account_only(store: &dyn Store) {
    let a = create_fixture(store, "usernames-a").await;
    let b = create_fixture(store, "usernames-b").await;
    let name = unique("shared.name");
    let user = new_user(&a.account.id, &name);
    ok(store.create_user(&user).await, "create_user");

    let twin = new_user(&a.account.id, &name.to_uppercase());
    conflict(
        store.create_user(&twin).await,
        "users_username",
        "create_user with a username taken in another case",
    );
    not_found(
        store.get_user(&a.account.id, &twin.id).await,
        "get_user of the refused user",
    );

    let elsewhere = new_user(&b.account.id, &name);
    ok(
        store.create_user(&elsewhere).await,
        "create_user with the same username in another account",
    );
    assert_eq!(
        ok(
            store.find_user_by_username(&b.account.id, &name).await,
            "find_user_by_username"
        ),
        elsewhere
    );
    assert_eq!(
        ok(
            store.find_user_by_username(&a.account.id, &name).await,
            "find_user_by_username"
        ),
        user
    );

    let mut renamed = a.owner.clone();
    renamed.username = name.clone();
    conflict(
        store.update_user(&renamed).await,
        "users_username",
        "update_user to a taken username",
    );
    assert_eq!(
        ok(store.get_user(&a.account.id, &a.owner.id).await, "get_user"),
        a.owner
    );
}

pub async fn users_of_another_account_are_not_found(store: &dyn Store) {
    let a = create_fixture(store, "owner-a").await;
    let b = create_fixture(store, "owner-b").await;
    let user = new_user(&a.account.id, &unique("private"));
    ok(store.create_user(&user).await, "create_user");

    not_found(
        store.get_user(&b.account.id, &user.id).await,
        "get_user through another account",
    );
    not_found(
        store
            .find_user_by_username(&b.account.id, &user.username)
            .await,
        "find_user_by_username through another account",
    );
    let mut moved = user.clone();
    moved.account_id = b.account.id.clone();
    moved.email = "hijacked@example.org".into();
    not_found(
        store.update_user(&moved).await,
        "update_user through another account",
    );
    not_found(
        store.delete_user(&b.account.id, &user.id).await,
        "delete_user through another account",
    );
    assert_eq!(
        ok(store.get_user(&a.account.id, &user.id).await, "get_user"),
        user
    );
}

pub async fn deleted_users_are_gone(store: &dyn Store) {
    let f = create_fixture(store, "user-delete").await;
    let user = new_user(&f.account.id, &unique("leaving"));
    ok(store.create_user(&user).await, "create_user");

    ok(
        store.delete_user(&f.account.id, &user.id).await,
        "delete_user",
    );
    not_found(
        store.get_user(&f.account.id, &user.id).await,
        "get_user after delete",
    );
    not_found(
        store
            .find_user_by_username(&f.account.id, &user.username)
            .await,
        "find_user_by_username after delete",
    );
    not_found(
        store.delete_user(&f.account.id, &user.id).await,
        "delete_user twice",
    );
    assert_eq!(
        ok(store.get_user(&f.account.id, &f.owner.id).await, "get_user"),
        f.owner
    );

    // The username is free again.
    let successor = new_user(&f.account.id, &user.username);
    ok(
        store.create_user(&successor).await,
        "create_user with a freed username",
    );
}

pub async fn users_are_listed_in_creation_order_in_pages(store: &dyn Store) {
    let f = create_fixture(store, "user-list").await;
    let other = create_fixture(store, "user-list-other").await;
    let mut expected = vec![f.owner.clone()];
    for i in 0..4 {
        let user = new_user(&f.account.id, &unique(&format!("member{i}")));
        ok(store.create_user(&user).await, "create_user");
        expected.push(user);
    }
    ok(
        store
            .create_user(&new_user(&other.account.id, &unique("not-listed")))
            .await,
        "create_user",
    );

    let mut after: Option<String> = None;
    let mut seen = Vec::new();
    for expected_len in [2, 2, 1] {
        let p = ok(
            store
                .list_users(&f.account.id, &page(after.as_deref(), 2))
                .await,
            "list_users",
        );
        assert_eq!(p.items.len(), expected_len);
        assert_eq!(p.total, 5);
        assert_eq!(p.has_more, expected_len == 2);
        after = p.items.last().map(|u| u.id.to_string());
        seen.extend(p.items);
    }
    assert_eq!(seen, expected);

    let all = ok(
        store.list_users(&f.account.id, &page(None, 100)).await,
        "list_users",
    );
    assert_eq!(all.items, expected);
    assert!(!all.has_more);
}

pub async fn users_are_found_by_credential_lookup_within_their_account_only(store: &dyn Store) {
    let a = create_fixture(store, "credential-a").await;
    let b = create_fixture(store, "credential-b").await;
    let c = create_fixture(store, "credential-c").await;
    let (md5, sha1) = (unique("md5-lookup"), unique("sha1-lookup"));
    let with_lookups = |account: &AccountId, label: &str, md5: &str, sha1: &str| {
        let mut user = new_user(account, &unique(label));
        user.verifiers.md5 = Some(md5.to_owned());
        user.verifiers.sha1 = Some(sha1.to_owned());
        user
    };
    // A neighbour in the same account, made first, with lookup values of its own.
    let neighbour = with_lookups(
        &a.account.id,
        "neighbour",
        &unique("md5-other"),
        &unique("sha1-other"),
    );
    let user = with_lookups(&a.account.id, "credential-user", &md5, &sha1);
    // Another account's user with the very same lookup values (the same password there).
    let twin = with_lookups(&b.account.id, "credential-twin", &md5, &sha1);
    for u in [&neighbour, &user, &twin] {
        ok(store.create_user(u).await, "create_user");
    }
    let find = |account: &AccountId, digest: CredentialDigest, lookup: &str| {
        let (account, lookup) = (account.clone(), lookup.to_owned());
        async move {
            store
                .find_user_by_credential(&account, digest, &lookup)
                .await
        }
    };

    for (account, expected) in [(&a.account.id, &user), (&b.account.id, &twin)] {
        for (digest, lookup) in [
            (CredentialDigest::Md5, &md5),
            (CredentialDigest::Sha1, &sha1),
        ] {
            assert_eq!(
                ok(
                    find(account, digest, lookup).await,
                    "find_user_by_credential"
                ),
                *expected,
                "{digest:?} in account {account}"
            );
        }
    }
    for (digest, lookup) in [
        (CredentialDigest::Md5, neighbour.verifiers.md5.as_deref()),
        (CredentialDigest::Sha1, neighbour.verifiers.sha1.as_deref()),
    ] {
        let lookup = lookup.expect("the neighbour has both lookup values");
        assert_eq!(
            ok(
                find(&a.account.id, digest, lookup).await,
                "find_user_by_credential"
            ),
            neighbour,
            "{digest:?} of the neighbour"
        );
    }

    not_found(
        find(&c.account.id, CredentialDigest::Md5, &md5).await,
        "find_user_by_credential (MD5) in an account without that user",
    );
    not_found(
        find(&c.account.id, CredentialDigest::Sha1, &sha1).await,
        "find_user_by_credential (SHA-1) in an account without that user",
    );
    // Each digest is looked up among its own kind of value only.
    not_found(
        find(&a.account.id, CredentialDigest::Sha1, &md5).await,
        "find_user_by_credential (SHA-1) with an MD5 lookup value",
    );
    not_found(
        find(&a.account.id, CredentialDigest::Md5, &sha1).await,
        "find_user_by_credential (MD5) with a SHA-1 lookup value",
    );
    not_found(
        find(&a.account.id, CredentialDigest::Md5, &unique("unknown")).await,
        "find_user_by_credential with an unknown lookup value",
    );

    // A password change moves the lookups; the other account's user is untouched.
    let mut changed = user.clone();
    changed.verifiers.md5 = Some(unique("md5-new"));
    changed.verifiers.sha1 = None;
    changed.updated_at = user.updated_at + Duration::seconds(1);
    ok(store.update_user(&changed).await, "update_user");
    let new_md5 = changed.verifiers.md5.clone().unwrap_or_default();
    assert_eq!(
        ok(
            find(&a.account.id, CredentialDigest::Md5, &new_md5).await,
            "find_user_by_credential with the new value"
        ),
        changed
    );
    not_found(
        find(&a.account.id, CredentialDigest::Md5, &md5).await,
        "find_user_by_credential with the old MD5 value",
    );
    not_found(
        find(&a.account.id, CredentialDigest::Sha1, &sha1).await,
        "find_user_by_credential with a cleared SHA-1 value",
    );
    assert_eq!(
        ok(
            find(&b.account.id, CredentialDigest::Md5, &md5).await,
            "find_user_by_credential"
        ),
        twin
    );

    ok(
        store.delete_user(&b.account.id, &twin.id).await,
        "delete_user",
    );
    not_found(
        find(&b.account.id, CredentialDigest::Md5, &md5).await,
        "find_user_by_credential of a deleted user",
    );
}

// ---------------------------------------------------------------------------------------------
// Keys.

pub async fn keys_are_read_only_through_their_own_account(store: &dyn Store) {
    let a = create_fixture(store, "keys-a").await;
    let b = create_fixture(store, "keys-b").await;
    let key = new_key(Some(&a.account.id), Some(&a.owner.id), "mine");
    ok(store.create_key(&key).await, "create_key");

    assert_eq!(
        ok(store.get_key(Some(&a.account.id), &key.id).await, "get_key"),
        key
    );
    not_found(
        store.get_key(Some(&b.account.id), &key.id).await,
        "get_key through another account",
    );
    not_found(
        store.get_key(None, &key.id).await,
        "get_key of an account's key as an operator key",
    );
    not_found(
        store.get_key(Some(&a.account.id), &KeyId::generate()).await,
        "get_key with an unknown id",
    );
}

pub async fn operator_keys_belong_to_no_account(store: &dyn Store) {
    let f = create_fixture(store, "beside-operator").await;
    let key = new_key(None, None, "operator");
    ok(store.create_key(&key).await, "create_key");

    assert_eq!(ok(store.get_key(None, &key.id).await, "get_key"), key);
    not_found(
        store.get_key(Some(&f.account.id), &key.id).await,
        "get_key of an operator key through an account",
    );
    let found = ok(store.find_key_by_hash(&key.hash).await, "find_key_by_hash");
    assert_eq!(found.key, key);
    assert_eq!(found.account, None);

    let operators = ok(
        store
            .list_keys(None, KeyFilter::All, now(), &page(None, 100_000))
            .await,
        "list_keys of operator keys",
    );
    assert!(operators.items.contains(&key));
    assert!(operators.items.iter().all(|k| k.account_id.is_none()));
    let mine = ok(
        store
            .list_keys(Some(&f.account.id), KeyFilter::All, now(), &page(None, 100))
            .await,
        "list_keys",
    );
    assert_eq!(mine.items, vec![f.key.clone()]);
}

pub async fn a_key_is_found_by_its_hash_with_its_accounts_current_state(store: &dyn Store) {
    let f = create_fixture(store, "by-hash").await;

    let found = ok(
        store.find_key_by_hash(&f.key.hash).await,
        "find_key_by_hash",
    );
    assert_eq!(found.key, f.key);
    assert_eq!(found.account.as_deref(), Some(&f.account));

    // Authentication must see a disabled account without any change to the key.
    let mut disabled = f.account.clone();
    disabled.status = AccountStatus::Disabled;
    disabled.updated_at = f.account.updated_at + Duration::seconds(1);
    ok(store.update_account(&disabled).await, "update_account");
    let found = ok(
        store.find_key_by_hash(&f.key.hash).await,
        "find_key_by_hash",
    );
    assert_eq!(found.account.as_deref(), Some(&disabled));

    not_found(
        store
            .find_key_by_hash(&KeyHash::of("ak_live_unknown"))
            .await,
        "find_key_by_hash with an unknown hash",
    );
}

pub async fn key_hashes_are_unique(store: &dyn Store) {
    let f = create_fixture(store, "hashes").await;
    let mut copy = new_key(Some(&f.account.id), None, "copy");
    copy.hash = f.key.hash;
    conflict(
        store.create_key(&copy).await,
        "api_keys_hash",
        "create_key with a stored hash",
    );
    not_found(
        store.get_key(Some(&f.account.id), &copy.id).await,
        "get_key of the refused key",
    );
}

pub async fn keys_are_created_in_batches_all_or_nothing(store: &dyn Store) {
    let f = create_fixture(store, "batch").await;
    ok(store.create_keys(&[]).await, "create_keys of no key");
    // More than one multi-row statement's worth, so a backend that chunks is checked too.
    let batch: Vec<ApiKey> = (0..1_203)
        .map(|i| {
            new_key(
                Some(&f.account.id),
                Some(&f.owner.id),
                &format!("batch-{i}"),
            )
        })
        .collect();
    ok(store.create_keys(&batch).await, "create_keys");
    for k in [&batch[0], &batch[600], &batch[1_202]] {
        let found = ok(store.find_key_by_hash(&k.hash).await, "find_key_by_hash");
        assert_eq!(&found.key, k);
        assert_eq!(found.account.as_deref(), Some(&f.account));
    }
    let listed = ok(
        store
            .list_keys(Some(&f.account.id), KeyFilter::All, now(), &page(None, 1))
            .await,
        "list_keys",
    );
    assert_eq!(listed.total, 1_204, "the first key and the batch");

    // A batch with one stored hash in its last statement stores none of its keys.
    let mut refused: Vec<ApiKey> = (0..601)
        .map(|i| new_key(Some(&f.account.id), None, &format!("refused-{i}")))
        .collect();
    refused[600].hash = f.key.hash;
    conflict(
        store.create_keys(&refused).await,
        "api_keys_hash",
        "create_keys with a stored hash",
    );
    not_found(
        store.find_key_by_hash(&refused[0].hash).await,
        "find_key_by_hash of a key from the refused batch",
    );
    let listed = ok(
        store
            .list_keys(Some(&f.account.id), KeyFilter::All, now(), &page(None, 1))
            .await,
        "list_keys",
    );
    assert_eq!(listed.total, 1_204, "nothing of the refused batch");
}

pub async fn keys_are_listed_under_the_status_they_have_at_the_given_time(store: &dyn Store) {
    let f = create_fixture(store, "statuses").await;
    let t = now();
    let hour = Duration::hours(1);
    let id = Some(&f.account.id);

    let mut expiring_later = new_key(id, None, "expiring later");
    expiring_later.expires_at = Some(t + hour);
    let mut expired = new_key(id, None, "expired");
    expired.expires_at = Some(t - hour);
    let mut expiring_now = new_key(id, None, "expiring exactly now");
    expiring_now.expires_at = Some(t);
    let mut revoked = new_key(id, None, "revoked");
    revoked.revoked_at = Some(t - hour);
    let mut revoked_and_expired = new_key(id, None, "revoked and expired");
    revoked_and_expired.revoked_at = Some(t - hour);
    revoked_and_expired.expires_at = Some(t - hour);
    let mut revoked_later = new_key(id, None, "revoked at a later time");
    revoked_later.revoked_at = Some(t + hour);
    let made = [
        &expiring_later,
        &expired,
        &expiring_now,
        &revoked,
        &revoked_and_expired,
        &revoked_later,
    ];
    for k in made {
        ok(store.create_key(k).await, "create_key");
    }
    let mut all = vec![f.key.clone()];
    all.extend(made.into_iter().cloned());

    // At `t`, and an hour and a half later, when the later expiry and revocation have passed.
    for at in [t, t + Duration::minutes(90)] {
        for (filter, status) in [
            (KeyFilter::All, None),
            (KeyFilter::Active, Some(KeyStatus::Active)),
            (KeyFilter::Revoked, Some(KeyStatus::Revoked)),
            (KeyFilter::Expired, Some(KeyStatus::Expired)),
        ] {
            let expected: Vec<ApiKey> = all
                .iter()
                .filter(|k| status.is_none_or(|s| k.status_at(at) == s))
                .cloned()
                .collect();
            let listed = ok(
                store.list_keys(id, filter, at, &page(None, 100)).await,
                "list_keys",
            );
            let names = |keys: &[ApiKey]| keys.iter().map(|k| k.name.clone()).collect::<Vec<_>>();
            assert_eq!(names(&listed.items), names(&expected), "{filter:?} at {at}");
            assert_eq!(listed.items, expected, "{filter:?} at {at}");
            assert_eq!(listed.total, expected.len() as u64, "{filter:?} at {at}");
        }
    }

    // Spelled out, so the expectations above cannot all be wrong together.
    let expired_now = ok(
        store
            .list_keys(id, KeyFilter::Expired, t, &page(None, 100))
            .await,
        "list_keys",
    );
    assert_eq!(
        expired_now.items.iter().map(|k| &k.id).collect::<Vec<_>>(),
        vec![&expired.id, &expiring_now.id]
    );
}

pub async fn revoked_keys_are_listed_only_under_the_revoked_filter(store: &dyn Store) {
    let f = create_fixture(store, "revoked").await;
    let t = now();
    let mut key = new_key(Some(&f.account.id), None, "to revoke");
    ok(store.create_key(&key).await, "create_key");
    key.revoked_at = Some(t - Duration::seconds(1));
    ok(store.update_key(&key).await, "update_key");

    for (filter, listed) in [
        (KeyFilter::All, true),
        (KeyFilter::Active, false),
        (KeyFilter::Revoked, true),
        (KeyFilter::Expired, false),
    ] {
        let p = ok(
            store
                .list_keys(Some(&f.account.id), filter, t, &page(None, 100))
                .await,
            "list_keys",
        );
        assert_eq!(p.items.contains(&key), listed, "{filter:?}");
    }
}

pub async fn keys_are_listed_in_creation_order_in_pages(store: &dyn Store) {
    let f = create_fixture(store, "key-pages").await;
    let other = create_fixture(store, "key-pages-other").await;
    let t = now();
    let mut expected = vec![f.key.clone()];
    for i in 0..4 {
        let mut key = new_key(Some(&f.account.id), None, &format!("key {i}"));
        if i % 2 == 1 {
            key.revoked_at = Some(t - Duration::seconds(1));
        }
        ok(store.create_key(&key).await, "create_key");
        expected.push(key);
    }
    ok(
        store
            .create_key(&new_key(Some(&other.account.id), None, "not listed"))
            .await,
        "create_key",
    );

    let mut after: Option<String> = None;
    let mut seen = Vec::new();
    for expected_len in [2, 2, 1] {
        let p = ok(
            store
                .list_keys(
                    Some(&f.account.id),
                    KeyFilter::All,
                    t,
                    &page(after.as_deref(), 2),
                )
                .await,
            "list_keys",
        );
        assert_eq!(p.items.len(), expected_len);
        assert_eq!(p.total, 5);
        assert_eq!(p.has_more, expected_len == 2);
        after = p.items.last().map(|k| k.id.to_string());
        seen.extend(p.items);
    }
    assert_eq!(seen, expected);

    // A filter applies to the total and to the pages alike.
    let active: Vec<ApiKey> = expected
        .iter()
        .filter(|k| k.revoked_at.is_none())
        .cloned()
        .collect();
    let first = ok(
        store
            .list_keys(Some(&f.account.id), KeyFilter::Active, t, &page(None, 2))
            .await,
        "list_keys",
    );
    assert_eq!(first.items, active[..2]);
    assert_eq!(first.total, 3);
    assert!(first.has_more);
    let rest = ok(
        store
            .list_keys(
                Some(&f.account.id),
                KeyFilter::Active,
                t,
                &page(Some(active[1].id.as_str()), 2),
            )
            .await,
        "list_keys",
    );
    assert_eq!(rest.items, active[2..]);
    assert_eq!(rest.total, 3);
    assert!(!rest.has_more);
}

pub async fn key_updates_persist_every_mutable_field(store: &dyn Store) {
    let f = create_fixture(store, "key-update").await;
    let key = new_key(Some(&f.account.id), Some(&f.owner.id), "original");
    ok(store.create_key(&key).await, "create_key");
    let t = now();

    let mut changed = key.clone();
    changed.name = "renamed ✓".into();
    changed.description = "used by the nightly export".into();
    changed.scope = Scope::Admin;
    changed.expires_at = Some(t + Duration::days(30));
    changed.revoked_at = Some(t + Duration::milliseconds(1));
    changed.rolled_to = Some(KeyId::generate());
    changed.rate_limit = Some("10/second".into());
    changed.metadata = json!({"team": "data", "tags": ["etl", "nightly"], "weight": 1.5, "n": 7});
    ok(store.update_key(&changed).await, "update_key");
    assert_eq!(
        ok(store.get_key(Some(&f.account.id), &key.id).await, "get_key"),
        changed
    );

    // Clearing optional fields is persisted too.
    let mut cleared = changed.clone();
    cleared.expires_at = None;
    cleared.revoked_at = None;
    cleared.rolled_to = None;
    cleared.rate_limit = None;
    cleared.metadata = json!({});
    ok(store.update_key(&cleared).await, "update_key");
    assert_eq!(
        ok(store.get_key(Some(&f.account.id), &key.id).await, "get_key"),
        cleared
    );

    let ghost = new_key(Some(&f.account.id), None, "never stored");
    not_found(
        store.update_key(&ghost).await,
        "update_key of an unknown key",
    );
}

pub async fn updating_a_key_keeps_its_last_use(store: &dyn Store) {
    let f = create_fixture(store, "key-last-use").await;
    let used_at = now();
    let stale = f.key.clone();
    ok(
        store
            .record_usage(&[usage(&f.key, 20_100, 1, used_at)])
            .await,
        "record_usage",
    );

    // `last_used_at` is written by usage batches only; a copy read before the batch must not
    // take it back.
    let mut renamed = stale;
    renamed.name = "renamed".into();
    ok(store.update_key(&renamed).await, "update_key");
    let stored = ok(
        store.get_key(Some(&f.account.id), &f.key.id).await,
        "get_key",
    );
    assert_eq!(stored.name, "renamed");
    assert_eq!(stored.last_used_at, Some(used_at));
}

pub async fn rolling_a_key_creates_the_new_one_and_updates_the_old_together(store: &dyn Store) {
    let f = create_fixture(store, "roll").await;
    let t = now();
    let mut new = new_key(Some(&f.account.id), Some(&f.owner.id), "rolled");
    new.scope = f.key.scope;
    let mut old = f.key.clone();
    old.expires_at = Some(t + Duration::hours(24));
    old.rolled_to = Some(new.id.clone());
    ok(store.roll_key(&old, &new).await, "roll_key");

    assert_eq!(
        ok(store.get_key(Some(&f.account.id), &old.id).await, "get_key"),
        old
    );
    assert_eq!(
        ok(store.get_key(Some(&f.account.id), &new.id).await, "get_key"),
        new
    );
    assert_eq!(
        ok(store.find_key_by_hash(&new.hash).await, "find_key_by_hash").key,
        new
    );
    // During the grace period both keys are active; after it, only the new one.
    let account = &f.account.id;
    let active = |at| async move {
        ok(
            store
                .list_keys(Some(account), KeyFilter::Active, at, &page(None, 10))
                .await,
            "list_keys",
        )
        .items
    };
    assert_eq!(active(t).await, vec![old.clone(), new.clone()]);
    assert_eq!(active(t + Duration::hours(25)).await, vec![new.clone()]);

    // Rolling with immediate revocation works the same way.
    let mut newer = new_key(Some(&f.account.id), Some(&f.owner.id), "rolled again");
    newer.scope = new.scope;
    let mut retired = new.clone();
    retired.revoked_at = Some(t);
    retired.rolled_to = Some(newer.id.clone());
    ok(store.roll_key(&retired, &newer).await, "roll_key");
    assert_eq!(
        ok(
            store.get_key(Some(&f.account.id), &retired.id).await,
            "get_key"
        ),
        retired
    );
    assert_eq!(
        ok(
            store.get_key(Some(&f.account.id), &newer.id).await,
            "get_key"
        ),
        newer
    );
}

pub async fn a_failed_roll_changes_nothing(store: &dyn Store) {
    let f = create_fixture(store, "failed-roll").await;
    let t = now();

    // The new key clashes with a stored hash: the old key keeps its state.
    let mut clash = new_key(Some(&f.account.id), None, "clash");
    clash.hash = f.key.hash;
    let mut old = f.key.clone();
    old.revoked_at = Some(t);
    old.rolled_to = Some(clash.id.clone());
    conflict(
        store.roll_key(&old, &clash).await,
        "api_keys_hash",
        "roll_key to a key with a stored hash",
    );
    assert_eq!(
        ok(
            store.get_key(Some(&f.account.id), &f.key.id).await,
            "get_key"
        ),
        f.key
    );

    // The old key does not exist: the new key is not created either.
    let missing = new_key(Some(&f.account.id), None, "never stored");
    let orphan = new_key(Some(&f.account.id), None, "orphan");
    not_found(
        store.roll_key(&missing, &orphan).await,
        "roll_key from an unknown key",
    );
    not_found(
        store.get_key(Some(&f.account.id), &orphan.id).await,
        "get_key of the orphan",
    );
    not_found(
        store.find_key_by_hash(&orphan.hash).await,
        "find_key_by_hash of the orphan",
    );
}

pub async fn a_key_is_found_by_its_id_with_its_accounts_current_state(store: &dyn Store) {
    let f = create_fixture(store, "by-id").await;
    let found = ok(store.find_key_by_id(&f.key.id).await, "find_key_by_id");
    assert_eq!(found.key, f.key);
    assert_eq!(found.account.as_deref(), Some(&f.account));

    // A revoked key is still found, as stored: the caller judges its status.
    let mut revoked = new_key(Some(&f.account.id), Some(&f.owner.id), "revoked, by id");
    revoked.revoked_at = Some(now() - Duration::seconds(1));
    ok(store.create_key(&revoked).await, "create_key");
    let found = ok(store.find_key_by_id(&revoked.id).await, "find_key_by_id");
    assert_eq!(found.key, revoked);
    assert_eq!(found.account.as_deref(), Some(&f.account));

    // The account as it is now, not as it was when the key was made.
    let mut disabled = f.account.clone();
    disabled.status = AccountStatus::Disabled;
    disabled.updated_at = f.account.updated_at + Duration::seconds(1);
    ok(store.update_account(&disabled).await, "update_account");
    assert_eq!(
        ok(store.find_key_by_id(&f.key.id).await, "find_key_by_id")
            .account
            .as_deref(),
        Some(&disabled)
    );

    let operator = new_key(None, None, "operator, by id");
    ok(store.create_key(&operator).await, "create_key");
    let found = ok(store.find_key_by_id(&operator.id).await, "find_key_by_id");
    assert_eq!(found.key, operator);
    assert_eq!(found.account, None);

    not_found(
        store.find_key_by_id(&KeyId::generate()).await,
        "find_key_by_id with an unknown id",
    );
    ok(store.delete_account(&f.account.id).await, "delete_account");
    not_found(
        store.find_key_by_id(&f.key.id).await,
        "find_key_by_id of a deleted account's key",
    );
}

// ---------------------------------------------------------------------------------------------
// Usage.

pub async fn usage_accumulates_per_key_and_day_across_batches(store: &dyn Store) {
    let f = create_fixture(store, "usage").await;
    let second = new_key(Some(&f.account.id), None, "second");
    ok(store.create_key(&second).await, "create_key");
    let operator = new_key(None, None, "operator usage");
    ok(store.create_key(&operator).await, "create_key");
    let (d1, d2) = (20_200, 20_201);
    let t = now();

    ok(
        store
            .record_usage(&[
                usage(&f.key, d1, 5, t),
                usage(&second, d1, 1, t),
                usage(&operator, d1, 9, t),
            ])
            .await,
        "record_usage",
    );
    ok(
        store
            .record_usage(&[
                usage(&f.key, d1, 7, t),
                usage(&f.key, d2, 2, t),
                // The same key and day twice in one batch adds up as well.
                usage(&second, d2, 1, t),
                usage(&second, d2, 3, t),
            ])
            .await,
        "record_usage",
    );
    ok(
        store.record_usage(&[]).await,
        "record_usage of an empty batch",
    );

    let mut expected = vec![
        row(&f.key, d1, 12),
        row(&second, d1, 1),
        row(&f.key, d2, 2),
        row(&second, d2, 4),
    ];
    expected.sort_by(|a, b| (a.day, &a.key_id).cmp(&(b.day, &b.key_id)));
    assert_eq!(
        ok(
            store.usage_by_day(&f.account.id, d1, d2).await,
            "usage_by_day"
        ),
        expected
    );
}

pub async fn last_use_only_moves_forward(store: &dyn Store) {
    let f = create_fixture(store, "last-use").await;
    let day = 20_300;
    let t = now();
    let read = || async {
        ok(
            store.get_key(Some(&f.account.id), &f.key.id).await,
            "get_key",
        )
        .last_used_at
    };
    assert_eq!(read().await, None);

    ok(
        store.record_usage(&[usage(&f.key, day, 1, t)]).await,
        "record_usage",
    );
    assert_eq!(read().await, Some(t));

    // A batch flushed late, from a node that saw an older request, does not move it back.
    ok(
        store
            .record_usage(&[usage(&f.key, day, 1, t - Duration::minutes(10))])
            .await,
        "record_usage",
    );
    assert_eq!(read().await, Some(t));

    // A later use moves it, however soon after the stored one.
    ok(
        store
            .record_usage(&[usage(&f.key, day, 1, t + Duration::seconds(5))])
            .await,
        "record_usage",
    );
    assert_eq!(read().await, Some(t + Duration::seconds(5)));

    // Within one batch the newest timestamp wins, whatever the order.
    let later = t + Duration::seconds(6);
    let latest = t + Duration::seconds(7);
    ok(
        store
            .record_usage(&[usage(&f.key, day, 1, latest), usage(&f.key, day, 1, later)])
            .await,
        "record_usage",
    );
    assert_eq!(read().await, Some(latest));
    assert_eq!(
        ok(
            store.usage_by_day(&f.account.id, day, day).await,
            "usage_by_day"
        ),
        vec![row(&f.key, day, 5)]
    );
}

/// A key's last use is read from its usage rows: the latest day's, whatever order the days'
/// batches arrive in, and not its other keys' or the same account's.
pub async fn last_use_is_the_latest_days(store: &dyn Store) {
    let f = create_fixture(store, "last-use-days").await;
    let other = new_key(Some(&f.account.id), None, "other");
    ok(store.create_key(&other).await, "create_key");
    let t = now();
    let day = (t.unix_timestamp() / 86_400) as i32;
    let read = |key: &ApiKey| {
        let id = key.id.clone();
        let account = f.account.id.clone();
        async move { ok(store.get_key(Some(&account), &id).await, "get_key").last_used_at }
    };

    ok(
        store
            .record_usage(&[usage(&f.key, day, 1, t), usage(&other, day, 1, t)])
            .await,
        "record_usage",
    );
    let tomorrow = t + Duration::days(1);
    ok(
        store
            .record_usage(&[usage(&f.key, day + 1, 1, tomorrow)])
            .await,
        "record_usage",
    );
    assert_eq!(read(&f.key).await, Some(tomorrow));
    assert_eq!(
        read(&other).await,
        Some(t),
        "another key's use is not this one's"
    );

    // A node that flushes yesterday's last requests late does not take it back.
    ok(
        store
            .record_usage(&[usage(&f.key, day, 1, t + Duration::hours(1))])
            .await,
        "record_usage",
    );
    assert_eq!(read(&f.key).await, Some(tomorrow));

    // Listed keys carry it too.
    let listed = ok(
        store
            .list_keys(
                Some(&f.account.id),
                KeyFilter::All,
                t,
                &PageRequest {
                    after: None,
                    limit: 10,
                },
            )
            .await,
        "list_keys",
    );
    let seen: Vec<_> = listed
        .items
        .iter()
        .map(|k| (k.id.clone(), k.last_used_at))
        .collect();
    assert!(
        seen.contains(&(f.key.id.clone(), Some(tomorrow))),
        "{seen:?}"
    );
    assert!(seen.contains(&(other.id.clone(), Some(t))), "{seen:?}");
}

pub async fn usage_is_reported_for_the_requested_days_and_account_only(store: &dyn Store) {
    let f = create_fixture(store, "usage-range").await;
    let other = create_fixture(store, "usage-range-other").await;
    let t = now();
    let batch: Vec<UsageIncrement> = (20_400..20_405)
        .map(|day| usage(&f.key, day, (day - 20_399) as u64, t))
        .chain([usage(&other.key, 20_402, 100, t)])
        .collect();
    ok(store.record_usage(&batch).await, "record_usage");

    assert_eq!(
        ok(
            store.usage_by_day(&f.account.id, 20_401, 20_403).await,
            "usage_by_day"
        ),
        vec![
            row(&f.key, 20_401, 2),
            row(&f.key, 20_402, 3),
            row(&f.key, 20_403, 4)
        ],
        "both ends of the range are included"
    );
    assert_eq!(
        ok(
            store.usage_by_day(&f.account.id, 20_404, 20_404).await,
            "usage_by_day"
        ),
        vec![row(&f.key, 20_404, 5)]
    );
    assert_eq!(
        ok(
            store.usage_by_day(&f.account.id, 20_405, 20_500).await,
            "usage_by_day"
        ),
        vec![]
    );
    assert_eq!(
        ok(
            store.usage_by_day(&f.account.id, 20_403, 20_401).await,
            "usage_by_day"
        ),
        vec![],
        "an inverted range is empty"
    );
}

pub async fn usage_batches_flushed_at_once_by_several_nodes_all_count(store: &dyn Store) {
    let f = create_fixture(store, "usage-concurrent").await;
    let mut keys = vec![f.key.clone()];
    for i in 0..11 {
        let key = new_key(Some(&f.account.id), None, &format!("busy {i}"));
        ok(store.create_key(&key).await, "create_key");
        keys.push(key);
    }
    let day = 20_500;
    let t = now();
    let rounds = 5;

    // Two nodes flush the same keys in opposite orders, at the same time: a backend that locks
    // rows in the order given can deadlock here and lose a batch.
    for round in 0..rounds {
        let at = t + Duration::milliseconds(round);
        let forward: Vec<UsageIncrement> = keys.iter().map(|k| usage(k, day, 1, at)).collect();
        let backward: Vec<UsageIncrement> = forward.iter().rev().cloned().collect();
        let (a, b) = both(store.record_usage(&forward), store.record_usage(&backward)).await;
        ok(a, "record_usage, first node");
        ok(b, "record_usage, second node");
    }

    let mut expected: Vec<UsageRow> = keys
        .iter()
        .map(|k| row(k, day, 2 * rounds as u64))
        .collect();
    expected.sort_by(|a, b| a.key_id.cmp(&b.key_id));
    assert_eq!(
        ok(
            store.usage_by_day(&f.account.id, day, day).await,
            "usage_by_day"
        ),
        expected
    );
    let last = ok(
        store.get_key(Some(&f.account.id), &keys[5].id).await,
        "get_key",
    );
    // The last round's time, whichever node's batch landed last.
    assert_eq!(
        last.last_used_at,
        Some(t + Duration::milliseconds(rounds - 1))
    );
}

// ---------------------------------------------------------------------------------------------
// Signing keys.

pub async fn signing_keys_are_listed_in_creation_order_with_every_field(store: &dyn Store) {
    let t = now();
    let hour = Duration::hours(1);
    let mut rsa = signing_key("rsa", t - hour, Some(t - Duration::minutes(30)));
    rsa.alg = "RS256".into();
    let mine = [
        signing_key("newest", t + hour, None),
        rsa,
        signing_key("oldest", t - 2 * hour, None),
        signing_key("same-time", t, None),
        signing_key("now", t, None),
    ];
    // Inserted out of order: the listing sorts them.
    for k in &mine {
        ok(store.insert_signing_key(k).await, "insert_signing_key");
    }

    let listed = ok(store.list_signing_keys().await, "list_signing_keys");
    assert!(
        listed
            .windows(2)
            .all(|w| w[0].created_at <= w[1].created_at),
        "every key is listed in creation order"
    );
    let listed = only_signing_keys(listed, &mine);
    // Keys made in the same millisecond may come in either order.
    let mut expected = mine.to_vec();
    expected.sort_by(|a, b| (a.created_at, &a.kid).cmp(&(b.created_at, &b.kid)));
    let mut sorted = listed.clone();
    sorted.sort_by(|a, b| (a.created_at, &a.kid).cmp(&(b.created_at, &b.kid)));
    assert_eq!(sorted, expected, "the keys read back whole");
    assert_eq!(
        listed.iter().map(|k| k.created_at).collect::<Vec<_>>(),
        expected.iter().map(|k| k.created_at).collect::<Vec<_>>(),
        "the keys are listed in creation order"
    );
}

pub async fn rotation_retires_the_older_keys_only_and_keeps_earlier_retirements(store: &dyn Store) {
    let t = now();
    let hour = Duration::hours(1);
    let retired_at = t - Duration::minutes(90);
    let oldest = signing_key("rot-oldest", t - 3 * hour, None);
    let retired = signing_key("rot-retired", t - 2 * hour, Some(retired_at));
    let older = signing_key("rot-older", t - hour, None);
    let current = signing_key("rot-current", t, None);
    // Made in the same millisecond as `current`: not newer, so it retires.
    let twin = signing_key("rot-twin", t, None);
    // Made by another node rotating at the same time: newer, so it stays active.
    let newer = signing_key("rot-newer", t + Duration::minutes(1), None);
    let mine = [&newer, &current, &oldest, &twin, &older, &retired].map(Clone::clone);
    for k in &mine {
        ok(store.insert_signing_key(k).await, "insert_signing_key");
    }
    let state = || async {
        let mut keys = only_signing_keys(
            ok(store.list_signing_keys().await, "list_signing_keys"),
            &mine,
        );
        keys.sort_by(|a, b| (a.created_at, &a.kid).cmp(&(b.created_at, &b.kid)));
        keys
    };
    let retire = |k: &SigningKeyRecord, at| SigningKeyRecord {
        retired_at: Some(at),
        ..k.clone()
    };
    let sorted = |mut keys: Vec<SigningKeyRecord>| {
        keys.sort_by(|a, b| (a.created_at, &a.kid).cmp(&(b.created_at, &b.kid)));
        keys
    };

    let at = t + Duration::minutes(5);
    ok(
        store.retire_signing_keys_except(&current.kid, at).await,
        "retire_signing_keys_except",
    );
    let after_first = sorted(vec![
        retire(&oldest, at),
        retired.clone(),
        retire(&older, at),
        current.clone(),
        retire(&twin, at),
        newer.clone(),
    ]);
    assert_eq!(state().await, after_first);

    // Again, later: nothing that is retired gets a new time.
    ok(
        store
            .retire_signing_keys_except(&current.kid, at + hour)
            .await,
        "retire_signing_keys_except",
    );
    assert_eq!(state().await, after_first);

    // The newer key takes over: only the one still active before it retires now.
    let later = t + 2 * hour;
    ok(
        store.retire_signing_keys_except(&newer.kid, later).await,
        "retire_signing_keys_except",
    );
    assert_eq!(
        state().await,
        sorted(vec![
            retire(&oldest, at),
            retired,
            retire(&older, at),
            retire(&current, later),
            retire(&twin, at),
            newer,
        ])
    );
}

// ---------------------------------------------------------------------------------------------
// The revocation feed.

pub async fn the_revocation_feed_hands_out_entries_in_id_order_after_a_cursor(store: &dyn Store) {
    let start = ok(store.latest_revocation_id().await, "latest_revocation_id");
    let before = ok(
        store.revocations_after(0, u32::MAX).await,
        "revocations_after",
    );
    assert_eq!(
        start,
        before.last().map_or(0, |r| r.id),
        "the latest id is the feed's highest, 0 when it is empty"
    );

    // One entry of every kind, with and without expiry; the ids given are ignored.
    let t = now();
    let published: Vec<Revocation> = ALL_REVOCATION_KINDS
        .into_iter()
        .enumerate()
        .map(|(i, kind)| {
            let i = i as i64;
            let mut r = revocation(
                kind,
                (i % 2 == 0).then(|| t + Duration::minutes(10 + i)),
                t + Duration::milliseconds(i),
            );
            r.id = if i == 0 { start } else { -i };
            r
        })
        .collect();
    for r in &published {
        ok(store.publish_revocation(r).await, "publish_revocation");
    }

    let feed = ok(
        store.revocations_after(start, 100).await,
        "revocations_after",
    );
    assert_eq!(feed.len(), published.len(), "{feed:?}");
    assert!(feed[0].id > start, "ids ascend past the latest one");
    assert!(
        feed.windows(2).all(|w| w[0].id < w[1].id),
        "ids ascend in publishing order"
    );
    for (got, sent) in feed.iter().zip(&published) {
        assert_eq!(
            *got,
            Revocation {
                id: got.id,
                ..sent.clone()
            },
            "{:?} reads back whole",
            sent.kind
        );
    }
    let last = feed[feed.len() - 1].id;
    assert_eq!(
        ok(store.latest_revocation_id().await, "latest_revocation_id"),
        last
    );

    // Strictly after the cursor, at most `limit`, in id order.
    let after = |cursor: i64, limit: u32| async move {
        ok(
            store.revocations_after(cursor, limit).await,
            "revocations_after",
        )
    };
    assert_eq!(after(feed[1].id, 2).await, feed[2..4]);
    assert_eq!(after(feed[0].id, 1).await, feed[1..2]);
    assert_eq!(after(feed[3].id, 100).await, feed[4..]);
    assert_eq!(after(start, 0).await, vec![]);
    assert_eq!(after(last, 100).await, vec![]);
}

pub async fn only_unexpired_token_revocations_are_in_force(store: &dyn Store) {
    let start = ok(store.latest_revocation_id().await, "latest_revocation_id");
    let t = now();
    let hour = Duration::hours(1);
    let ms = Duration::milliseconds(1);
    let published = [
        revocation(RevocationKind::Token, Some(t - ms), t - hour),
        revocation(RevocationKind::Token, Some(t + hour), t),
        revocation(RevocationKind::Key, Some(t + hour), t),
        // Expiring exactly now: still in force.
        revocation(RevocationKind::Token, Some(t), t),
        revocation(RevocationKind::Token, None, t),
        revocation(RevocationKind::User, None, t),
    ];
    for r in &published {
        ok(store.publish_revocation(r).await, "publish_revocation");
    }
    let feed = ok(
        store.revocations_after(start, 100).await,
        "revocations_after",
    );
    assert_eq!(feed.len(), published.len());

    let in_force = |at: OffsetDateTime| async move {
        let all = ok(
            store.active_token_revocations(at).await,
            "active_token_revocations",
        );
        for r in &all {
            assert_eq!(r.kind, RevocationKind::Token, "{r:?}");
            assert!(r.expires_at.is_some_and(|e| e >= at), "{r:?} at {at}");
        }
        let mut mine: Vec<Revocation> = all.into_iter().filter(|r| r.id > start).collect();
        mine.sort_by_key(|r| r.id);
        mine
    };
    assert_eq!(in_force(t).await, vec![feed[1].clone(), feed[3].clone()]);
    assert_eq!(in_force(t + ms).await, vec![feed[1].clone()]);
    assert_eq!(in_force(t + hour).await, vec![feed[1].clone()]);
    assert_eq!(in_force(t + hour + ms).await, vec![]);
}

pub async fn pruning_drops_expired_entries_and_old_ones_without_expiry(store: &dyn Store) {
    // Pruning deletes across the whole feed, so this check stays in 2001, where no other
    // check's entries are, and at fixed times, so that running it again finds the same.
    let base = OffsetDateTime::from_unix_timestamp(978_307_200).expect("2001-01-01 is valid");
    let (now, before) = (base + Duration::days(1), base);
    let ms = Duration::milliseconds(1);
    let long_ago = base - Duration::days(30);

    let start = ok(store.latest_revocation_id().await, "latest_revocation_id");
    let published = [
        // Kept: expiring exactly at `now`.
        revocation(RevocationKind::Token, Some(now), long_ago),
        // Kept: no expiry, made exactly at `before`.
        revocation(RevocationKind::Account, None, before),
        // Kept: made long before `before`, but with an expiry still to come.
        revocation(
            RevocationKind::User,
            Some(now + Duration::hours(1)),
            long_ago,
        ),
        // Pruned: expired (the newest ids, to see that pruning them frees no id).
        revocation(RevocationKind::Key, Some(now - ms), before + ms),
        // Pruned: no expiry, made before `before`.
        revocation(RevocationKind::SigningKeys, None, before - ms),
    ];
    for r in &published {
        ok(store.publish_revocation(r).await, "publish_revocation");
    }
    let feed = ok(
        store.revocations_after(start, 100).await,
        "revocations_after",
    );
    assert_eq!(feed.len(), published.len());

    assert_eq!(
        ok(
            store.prune_revocations(now, before).await,
            "prune_revocations"
        ),
        2
    );
    assert_eq!(
        ok(
            store.revocations_after(start, 100).await,
            "revocations_after"
        ),
        feed[..3]
    );
    assert_eq!(
        ok(store.latest_revocation_id().await, "latest_revocation_id"),
        feed[2].id,
        "the latest id is the highest left"
    );
    assert_eq!(
        ok(
            store.prune_revocations(now, before).await,
            "prune_revocations again"
        ),
        0
    );

    // Ids are never handed out twice: the next entry follows the pruned ones.
    let next = revocation(RevocationKind::Key, None, before);
    ok(store.publish_revocation(&next).await, "publish_revocation");
    let after = ok(
        store.revocations_after(feed[2].id, 100).await,
        "revocations_after",
    );
    assert_eq!(after.len(), 1, "{after:?}");
    assert!(
        after[0].id > feed[4].id,
        "the id {} after pruning is above the pruned {}",
        after[0].id,
        feed[4].id
    );
    assert_eq!(
        after[0],
        Revocation {
            id: after[0].id,
            ..next
        }
    );
    assert_eq!(
        ok(store.latest_revocation_id().await, "latest_revocation_id"),
        after[0].id
    );
}

pub async fn a_large_flush_counts_every_key_and_moves_last_use_forward_only(store: &dyn Store) {
    let f = create_fixture(store, "large-flush").await;
    let keys: Vec<ApiKey> = (0..450)
        .map(|i| new_key(Some(&f.account.id), Some(&f.owner.id), &format!("k{i}")))
        .collect();
    ok(store.create_keys(&keys).await, "create_keys");
    let t1 = now();
    let day = (t1.unix_timestamp() / 86_400) as i32;
    let batch: Vec<UsageIncrement> = keys
        .iter()
        .map(|k| UsageIncrement {
            key_id: k.id.clone(),
            account_id: Some(f.account.id.clone()),
            day,
            requests: 2,
            last_used_at: t1,
        })
        .collect();
    ok(store.record_usage(&batch).await, "record_usage");
    // An older batch (a slow node) must not move last_used_at back.
    let older: Vec<UsageIncrement> = batch
        .iter()
        .map(|u| UsageIncrement {
            last_used_at: t1 - Duration::seconds(60),
            requests: 1,
            ..u.clone()
        })
        .collect();
    ok(store.record_usage(&older).await, "record_usage again");
    let rows = ok(
        store.usage_by_day(&f.account.id, day, day).await,
        "usage_by_day",
    );
    assert_eq!(rows.len(), 450);
    assert!(
        rows.iter().all(|r| r.requests == 3),
        "every key counted in both batches"
    );
    for k in [&keys[0], &keys[199], &keys[200], &keys[449]] {
        let stored = ok(store.get_key(Some(&f.account.id), &k.id).await, "get_key");
        assert_eq!(stored.last_used_at, Some(t1), "{}", k.name);
    }
}

// ---------------------------------------------------------------------------------------------
// Credits.

fn credit(account: &AccountId, amount: i64, key: &str) -> CreditEntry {
    CreditEntry {
        id: format!("led_{}", unique("x")),
        account_id: account.clone(),
        amount,
        balance_after: 0,
        kind: if amount < 0 {
            CreditKind::Debit
        } else {
            CreditKind::Grant
        },
        idempotency_key: key.to_owned(),
        description: format!("{amount} credits"),
        key_id: None,
        created_at: now(),
    }
}

fn applied(outcome: CreditOutcome) -> CreditEntry {
    match outcome {
        CreditOutcome::Applied(e) => e,
        other => panic!("expected the entry to apply, got {other:?}"),
    }
}

pub async fn grants_and_debits_change_the_balance_and_the_ledger_together(store: &dyn Store) {
    let f = create_fixture(store, "credits").await;
    let id = &f.account.id;
    assert_eq!(ok(store.credit_state(id).await, "state").balance, 0);
    let grant = applied(ok(
        store.apply_credit(&credit(id, 100, "g1")).await,
        "grant",
    ));
    assert_eq!(grant.balance_after, 100);
    let debit = applied(ok(
        store.apply_credit(&credit(id, -30, "d1")).await,
        "debit",
    ));
    assert_eq!(debit.balance_after, 70);
    assert_eq!(debit.kind, CreditKind::Debit);
    let state = ok(store.credit_state(id).await, "state");
    assert_eq!((state.balance, state.used), (70, 30));
    let listed = ok(store.list_credit_entries(id, &page(None, 10)).await, "list");
    assert_eq!(listed.total, 2);
    assert_eq!(listed.items, vec![grant, debit]);
    let other = create_fixture(store, "credits-other").await;
    assert_eq!(
        ok(
            store
                .list_credit_entries(&other.account.id, &page(None, 10))
                .await,
            "list"
        )
        .total,
        0
    );
    let missing = store
        .apply_credit(&credit(&AccountId::generate(), 5, "g"))
        .await;
    assert!(matches!(missing, Err(StoreError::NotFound)), "{missing:?}");
}

pub async fn a_debit_larger_than_the_balance_changes_nothing(store: &dyn Store) {
    let f = create_fixture(store, "insufficient").await;
    let id = &f.account.id;
    applied(ok(store.apply_credit(&credit(id, 10, "g")).await, "grant"));
    let out = ok(store.apply_credit(&credit(id, -11, "d")).await, "debit");
    assert_eq!(out, CreditOutcome::Insufficient { available: 10 });
    let state = ok(store.credit_state(id).await, "state");
    assert_eq!((state.balance, state.used), (10, 0));
    assert_eq!(
        ok(store.list_credit_entries(id, &page(None, 10)).await, "list").total,
        1
    );
    // The refused key stays free: the same key may apply later, once there is enough.
    applied(ok(store.apply_credit(&credit(id, 5, "g2")).await, "grant"));
    applied(ok(store.apply_credit(&credit(id, -11, "d")).await, "debit"));
    assert_eq!(ok(store.credit_state(id).await, "state").balance, 4);
}

pub async fn an_idempotency_key_applies_once(store: &dyn Store) {
    let f = create_fixture(store, "idempotent").await;
    let id = &f.account.id;
    let first = applied(ok(
        store.apply_credit(&credit(id, 50, "grant-42")).await,
        "grant",
    ));
    let again = ok(
        store.apply_credit(&credit(id, 50, "grant-42")).await,
        "grant again",
    );
    assert_eq!(again, CreditOutcome::Duplicate(first.clone()));
    let debit = applied(ok(
        store.apply_credit(&credit(id, -20, "req-1")).await,
        "debit",
    ));
    let retry = ok(
        store.apply_credit(&credit(id, -20, "req-1")).await,
        "debit again",
    );
    assert_eq!(retry, CreditOutcome::Duplicate(debit));
    assert_eq!(ok(store.credit_state(id).await, "state").balance, 30);
    // Keys are per account.
    let other = create_fixture(store, "idempotent-other").await;
    applied(ok(
        store
            .apply_credit(&credit(&other.account.id, 50, "grant-42"))
            .await,
        "other account",
    ));
}

pub async fn concurrent_debits_never_take_the_balance_below_zero(store: &dyn Store) {
    let f = create_fixture(store, "concurrent-debits").await;
    let id = &f.account.id;
    applied(ok(store.apply_credit(&credit(id, 100, "g")).await, "grant"));
    let debits: Vec<CreditEntry> = (0..60).map(|i| credit(id, -3, &format!("d{i}"))).collect();
    let outcomes = all(debits.iter().map(|d| store.apply_credit(d)).collect()).await;
    let mut applied_count = 0;
    let mut refused = 0;
    for o in outcomes {
        match ok(o, "concurrent debit") {
            CreditOutcome::Applied(e) => {
                assert!(e.balance_after >= 0);
                applied_count += 1;
            }
            CreditOutcome::Insufficient { available } => {
                assert!(
                    (0..3).contains(&available),
                    "refused with {available} available"
                );
                refused += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!((applied_count, refused), (33, 27));
    let state = ok(store.credit_state(id).await, "state");
    assert_eq!((state.balance, state.used), (1, 99));
    let entries = ok(
        store.list_credit_entries(id, &page(None, 100)).await,
        "list",
    )
    .items;
    assert_eq!(
        entries.iter().map(|e| e.amount).sum::<i64>(),
        1,
        "the ledger adds up to the balance"
    );
}

pub async fn the_monthly_refill_tops_up_once_per_period_and_never_lowers(store: &dyn Store) {
    let f = create_fixture(store, "refill").await;
    let id = &f.account.id;
    applied(ok(store.apply_credit(&credit(id, 30, "g")).await, "grant"));
    let template = credit(id, 0, "unused");
    let refill = ok(
        store.refill_credits(id, "2026-11", 100, &template).await,
        "refill",
    )
    .expect("a refill");
    assert_eq!(
        (refill.amount, refill.balance_after, refill.kind),
        (70, 100, CreditKind::Refill)
    );
    assert_eq!(refill.idempotency_key, "refill:2026-11");
    assert_eq!(
        ok(
            store
                .refill_credits(id, "2026-11", 100, &credit(id, 0, "x"))
                .await,
            "again"
        ),
        None
    );
    applied(ok(store.apply_credit(&credit(id, 50, "g2")).await, "grant"));
    // A new month with more than the allowance: nothing added, nothing taken.
    assert_eq!(
        ok(
            store
                .refill_credits(id, "2026-12", 100, &credit(id, 0, "y"))
                .await,
            "next"
        ),
        None
    );
    let state = ok(store.credit_state(id).await, "state");
    assert_eq!(
        (state.balance, state.period.as_deref()),
        (150, Some("2026-12"))
    );
}

// ---------------------------------------------------------------------------------------------
// The audit log.

pub async fn audit_entries_are_read_back_newest_first_in_pages(store: &dyn Store) {
    let account = AccountId::generate();
    let t = now();
    let entries: Vec<AuditEntry> = (0..5)
        .map(|i| {
            let mut e = audit_entry(&account, "key.created", t + Duration::milliseconds(i));
            e.details = json!({"n": i, "name": "Production API Key"});
            e
        })
        .collect();
    for e in &entries {
        ok(store.record_audit(e).await, "record_audit");
    }
    let filter = AuditFilter {
        account_id: Some(account.clone()),
        ..AuditFilter::default()
    };
    let first = ok(
        store.list_audit(&filter, &page(None, 3)).await,
        "list_audit",
    );
    assert_eq!(first.total, 5);
    assert!(first.has_more);
    let newest_first: Vec<AuditEntry> = entries.iter().rev().cloned().collect();
    assert_eq!(
        first.items,
        newest_first[..3],
        "every field read back, newest first"
    );
    let cursor = first.items.last().map(|e| e.id.as_str());
    let second = ok(
        store.list_audit(&filter, &page(cursor, 3)).await,
        "list_audit page 2",
    );
    assert!(!second.has_more);
    assert_eq!(second.items, newest_first[3..]);
}

pub async fn audit_entries_are_filtered_by_account_action_actor_object_and_time(store: &dyn Store) {
    let (mine, theirs) = (AccountId::generate(), AccountId::generate());
    let t = now();
    let key = KeyId::generate();
    let user = UserId::generate();
    let mut created = audit_entry(&mine, "key.created", t);
    created.actor_key_id = Some(key.clone());
    created.object_id = Some("key_one".into());
    let mut revoked = audit_entry(&mine, "key.revoked", t + Duration::seconds(10));
    revoked.actor_user_id = Some(user.clone());
    revoked.object_id = Some("key_one".into());
    let login = audit_entry(&mine, "login.failed", t + Duration::seconds(20));
    let other = audit_entry(&theirs, "key.created", t);
    for e in [&created, &revoked, &login, &other] {
        ok(store.record_audit(e).await, "record_audit");
    }
    let ids = |filter: AuditFilter| async move {
        let listed = ok(
            store.list_audit(&filter, &page(None, 100)).await,
            "list_audit",
        );
        assert_eq!(listed.total as usize, listed.items.len());
        listed
            .items
            .into_iter()
            .map(|e| e.id)
            .collect::<Vec<String>>()
    };
    let base = AuditFilter {
        account_id: Some(mine.clone()),
        ..AuditFilter::default()
    };
    assert_eq!(
        ids(base.clone()).await,
        [login.id.clone(), revoked.id.clone(), created.id.clone()],
        "the account's entries only"
    );
    assert_eq!(
        ids(AuditFilter {
            action: Some("key.created".into()),
            ..base.clone()
        })
        .await,
        [created.id.clone()]
    );
    assert_eq!(
        ids(AuditFilter {
            action: Some("key.".into()),
            ..base.clone()
        })
        .await,
        [revoked.id.clone(), created.id.clone()],
        "a prefix ending in a dot"
    );
    assert_eq!(
        ids(AuditFilter {
            actor: Some(key.to_string()),
            ..base.clone()
        })
        .await,
        [created.id.clone()],
        "the actor's key"
    );
    assert_eq!(
        ids(AuditFilter {
            actor: Some(user.to_string()),
            ..base.clone()
        })
        .await,
        [revoked.id.clone()],
        "the actor's user"
    );
    assert_eq!(
        ids(AuditFilter {
            object_id: Some("key_one".into()),
            ..base.clone()
        })
        .await,
        [revoked.id.clone(), created.id.clone()]
    );
    assert_eq!(
        ids(AuditFilter {
            since: Some(t + Duration::seconds(10)),
            until: Some(t + Duration::seconds(20)),
            ..base.clone()
        })
        .await,
        [revoked.id.clone()],
        "since is inclusive, until exclusive"
    );
    let everywhere = ids(AuditFilter {
        action: Some("key.created".into()),
        ..AuditFilter::default()
    })
    .await;
    assert!(everywhere.contains(&created.id) && everywhere.contains(&other.id));
}

pub async fn audit_entries_older_than_the_cutoff_are_purged(store: &dyn Store) {
    let account = AccountId::generate();
    // 2001, which no other check uses: the purge deletes across the whole log.
    let old_time = OffsetDateTime::from_unix_timestamp(1_000_000_000).expect("2001");
    let old = audit_entry(&account, "user.deleted", old_time);
    let kept = audit_entry(&account, "user.created", old_time + Duration::days(2));
    ok(store.record_audit(&old).await, "record_audit");
    ok(store.record_audit(&kept).await, "record_audit");
    let purged = ok(
        store.purge_audit(old_time + Duration::days(1)).await,
        "purge_audit",
    );
    assert!(purged >= 1);
    let filter = AuditFilter {
        account_id: Some(account),
        ..AuditFilter::default()
    };
    let left = ok(
        store.list_audit(&filter, &page(None, 10)).await,
        "list_audit",
    );
    assert_eq!(left.items, [kept]);
}

// ---------------------------------------------------------------------------------------------
// Building blocks.

/// An entry whose id sorts by `at`, as the server's do.
fn audit_entry(account: &AccountId, action: &str, at: OffsetDateTime) -> AuditEntry {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    AuditEntry {
        id: format!(
            "aud_{:016x}{seq:08x}",
            (at.unix_timestamp_nanos() / 1_000_000) as u64
        ),
        at,
        action: action.into(),
        account_id: Some(account.clone()),
        actor_key_id: None,
        actor_user_id: None,
        object_type: "api_key".into(),
        object_id: None,
        client_addr: Some("203.0.113.7".into()),
        request_id: Some(unique("req")),
        details: json!({}),
    }
}

/// Drives many futures at once on the caller's task.
async fn all<F: Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut futures: Vec<_> = futures.into_iter().map(Box::pin).collect();
    let mut done: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    poll_fn(|cx| {
        for (f, slot) in futures.iter_mut().zip(done.iter_mut()) {
            if slot.is_none() {
                if let Poll::Ready(v) = f.as_mut().poll(cx) {
                    *slot = Some(v);
                }
            }
        }
        if done.iter().all(Option::is_some) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await;
    done.into_iter().map(|v| v.expect("finished")).collect()
}

/// Drives two futures at once on the caller's task (this crate has no runtime to spawn on).
async fn both<A: Future, B: Future>(a: A, b: B) -> (A::Output, B::Output) {
    let mut a = pin!(a);
    let mut b = pin!(b);
    let (mut done_a, mut done_b) = (None, None);
    poll_fn(|cx| {
        if done_a.is_none() {
            if let Poll::Ready(v) = a.as_mut().poll(cx) {
                done_a = Some(v);
            }
        }
        if done_b.is_none() {
            if let Poll::Ready(v) = b.as_mut().poll(cx) {
                done_b = Some(v);
            }
        }
        if done_a.is_some() && done_b.is_some() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await;
    (
        done_a.expect("the first future finished"),
        done_b.expect("the second future finished"),
    )
}

/// An account as `create_account` stored it.
struct Fixture {
    account: Account,
    owner: User,
    key: ApiKey,
}

async fn create_fixture(store: &dyn Store, label: &str) -> Fixture {
    let (account, owner, key) = new_account(label);
    ok(
        store.create_account(&account, &owner, &key).await,
        "create_account",
    );
    Fixture {
        account,
        owner,
        key,
    }
}

fn new_account(label: &str) -> (Account, User, ApiKey) {
    let t = now();
    let account = Account {
        id: AccountId::generate(),
        name: unique(label),
        email: "owner@example.com".into(),
        plan: "free".into(),
        status: AccountStatus::Active,
        api_key_id: None,
        created_at: t,
        updated_at: t,
    };
    let mut owner = new_user(&account.id, &unique("owner"));
    owner.role = Role::Owner;
    let mut key = new_key(Some(&account.id), Some(&owner.id), "first key");
    key.scope = Scope::Admin;
    let account = Account {
        api_key_id: Some(key.id.clone()),
        ..account
    };
    (account, owner, key)
}

fn new_user(account: &AccountId, username: &str) -> User {
    let t = now();
    User {
        id: UserId::generate(),
        account_id: account.clone(),
        email: format!("{}@example.com", username.to_lowercase()),
        // Stored lower-cased; the tests compare whole records, so they build them that way.
        username: username.to_lowercase(),
        first_name: "Jane".into(),
        last_name: "Doe".into(),
        role: Role::Member,
        verifiers: PasswordVerifiers {
            password: Some("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$cGFzc3dvcmQ".into()),
            md5: Some("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$bWQ1".into()),
            sha1: None,
        },
        email_verified_at: None,
        created_at: t,
        updated_at: t,
    }
}

/// A new key for the suite (and for backends' own tests), not yet stored.
pub fn new_key(account: Option<&AccountId>, created_by: Option<&UserId>, name: &str) -> ApiKey {
    let generated = key::generate("kg", Environment::Test).expect("the test prefix is valid");
    ApiKey {
        id: KeyId::generate(),
        account_id: account.cloned(),
        created_by: created_by.cloned(),
        name: name.into(),
        description: String::new(),
        scope: Scope::Write,
        environment: Environment::Test,
        hash: generated.hash,
        start: generated.start.clone(),
        last4: generated.last4.clone(),
        expires_at: None,
        revoked_at: None,
        rolled_to: None,
        rate_limit: None,
        permissions: Vec::new(),
        metadata: json!({"purpose": "conformance"}),
        created_at: now(),
        last_used_at: None,
    }
}

fn signing_key(
    label: &str,
    created_at: OffsetDateTime,
    retired_at: Option<OffsetDateTime>,
) -> SigningKeyRecord {
    SigningKeyRecord {
        kid: unique(label),
        alg: "EdDSA".into(),
        sealed: json!({"v": 1, "sealed": unique("sealed")}).to_string(),
        created_at,
        retired_at,
    }
}

/// The records of `mine` among `listed`, in the listed order.
fn only_signing_keys(
    listed: Vec<SigningKeyRecord>,
    mine: &[SigningKeyRecord],
) -> Vec<SigningKeyRecord> {
    listed
        .into_iter()
        .filter(|k| mine.iter().any(|m| m.kid == k.kid))
        .collect()
}

const ALL_REVOCATION_KINDS: [RevocationKind; 5] = [
    RevocationKind::Token,
    RevocationKind::Key,
    RevocationKind::User,
    RevocationKind::Account,
    RevocationKind::SigningKeys,
];

/// An entry to publish, with a subject of the shape its kind has. A new kind does not compile
/// here until it gets one; add it to [`ALL_REVOCATION_KINDS`] as well.
fn revocation(
    kind: RevocationKind,
    expires_at: Option<OffsetDateTime>,
    created_at: OffsetDateTime,
) -> Revocation {
    let subject = match kind {
        RevocationKind::Token => unique("jti"),
        RevocationKind::Key => KeyHash::of(&unique("ak_test_revoked")).to_hex(),
        RevocationKind::User => UserId::generate().to_string(),
        RevocationKind::Account => AccountId::generate().to_string(),
        RevocationKind::SigningKeys => String::new(),
    };
    Revocation {
        id: 0,
        kind,
        subject,
        expires_at,
        created_at,
    }
}

fn usage(key: &ApiKey, day: i32, requests: u64, at: OffsetDateTime) -> UsageIncrement {
    UsageIncrement {
        key_id: key.id.clone(),
        account_id: key.account_id.clone(),
        day,
        requests,
        last_used_at: at,
    }
}

fn row(key: &ApiKey, day: i32, requests: u64) -> UsageRow {
    UsageRow {
        key_id: key.id.clone(),
        day,
        requests,
    }
}

fn page(after: Option<&str>, limit: u32) -> PageRequest {
    PageRequest {
        after: after.map(str::to_owned),
        limit,
    }
}

/// The current time cut to whole milliseconds, the precision the backends keep.
fn now() -> OffsetDateTime {
    let t = OffsetDateTime::now_utc();
    t.replace_nanosecond(t.nanosecond() / 1_000_000 * 1_000_000)
        .expect("a whole number of milliseconds is a valid nanosecond")
}

/// A name no other run or function uses: a per-process counter and the random tail of a fresh
/// id, so suites that share a database never collide.
fn unique(label: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let id = AccountId::generate();
    let tail = &id.as_str()[id.as_str().len() - 10..];
    format!("{label}-{n}-{tail}")
}

fn ok<T>(result: StoreResult<T>, what: &str) -> T {
    match result {
        Ok(value) => value,
        Err(err) => panic!("{what}: expected success, got {err:?}"),
    }
}

fn not_found<T: Debug>(result: StoreResult<T>, what: &str) {
    match result {
        Err(StoreError::NotFound) => {}
        other => panic!("{what}: expected NotFound, got {other:?}"),
    }
}

fn conflict<T: Debug>(result: StoreResult<T>, rule: &str, what: &str) {
    match result {
        Err(StoreError::Conflict(r)) if r == rule => {}
        other => panic!("{what}: expected Conflict({rule:?}), got {other:?}"),
    }
}
