//! The queries both backends share, written once. `sql_store!` instantiates them for a pool
//! type; everything in it must be valid for SQLite and PostgreSQL alike, and the conformance
//! suite runs against both to keep it so.

use keygate_store::{StoreError, StoreResult};
use time::OffsetDateTime;

pub(crate) fn to_ms(t: OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

pub(crate) fn from_ms(ms: i64) -> StoreResult<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .map_err(|_| corrupt("timestamp"))
}

pub(crate) fn opt_from_ms(ms: Option<i64>) -> StoreResult<Option<OffsetDateTime>> {
    ms.map(from_ms).transpose()
}

pub(crate) fn corrupt(what: &str) -> StoreError {
    StoreError::Backend(format!("a stored {what} could not be read back"))
}

pub(crate) const ACCOUNT_COLUMNS: &str =
    "id, name, email, plan, status, api_key_id, created_at, updated_at";
pub(crate) const USER_COLUMNS: &str =
    "id, account_id, email, username, first_name, last_name, role, \
     password_verifier, md5_verifier, sha1_verifier, created_at, updated_at, email_verified_at";
pub(crate) const SESSION_COLUMNS: &str = "token_hash, account_id, user_id, created_at, expires_at";
pub(crate) const LINK_COLUMNS: &str =
    "token_hash, purpose, account_id, user_id, email, role, created_by, \
     created_at, expires_at, used_at";
pub(crate) const CREDIT_COLUMNS: &str =
    "id, account_id, amount, balance_after, kind, idempotency_key, description, key_id, created_at";
pub(crate) const KEY_COLUMNS: &str = "k.id, k.account_id, k.created_by, k.name, k.description, k.scope, \
     k.environment, k.key_hash, k.start, k.last4, k.expires_at, k.revoked_at, k.rolled_to, k.rate_limit, \
     k.metadata, k.created_at, k.permissions, \
     COALESCE((SELECT u.last_used_at FROM usage_daily u WHERE u.key_id = k.id ORDER BY u.day DESC LIMIT 1), \
     k.last_used_at) AS last_used_at";

macro_rules! sql_store {
    ($Store:ident, $Db:ty) => {
        use async_trait::async_trait;
        use keygate_core::{AccountId, Environment, KeyHash, KeyId, Scope, UserId};
        use keygate_store::{
            Account, AccountStatus, ApiKey, AuditEntry, AuditFilter, CreditEntry, CreditKind, CreditOutcome, CreditState, CredentialDigest, EmailLink, KeyFilter, KeyWithAccount,
            LinkPurpose, Page, PageRequest, PasswordVerifiers, Revocation, RevocationKind, Role, Session, SigningKeyRecord,
            Store, StoreError, StoreResult, UsageIncrement, UsageRow, User,
        };
        use sqlx::Row as _;
        use time::OffsetDateTime;

        use $crate::map_err;
        use $crate::queries::{
            corrupt, from_ms, opt_from_ms, to_ms, ACCOUNT_COLUMNS, CREDIT_COLUMNS, KEY_COLUMNS, LINK_COLUMNS,
            SESSION_COLUMNS, USER_COLUMNS,
        };

        type DbRow = <$Db as sqlx::Database>::Row;

        fn text(row: &DbRow, col: &str) -> StoreResult<String> {
            row.try_get::<String, _>(col).map_err(map_err)
        }

        fn opt_text(row: &DbRow, col: &str) -> StoreResult<Option<String>> {
            row.try_get::<Option<String>, _>(col).map_err(map_err)
        }

        fn int(row: &DbRow, col: &str) -> StoreResult<i64> {
            row.try_get::<i64, _>(col).map_err(map_err)
        }

        fn opt_int(row: &DbRow, col: &str) -> StoreResult<Option<i64>> {
            row.try_get::<Option<i64>, _>(col).map_err(map_err)
        }

        /// Reads an account; `p` is the column prefix used when it was joined (`a_`).
        fn account_from_row(row: &DbRow, p: &str) -> StoreResult<Account> {
            let col = |c: &str| format!("{p}{c}");
            Ok(Account {
                id: AccountId::from_trusted(text(row, &col("id"))?),
                name: text(row, &col("name"))?,
                email: text(row, &col("email"))?,
                plan: text(row, &col("plan"))?,
                status: AccountStatus::parse(&text(row, &col("status"))?)
                    .ok_or_else(|| corrupt("account status"))?,
                api_key_id: opt_text(row, &col("api_key_id"))?.map(KeyId::from_trusted),
                created_at: from_ms(int(row, &col("created_at"))?)?,
                updated_at: from_ms(int(row, &col("updated_at"))?)?,
            })
        }

        fn user_from_row(row: &DbRow) -> StoreResult<User> {
            Ok(User {
                id: UserId::from_trusted(text(row, "id")?),
                account_id: AccountId::from_trusted(text(row, "account_id")?),
                email: text(row, "email")?,
                username: text(row, "username")?,
                first_name: text(row, "first_name")?,
                last_name: text(row, "last_name")?,
                role: Role::parse(&text(row, "role")?).ok_or_else(|| corrupt("role"))?,
                verifiers: PasswordVerifiers {
                    password: opt_text(row, "password_verifier")?,
                    md5: opt_text(row, "md5_verifier")?,
                    sha1: opt_text(row, "sha1_verifier")?,
                },
                email_verified_at: opt_from_ms(opt_int(row, "email_verified_at")?)?,
                created_at: from_ms(int(row, "created_at")?)?,
                updated_at: from_ms(int(row, "updated_at")?)?,
            })
        }

        fn key_from_row(row: &DbRow) -> StoreResult<ApiKey> {
            let metadata = text(row, "metadata")?;
            Ok(ApiKey {
                id: KeyId::from_trusted(text(row, "id")?),
                account_id: opt_text(row, "account_id")?.map(AccountId::from_trusted),
                created_by: opt_text(row, "created_by")?.map(UserId::from_trusted),
                name: text(row, "name")?,
                description: text(row, "description")?,
                scope: text(row, "scope")?.parse::<Scope>().map_err(|_| corrupt("scope"))?,
                environment: Environment::parse(&text(row, "environment")?)
                    .ok_or_else(|| corrupt("environment"))?,
                hash: KeyHash::from_hex(&text(row, "key_hash")?).ok_or_else(|| corrupt("key hash"))?,
                start: text(row, "start")?,
                last4: text(row, "last4")?,
                expires_at: opt_from_ms(opt_int(row, "expires_at")?)?,
                revoked_at: opt_from_ms(opt_int(row, "revoked_at")?)?,
                rolled_to: opt_text(row, "rolled_to")?.map(KeyId::from_trusted),
                rate_limit: opt_text(row, "rate_limit")?,
                permissions: text(row, "permissions")?
                    .split(',')
                    .filter(|p| !p.is_empty())
                    .map(str::to_owned)
                    .collect(),
                metadata: serde_json::from_str(&metadata).map_err(|_| corrupt("key metadata"))?,
                created_at: from_ms(int(row, "created_at")?)?,
                last_used_at: opt_from_ms(opt_int(row, "last_used_at")?)?,
            })
        }

        async fn insert_key<'c, E>(exec: E, k: &ApiKey) -> StoreResult<()>
        where
            E: sqlx::Executor<'c, Database = $Db>,
        {
            sqlx::query(
                "INSERT INTO api_keys (id, account_id, created_by, name, description, scope, environment, \
                 key_hash, start, last4, expires_at, revoked_at, rolled_to, rate_limit, metadata, created_at, \
                 last_used_at, permissions) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, \
                 $16, $17, $18)",
            )
            .bind(k.id.as_str())
            .bind(k.account_id.as_ref().map(|a| a.as_str()))
            .bind(k.created_by.as_ref().map(|u| u.as_str()))
            .bind(&k.name)
            .bind(&k.description)
            .bind(k.scope.as_str())
            .bind(k.environment.as_str())
            .bind(k.hash.to_hex())
            .bind(&k.start)
            .bind(&k.last4)
            .bind(k.expires_at.map(to_ms))
            .bind(k.revoked_at.map(to_ms))
            .bind(k.rolled_to.as_ref().map(|r| r.as_str()))
            .bind(k.rate_limit.as_deref())
            .bind(k.metadata.to_string())
            .bind(to_ms(k.created_at))
            .bind(k.last_used_at.map(to_ms))
            .bind(k.permissions.join(","))
            .execute(exec)
            .await
            .map_err(map_err)?;
            Ok(())
        }

        async fn write_key<'c, E>(exec: E, k: &ApiKey) -> StoreResult<()>
        where
            E: sqlx::Executor<'c, Database = $Db>,
        {
            let done = sqlx::query(
                "UPDATE api_keys SET name = $1, description = $2, scope = $3, expires_at = $4, revoked_at = $5, \
                 rolled_to = $6, rate_limit = $7, metadata = $8, permissions = $9 WHERE id = $10",
            )
            .bind(&k.name)
            .bind(&k.description)
            .bind(k.scope.as_str())
            .bind(k.expires_at.map(to_ms))
            .bind(k.revoked_at.map(to_ms))
            .bind(k.rolled_to.as_ref().map(|r| r.as_str()))
            .bind(k.rate_limit.as_deref())
            .bind(k.metadata.to_string())
            .bind(k.permissions.join(","))
            .bind(k.id.as_str())
            .execute(exec)
            .await
            .map_err(map_err)?;
            if done.rows_affected() == 0 {
                return Err(StoreError::NotFound);
            }
            Ok(())
        }

        async fn insert_user<'c, E>(exec: E, u: &User) -> StoreResult<()>
        where
            E: sqlx::Executor<'c, Database = $Db>,
        {
            sqlx::query(
                "INSERT INTO users (id, account_id, email, username, first_name, last_name, role, \
                 password_verifier, md5_verifier, sha1_verifier, created_at, updated_at, email_verified_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
            )
            .bind(u.id.as_str())
            .bind(u.account_id.as_str())
            .bind(&u.email)
            .bind(u.username.to_lowercase())
            .bind(&u.first_name)
            .bind(&u.last_name)
            .bind(u.role.as_str())
            .bind(u.verifiers.password.as_deref())
            .bind(u.verifiers.md5.as_deref())
            .bind(u.verifiers.sha1.as_deref())
            .bind(to_ms(u.created_at))
            .bind(to_ms(u.updated_at))
            .bind(u.email_verified_at.map(to_ms))
            .execute(exec)
            .await
            .map_err(map_err)?;
            Ok(())
        }

        async fn insert_account<'c, E>(exec: E, a: &Account) -> StoreResult<()>
        where
            E: sqlx::Executor<'c, Database = $Db>,
        {
            sqlx::query(
                    "INSERT INTO accounts (id, name, name_lower, email, plan, status, created_at, updated_at, \
                     api_key_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                )
                .bind(a.id.as_str())
                .bind(&a.name)
                .bind(a.name.to_lowercase())
                .bind(&a.email)
                .bind(&a.plan)
                .bind(a.status.as_str())
                .bind(to_ms(a.created_at))
                .bind(to_ms(a.updated_at))
                .bind(a.api_key_id.as_ref().map(|k| k.as_str()))
                .execute(exec)
                .await
                .map_err(map_err)?;
            Ok(())
        }

        /// Appends the WHERE conditions of a key listing (without the cursor).
        fn push_key_filter(
            qb: &mut sqlx::QueryBuilder<'_, $Db>,
            account: Option<&AccountId>,
            filter: KeyFilter,
            now: i64,
        ) {
            match account {
                Some(a) => {
                    qb.push(" WHERE k.account_id = ").push_bind(a.as_str().to_owned());
                }
                None => {
                    qb.push(" WHERE k.account_id IS NULL");
                }
            }
            match filter {
                KeyFilter::All => {}
                KeyFilter::Active => {
                    qb.push(" AND (k.revoked_at IS NULL OR k.revoked_at > ")
                        .push_bind(now)
                        .push(") AND (k.expires_at IS NULL OR k.expires_at > ")
                        .push_bind(now)
                        .push(")");
                }
                KeyFilter::Revoked => {
                    qb.push(" AND k.revoked_at <= ").push_bind(now);
                }
                KeyFilter::Expired => {
                    qb.push(" AND (k.revoked_at IS NULL OR k.revoked_at > ")
                        .push_bind(now)
                        .push(") AND k.expires_at <= ")
                        .push_bind(now);
                }
            }
        }

        /// Runs a paged listing: `base` selects, `filter` adds the conditions both the count and
        /// the page share; the page walks ids upwards from the cursor.
        async fn paged<T>(
            pool: &sqlx::Pool<$Db>,
            select: &str,
            from: &str,
            filter: &(dyn Fn(&mut sqlx::QueryBuilder<'_, $Db>) + Sync),
            id_col: &str,
            page: &PageRequest,
            convert: fn(&DbRow) -> StoreResult<T>,
        ) -> StoreResult<Page<T>> {
            let mut count = sqlx::QueryBuilder::<$Db>::new("SELECT COUNT(*) AS n FROM ");
            count.push(from);
            filter(&mut count);
            let total = int(&count.build().fetch_one(pool).await.map_err(map_err)?, "n")?;

            let mut q = sqlx::QueryBuilder::<$Db>::new("SELECT ");
            q.push(select).push(" FROM ").push(from);
            filter(&mut q);
            if let Some(after) = &page.after {
                q.push(" AND ").push(id_col).push(" > ").push_bind(after.clone());
            }
            q.push(" ORDER BY ").push(id_col).push(" LIMIT ").push_bind(page.limit as i64 + 1);
            let rows = q.build().fetch_all(pool).await.map_err(map_err)?;
            let has_more = rows.len() > page.limit as usize;
            let items = rows
                .iter()
                .take(page.limit as usize)
                .map(convert)
                .collect::<StoreResult<Vec<T>>>()?;
            Ok(Page { items, total: total as u64, has_more })
        }

        /// A key joined with its account, by `column` (`k.key_hash` or `k.id`).
        async fn key_with_account(pool: &sqlx::Pool<$Db>, column: &str, value: String) -> StoreResult<KeyWithAccount> {
            let sql = format!(
                "SELECT {KEY_COLUMNS}, a.id AS a_id, a.name AS a_name, a.email AS a_email, a.plan AS a_plan, \
                 a.status AS a_status, a.api_key_id AS a_api_key_id, a.created_at AS a_created_at, a.updated_at AS a_updated_at \
                 FROM api_keys k LEFT JOIN accounts a ON a.id = k.account_id WHERE {column} = $1"
            );
            let row = sqlx::query(&sql).bind(value).fetch_one(pool).await.map_err(map_err)?;
            let key = key_from_row(&row)?;
            let account = match opt_text(&row, "a_id")? {
                Some(_) => Some(std::sync::Arc::new(account_from_row(&row, "a_")?)),
                None if key.account_id.is_some() => return Err(StoreError::NotFound),
                None => None,
            };
            Ok(KeyWithAccount { key, account })
        }

        fn credit_from_row(row: &DbRow) -> StoreResult<CreditEntry> {
            Ok(CreditEntry {
                id: text(row, "id")?,
                account_id: AccountId::from_trusted(text(row, "account_id")?),
                amount: int(row, "amount")?,
                balance_after: int(row, "balance_after")?,
                kind: CreditKind::parse(&text(row, "kind")?).ok_or_else(|| corrupt("credit kind"))?,
                idempotency_key: text(row, "idempotency_key")?,
                description: text(row, "description")?,
                key_id: opt_text(row, "key_id")?.map(KeyId::from_trusted),
                created_at: from_ms(int(row, "created_at")?)?,
            })
        }

        async fn credit_by_idempotency<'c, E>(exec: E, account: &AccountId, key: &str) -> StoreResult<Option<CreditEntry>>
        where
            E: sqlx::Executor<'c, Database = $Db>,
        {
            let sql = format!(
                "SELECT {CREDIT_COLUMNS} FROM credit_ledger WHERE account_id = $1 AND idempotency_key = $2"
            );
            let row = sqlx::query(&sql)
                .bind(account.as_str())
                .bind(key)
                .fetch_optional(exec)
                .await
                .map_err(map_err)?;
            row.as_ref().map(credit_from_row).transpose()
        }

        async fn insert_credit<'c, E>(exec: E, e: &CreditEntry) -> StoreResult<()>
        where
            E: sqlx::Executor<'c, Database = $Db>,
        {
            sqlx::query(
                "INSERT INTO credit_ledger (id, account_id, amount, balance_after, kind, idempotency_key, \
                 description, key_id, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            )
            .bind(&e.id)
            .bind(e.account_id.as_str())
            .bind(e.amount)
            .bind(e.balance_after)
            .bind(e.kind.as_str())
            .bind(&e.idempotency_key)
            .bind(&e.description)
            .bind(e.key_id.as_ref().map(|k| k.as_str()))
            .bind(to_ms(e.created_at))
            .execute(exec)
            .await
            .map_err(map_err)?;
            Ok(())
        }

        fn audit_from_row(row: &DbRow) -> StoreResult<AuditEntry> {
            Ok(AuditEntry {
                id: text(row, "id")?,
                at: from_ms(int(row, "at")?)?,
                action: text(row, "action")?,
                account_id: opt_text(row, "account_id")?.map(AccountId::from_trusted),
                actor_key_id: opt_text(row, "actor_key_id")?.map(KeyId::from_trusted),
                actor_user_id: opt_text(row, "actor_user_id")?.map(UserId::from_trusted),
                object_type: text(row, "object_type")?,
                object_id: opt_text(row, "object_id")?,
                client_addr: opt_text(row, "client_addr")?,
                request_id: opt_text(row, "request_id")?,
                details: serde_json::from_str(&text(row, "details")?).map_err(|_| corrupt("audit details"))?,
            })
        }

        /// The WHERE clause of an audit listing (always present, so callers append `AND …`).
        fn push_audit_filter(qb: &mut sqlx::QueryBuilder<'_, $Db>, f: &AuditFilter) {
            qb.push(" WHERE 1 = 1");
            if let Some(a) = &f.account_id {
                qb.push(" AND account_id = ").push_bind(a.as_str().to_owned());
            }
            match f.action.as_deref() {
                Some(prefix) if prefix.ends_with('.') => {
                    // A prefix match without LIKE, whose wildcards the action could contain.
                    qb.push(" AND substr(action, 1, ")
                        .push_bind(prefix.len() as i32)
                        .push(") = ")
                        .push_bind(prefix.to_owned());
                }
                Some(action) => {
                    qb.push(" AND action = ").push_bind(action.to_owned());
                }
                None => {}
            }
            if let Some(actor) = &f.actor {
                qb.push(" AND (actor_key_id = ")
                    .push_bind(actor.clone())
                    .push(" OR actor_user_id = ")
                    .push_bind(actor.clone())
                    .push(")");
            }
            if let Some(object) = &f.object_id {
                qb.push(" AND object_id = ").push_bind(object.clone());
            }
            if let Some(since) = f.since {
                qb.push(" AND at >= ").push_bind(to_ms(since));
            }
            if let Some(until) = f.until {
                qb.push(" AND at < ").push_bind(to_ms(until));
            }
        }

        fn revocation_from_row(row: &DbRow) -> StoreResult<Revocation> {
            Ok(Revocation {
                id: int(row, "id")?,
                kind: RevocationKind::parse(&text(row, "kind")?).ok_or_else(|| corrupt("revocation kind"))?,
                subject: text(row, "subject")?,
                expires_at: opt_from_ms(opt_int(row, "expires_at")?)?,
                created_at: from_ms(int(row, "created_at")?)?,
            })
        }

        fn session_from_row(row: &DbRow) -> StoreResult<Session> {
            Ok(Session {
                token_hash: text(row, "token_hash")?,
                account_id: AccountId::from_trusted(text(row, "account_id")?),
                user_id: UserId::from_trusted(text(row, "user_id")?),
                created_at: from_ms(int(row, "created_at")?)?,
                expires_at: from_ms(int(row, "expires_at")?)?,
            })
        }

        fn link_from_row(row: &DbRow) -> StoreResult<EmailLink> {
            Ok(EmailLink {
                token_hash: text(row, "token_hash")?,
                purpose: LinkPurpose::parse(&text(row, "purpose")?).ok_or_else(|| corrupt("link purpose"))?,
                account_id: AccountId::from_trusted(text(row, "account_id")?),
                user_id: opt_text(row, "user_id")?.map(UserId::from_trusted),
                email: text(row, "email")?,
                role: match opt_text(row, "role")? {
                    Some(r) => Some(Role::parse(&r).ok_or_else(|| corrupt("role"))?),
                    None => None,
                },
                created_by: opt_text(row, "created_by")?.map(UserId::from_trusted),
                created_at: from_ms(int(row, "created_at")?)?,
                expires_at: from_ms(int(row, "expires_at")?)?,
                used_at: opt_from_ms(opt_int(row, "used_at")?)?,
            })
        }

        #[async_trait]
        impl Store for $Store {
            fn backend_name(&self) -> &'static str {
                Self::BACKEND
            }

            async fn migrate(&self) -> StoreResult<()> {
                self.run_migrations().await
            }

            async fn ping(&self) -> StoreResult<()> {
                sqlx::query("SELECT 1").execute(&self.pool).await.map_err(map_err)?;
                Ok(())
            }

            async fn create_account(&self, a: &Account, owner: &User, first_key: &ApiKey) -> StoreResult<()> {
                let mut tx = self.pool.begin().await.map_err(map_err)?;
                insert_account(&mut *tx, a).await?;
                insert_user(&mut *tx, owner).await?;
                insert_key(&mut *tx, first_key).await?;
                tx.commit().await.map_err(map_err)
            }

            async fn create_account_with_owner(&self, a: &Account, owner: &User) -> StoreResult<()> {
                let mut tx = self.pool.begin().await.map_err(map_err)?;
                insert_account(&mut *tx, a).await?;
                insert_user(&mut *tx, owner).await?;
                tx.commit().await.map_err(map_err)
            }

            async fn get_account(&self, id: &AccountId) -> StoreResult<Account> {
                let sql = format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE id = $1");
                let row = sqlx::query(&sql).bind(id.as_str()).fetch_one(&self.pool).await.map_err(map_err)?;
                account_from_row(&row, "")
            }

            async fn find_account_by_name(&self, name: &str) -> StoreResult<Account> {
                let sql = format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE name_lower = $1");
                let row = sqlx::query(&sql)
                    .bind(name.to_lowercase())
                    .fetch_one(&self.pool)
                    .await
                    .map_err(map_err)?;
                account_from_row(&row, "")
            }

            async fn update_account(&self, a: &Account) -> StoreResult<()> {
                let done = sqlx::query(
                    "UPDATE accounts SET name = $1, name_lower = $2, email = $3, plan = $4, status = $5, \
                     updated_at = $6, api_key_id = $7 WHERE id = $8",
                )
                .bind(&a.name)
                .bind(a.name.to_lowercase())
                .bind(&a.email)
                .bind(&a.plan)
                .bind(a.status.as_str())
                .bind(to_ms(a.updated_at))
                .bind(a.api_key_id.as_ref().map(|k| k.as_str()))
                .bind(a.id.as_str())
                .execute(&self.pool)
                .await
                .map_err(map_err)?;
                if done.rows_affected() == 0 {
                    return Err(StoreError::NotFound);
                }
                Ok(())
            }

            async fn delete_account(&self, id: &AccountId) -> StoreResult<()> {
                let mut tx = self.pool.begin().await.map_err(map_err)?;
                // The foreign keys cascade to users and keys; usage rows are kept apart from
                // them (they are written in batches, possibly after a key is gone).
                sqlx::query("DELETE FROM usage_daily WHERE account_id = $1")
                    .bind(id.as_str())
                    .execute(&mut *tx)
                    .await
                    .map_err(map_err)?;
                for table in ["api_keys", "users"] {
                    sqlx::query(&format!("DELETE FROM {table} WHERE account_id = $1"))
                        .bind(id.as_str())
                        .execute(&mut *tx)
                        .await
                        .map_err(map_err)?;
                }
                let done = sqlx::query("DELETE FROM accounts WHERE id = $1")
                    .bind(id.as_str())
                    .execute(&mut *tx)
                    .await
                    .map_err(map_err)?;
                if done.rows_affected() == 0 {
                    return Err(StoreError::NotFound);
                }
                tx.commit().await.map_err(map_err)
            }

            async fn list_accounts(&self, page: &PageRequest) -> StoreResult<Page<Account>> {
                paged(
                    &self.pool,
                    ACCOUNT_COLUMNS,
                    "accounts",
                    &|qb| {
                        qb.push(" WHERE 1 = 1");
                    },
                    "id",
                    page,
                    |r| account_from_row(r, ""),
                )
                .await
            }

            async fn create_user(&self, u: &User) -> StoreResult<()> {
                insert_user(&self.pool, u).await
            }

            async fn get_user(&self, account: &AccountId, id: &UserId) -> StoreResult<User> {
                let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE account_id = $1 AND id = $2");
                let row = sqlx::query(&sql)
                    .bind(account.as_str())
                    .bind(id.as_str())
                    .fetch_one(&self.pool)
                    .await
                    .map_err(map_err)?;
                user_from_row(&row)
            }

            async fn find_user_by_username(&self, account: &AccountId, username: &str) -> StoreResult<User> {
                let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE account_id = $1 AND username = $2");
                let row = sqlx::query(&sql)
                    .bind(account.as_str())
                    .bind(username.to_lowercase())
                    .fetch_one(&self.pool)
                    .await
                    .map_err(map_err)?;
                user_from_row(&row)
            }

            async fn find_user_by_credential(
                &self,
                account: &AccountId,
                digest: CredentialDigest,
                lookup: &str,
            ) -> StoreResult<User> {
                let column = match digest {
                    CredentialDigest::Md5 => "md5_verifier",
                    CredentialDigest::Sha1 => "sha1_verifier",
                };
                let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE account_id = $1 AND {column} = $2");
                let row = sqlx::query(&sql)
                    .bind(account.as_str())
                    .bind(lookup)
                    .fetch_one(&self.pool)
                    .await
                    .map_err(map_err)?;
                user_from_row(&row)
            }

            async fn update_user(&self, u: &User) -> StoreResult<()> {
                let done = sqlx::query(
                    // A changed address is no longer a verified one. (SET reads the row as it
                    // was, so the CASE compares with the old address.)
                    "UPDATE users SET email_verified_at = CASE WHEN email = $1 THEN email_verified_at ELSE NULL END, \
                     email = $1, username = $2, first_name = $3, last_name = $4, role = $5, \
                     password_verifier = $6, md5_verifier = $7, sha1_verifier = $8, updated_at = $9 \
                     WHERE account_id = $10 AND id = $11",
                )
                .bind(&u.email)
                .bind(u.username.to_lowercase())
                .bind(&u.first_name)
                .bind(&u.last_name)
                .bind(u.role.as_str())
                .bind(u.verifiers.password.as_deref())
                .bind(u.verifiers.md5.as_deref())
                .bind(u.verifiers.sha1.as_deref())
                .bind(to_ms(u.updated_at))
                .bind(u.account_id.as_str())
                .bind(u.id.as_str())
                .execute(&self.pool)
                .await
                .map_err(map_err)?;
                if done.rows_affected() == 0 {
                    return Err(StoreError::NotFound);
                }
                Ok(())
            }

            async fn delete_user(&self, account: &AccountId, id: &UserId) -> StoreResult<()> {
                let done = sqlx::query("DELETE FROM users WHERE account_id = $1 AND id = $2")
                    .bind(account.as_str())
                    .bind(id.as_str())
                    .execute(&self.pool)
                    .await
                    .map_err(map_err)?;
                if done.rows_affected() == 0 {
                    return Err(StoreError::NotFound);
                }
                Ok(())
            }

            async fn list_users(&self, account: &AccountId, page: &PageRequest) -> StoreResult<Page<User>> {
                let account = account.as_str().to_owned();
                paged(
                    &self.pool,
                    USER_COLUMNS,
                    "users",
                    &|qb| {
                        qb.push(" WHERE account_id = ").push_bind(account.clone());
                    },
                    "id",
                    page,
                    user_from_row,
                )
                .await
            }

            async fn create_key(&self, k: &ApiKey) -> StoreResult<()> {
                insert_key(&self.pool, k).await
            }

            async fn create_keys(&self, keys: &[ApiKey]) -> StoreResult<()> {
                if keys.is_empty() {
                    return Ok(());
                }
                let mut tx = self.pool.begin().await.map_err(map_err)?;
                // Multi-row INSERTs: 18 binds a row, so 500 rows stay well under the bind limits
                // of SQLite (32,766) and PostgreSQL (65,535).
                for chunk in keys.chunks(500) {
                    let mut q = sqlx::QueryBuilder::<$Db>::new(
                        "INSERT INTO api_keys (id, account_id, created_by, name, description, scope, environment, \
                         key_hash, start, last4, expires_at, revoked_at, rolled_to, rate_limit, metadata, created_at, \
                         last_used_at, permissions) ",
                    );
                    q.push_values(chunk, |mut b, k| {
                        b.push_bind(k.id.as_str())
                            .push_bind(k.account_id.as_ref().map(|a| a.as_str()))
                            .push_bind(k.created_by.as_ref().map(|u| u.as_str()))
                            .push_bind(k.name.as_str())
                            .push_bind(k.description.as_str())
                            .push_bind(k.scope.as_str())
                            .push_bind(k.environment.as_str())
                            .push_bind(k.hash.to_hex())
                            .push_bind(k.start.as_str())
                            .push_bind(k.last4.as_str())
                            .push_bind(k.expires_at.map(to_ms))
                            .push_bind(k.revoked_at.map(to_ms))
                            .push_bind(k.rolled_to.as_ref().map(|r| r.as_str()))
                            .push_bind(k.rate_limit.as_deref())
                            .push_bind(k.metadata.to_string())
                            .push_bind(to_ms(k.created_at))
                            .push_bind(k.last_used_at.map(to_ms))
                            .push_bind(k.permissions.join(","));
                    });
                    q.build().execute(&mut *tx).await.map_err(map_err)?;
                }
                tx.commit().await.map_err(map_err)
            }

            async fn get_key(&self, account: Option<&AccountId>, id: &KeyId) -> StoreResult<ApiKey> {
                let mut q = sqlx::QueryBuilder::<$Db>::new("SELECT ");
                q.push(KEY_COLUMNS).push(" FROM api_keys k");
                push_key_filter(&mut q, account, KeyFilter::All, 0);
                q.push(" AND k.id = ").push_bind(id.as_str().to_owned());
                let row = q.build().fetch_one(&self.pool).await.map_err(map_err)?;
                key_from_row(&row)
            }

            async fn find_key_by_hash(&self, hash: &KeyHash) -> StoreResult<KeyWithAccount> {
                key_with_account(&self.pool, "k.key_hash", hash.to_hex()).await
            }

            async fn find_key_by_id(&self, id: &KeyId) -> StoreResult<KeyWithAccount> {
                key_with_account(&self.pool, "k.id", id.as_str().to_owned()).await
            }

            async fn list_keys(
                &self,
                account: Option<&AccountId>,
                filter: KeyFilter,
                now: OffsetDateTime,
                page: &PageRequest,
            ) -> StoreResult<Page<ApiKey>> {
                let now = to_ms(now);
                paged(
                    &self.pool,
                    KEY_COLUMNS,
                    "api_keys k",
                    &|qb| push_key_filter(qb, account, filter, now),
                    "k.id",
                    page,
                    key_from_row,
                )
                .await
            }

            async fn update_key(&self, k: &ApiKey) -> StoreResult<()> {
                write_key(&self.pool, k).await
            }

            async fn roll_key(&self, old: &ApiKey, new: &ApiKey) -> StoreResult<()> {
                let mut tx = self.pool.begin().await.map_err(map_err)?;
                insert_key(&mut *tx, new).await?;
                write_key(&mut *tx, old).await?;
                tx.commit().await.map_err(map_err)
            }

            async fn record_usage(&self, batch: &[UsageIncrement]) -> StoreResult<()> {
                // Several nodes flush batches at once. Each transaction locks its rows in one
                // fixed order, by (key, day), so that no two flushes wait on each other in a
                // cycle (PostgreSQL would abort one with "deadlock detected"). Merging first
                // also writes each row once per batch. The server's flush hands batches over
                // already in that order, each row once, and they are written as they are.
                let in_order = batch
                    .windows(2)
                    .all(|w| (w[0].key_id.as_str(), w[0].day) < (w[1].key_id.as_str(), w[1].day));
                let merged: Vec<UsageIncrement>;
                let rows = if in_order {
                    batch
                } else {
                    let mut rows = std::collections::BTreeMap::new();
                    for u in batch {
                        rows.entry((u.key_id.as_str(), u.day))
                            .and_modify(|r: &mut UsageIncrement| {
                                r.requests += u.requests;
                                r.last_used_at = r.last_used_at.max(u.last_used_at);
                            })
                            .or_insert_with(|| u.clone());
                    }
                    merged = rows.into_values().collect();
                    &merged[..]
                };
                // Many rows per statement: a flush of 20,000 keys is 100 statements, not 20,000.
                const ROWS_PER_STATEMENT: usize = 200;
                // A connection of its own (see each store's `usage_connection`). After a
                // failure it is dropped and the next batch opens a new one: a broken link or
                // a transaction left open must not fail every flush after it.
                let mut slot = self.usage_connection().await?;
                let Some(conn) = slot.as_mut() else {
                    return Err(keygate_store::StoreError::Backend("no usage connection".into()));
                };
                let written: StoreResult<()> = async {
                let mut tx = sqlx::Connection::begin(conn).await.map_err(map_err)?;
                for chunk in rows.chunks(ROWS_PER_STATEMENT) {
                    let mut q = sqlx::QueryBuilder::<$Db>::new(
                        "INSERT INTO usage_daily (key_id, account_id, day, requests, last_used_at) ",
                    );
                    q.push_values(chunk, |mut row, u| {
                        row.push_bind(u.key_id.as_str())
                            .push_bind(u.account_id.as_ref().map(|a| a.as_str()))
                            .push_bind(u.day)
                            .push_bind(u.requests as i64)
                            .push_bind(to_ms(u.last_used_at));
                    });
                    // The key's last use rides on the day's row: it only moves forward, since
                    // batches from several nodes may arrive out of order. A row written before
                    // this column existed has none yet.
                    q.push(
                        " ON CONFLICT (key_id, day) DO UPDATE SET requests = usage_daily.requests + excluded.requests, \
                         last_used_at = CASE WHEN usage_daily.last_used_at IS NULL \
                         OR usage_daily.last_used_at < excluded.last_used_at \
                         THEN excluded.last_used_at ELSE usage_daily.last_used_at END",
                    );
                    q.build().execute(&mut *tx).await.map_err(map_err)?;
                }
                tx.commit().await.map_err(map_err)
                }
                .await;
                if written.is_err() {
                    *slot = None;
                }
                written
            }

            async fn insert_signing_key(&self, k: &SigningKeyRecord) -> StoreResult<()> {
                sqlx::query(
                    "INSERT INTO signing_keys (kid, alg, sealed, created_at, retired_at) VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(&k.kid)
                .bind(&k.alg)
                .bind(&k.sealed)
                .bind(to_ms(k.created_at))
                .bind(k.retired_at.map(to_ms))
                .execute(&self.pool)
                .await
                .map_err(map_err)?;
                Ok(())
            }

            async fn list_signing_keys(&self) -> StoreResult<Vec<SigningKeyRecord>> {
                let rows = sqlx::query(
                    "SELECT kid, alg, sealed, created_at, retired_at FROM signing_keys ORDER BY created_at, kid",
                )
                .fetch_all(&self.pool)
                .await
                .map_err(map_err)?;
                rows.iter()
                    .map(|r| {
                        Ok(SigningKeyRecord {
                            kid: text(r, "kid")?,
                            alg: text(r, "alg")?,
                            sealed: text(r, "sealed")?,
                            created_at: from_ms(int(r, "created_at")?)?,
                            retired_at: opt_from_ms(opt_int(r, "retired_at")?)?,
                        })
                    })
                    .collect()
            }

            async fn retire_signing_keys_except(&self, kid: &str, at: OffsetDateTime) -> StoreResult<()> {
                // Only keys older than the new one: two nodes rotating at once leave the newer
                // key active instead of retiring each other's.
                sqlx::query(
                    "UPDATE signing_keys SET retired_at = $1 WHERE kid <> $2 AND retired_at IS NULL \
                     AND created_at <= (SELECT created_at FROM signing_keys WHERE kid = $2)",
                )
                .bind(to_ms(at))
                .bind(kid)
                    .execute(&self.pool)
                    .await
                    .map_err(map_err)?;
                Ok(())
            }

            async fn publish_revocation(&self, r: &Revocation) -> StoreResult<()> {
                sqlx::query("INSERT INTO revocations (kind, subject, expires_at, created_at) VALUES ($1, $2, $3, $4)")
                    .bind(r.kind.as_str())
                    .bind(&r.subject)
                    .bind(r.expires_at.map(to_ms))
                    .bind(to_ms(r.created_at))
                    .execute(&self.pool)
                    .await
                    .map_err(map_err)?;
                Ok(())
            }

            async fn revocations_after(&self, after_id: i64, limit: u32) -> StoreResult<Vec<Revocation>> {
                let rows = sqlx::query(
                    "SELECT id, kind, subject, expires_at, created_at FROM revocations WHERE id > $1 ORDER BY id LIMIT $2",
                )
                .bind(after_id)
                .bind(limit as i64)
                .fetch_all(&self.pool)
                .await
                .map_err(map_err)?;
                rows.iter().map(revocation_from_row).collect()
            }

            async fn latest_revocation_id(&self) -> StoreResult<i64> {
                let row = sqlx::query("SELECT COALESCE(MAX(id), 0) AS n FROM revocations")
                    .fetch_one(&self.pool)
                    .await
                    .map_err(map_err)?;
                int(&row, "n")
            }

            async fn prune_revocations(&self, now: OffsetDateTime, before: OffsetDateTime) -> StoreResult<u64> {
                let done = sqlx::query(
                    "DELETE FROM revocations WHERE (expires_at IS NOT NULL AND expires_at < $1) \
                     OR (expires_at IS NULL AND created_at < $2)",
                )
                .bind(to_ms(now))
                .bind(to_ms(before))
                .execute(&self.pool)
                .await
                .map_err(map_err)?;
                Ok(done.rows_affected())
            }

            async fn active_token_revocations(&self, now: OffsetDateTime) -> StoreResult<Vec<Revocation>> {
                let rows = sqlx::query(
                    "SELECT id, kind, subject, expires_at, created_at FROM revocations \
                     WHERE kind = 'token' AND expires_at >= $1 ORDER BY id",
                )
                .bind(to_ms(now))
                .fetch_all(&self.pool)
                .await
                .map_err(map_err)?;
                rows.iter().map(revocation_from_row).collect()
            }

            async fn apply_credit(&self, e: &CreditEntry) -> StoreResult<CreditOutcome> {
                let mut tx = self.pool.begin().await.map_err(map_err)?;
                // The balance is written first: on SQLite that takes the write lock before any
                // read (a read-then-write transaction could not wait for another writer), on
                // PostgreSQL it locks the account row, so concurrent debits queue here and each
                // sees the balance the previous one left.
                let updated = sqlx::query(
                    "UPDATE accounts SET credit_balance = credit_balance + $1, \
                     credits_used = credits_used + CASE WHEN $1 < 0 THEN -$1 ELSE 0 END \
                     WHERE id = $2 AND credit_balance + $1 >= 0 RETURNING credit_balance",
                )
                .bind(e.amount)
                .bind(e.account_id.as_str())
                .fetch_optional(&mut *tx)
                .await
                .map_err(map_err)?;
                if let Some(existing) = credit_by_idempotency(&mut *tx, &e.account_id, &e.idempotency_key).await? {
                    tx.rollback().await.map_err(map_err)?;
                    return Ok(CreditOutcome::Duplicate(existing));
                }
                let Some(row) = updated else {
                    let row = sqlx::query("SELECT credit_balance FROM accounts WHERE id = $1")
                        .bind(e.account_id.as_str())
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(map_err)?;
                    tx.rollback().await.map_err(map_err)?;
                    return match row {
                        Some(r) => Ok(CreditOutcome::Insufficient { available: int(&r, "credit_balance")? }),
                        None => Err(StoreError::NotFound),
                    };
                };
                let applied = CreditEntry { balance_after: int(&row, "credit_balance")?, ..e.clone() };
                match insert_credit(&mut *tx, &applied).await {
                    Ok(()) => {}
                    // The same key applied by a concurrent transaction that committed first.
                    Err(StoreError::Conflict(_)) => {
                        drop(tx);
                        return match credit_by_idempotency(&self.pool, &e.account_id, &e.idempotency_key).await? {
                            Some(existing) => Ok(CreditOutcome::Duplicate(existing)),
                            None => Err(StoreError::Backend("credit ledger conflict without an entry".into())),
                        };
                    }
                    Err(err) => return Err(err),
                }
                tx.commit().await.map_err(map_err)?;
                Ok(CreditOutcome::Applied(applied))
            }

            async fn credit_state(&self, account: &AccountId) -> StoreResult<CreditState> {
                let row = sqlx::query(
                    "SELECT credit_balance, credits_used, credits_period FROM accounts WHERE id = $1",
                )
                .bind(account.as_str())
                .fetch_one(&self.pool)
                .await
                .map_err(map_err)?;
                Ok(CreditState {
                    balance: int(&row, "credit_balance")?,
                    used: int(&row, "credits_used")?,
                    period: opt_text(&row, "credits_period")?,
                })
            }

            async fn list_credit_entries(&self, account: &AccountId, page: &PageRequest) -> StoreResult<Page<CreditEntry>> {
                let account = account.as_str().to_owned();
                paged(
                    &self.pool,
                    CREDIT_COLUMNS,
                    "credit_ledger",
                    &|qb| {
                        qb.push(" WHERE account_id = ").push_bind(account.clone());
                    },
                    "id",
                    page,
                    credit_from_row,
                )
                .await
            }

            async fn refill_credits(
                &self,
                account: &AccountId,
                period: &str,
                allowance: i64,
                entry: &CreditEntry,
            ) -> StoreResult<Option<CreditEntry>> {
                let mut tx = self.pool.begin().await.map_err(map_err)?;
                // Claims the period first (a write, so the lock comes before any read); only one
                // node's refill of a month gets a row back.
                let claimed = sqlx::query(
                    "UPDATE accounts SET credits_period = $1 WHERE id = $2 \
                     AND (credits_period IS NULL OR credits_period <> $1) RETURNING credit_balance",
                )
                .bind(period)
                .bind(account.as_str())
                .fetch_optional(&mut *tx)
                .await
                .map_err(map_err)?;
                let Some(row) = claimed else {
                    tx.rollback().await.map_err(map_err)?;
                    return Ok(None);
                };
                let missing = allowance - int(&row, "credit_balance")?;
                if missing <= 0 {
                    tx.commit().await.map_err(map_err)?;
                    return Ok(None);
                }
                let row = sqlx::query(
                    "UPDATE accounts SET credit_balance = credit_balance + $1 WHERE id = $2 RETURNING credit_balance",
                )
                .bind(missing)
                .bind(account.as_str())
                .fetch_one(&mut *tx)
                .await
                .map_err(map_err)?;
                let applied = CreditEntry {
                    account_id: account.clone(),
                    amount: missing,
                    balance_after: int(&row, "credit_balance")?,
                    kind: CreditKind::Refill,
                    idempotency_key: format!("refill:{period}"),
                    ..entry.clone()
                };
                insert_credit(&mut *tx, &applied).await?;
                tx.commit().await.map_err(map_err)?;
                Ok(Some(applied))
            }

            async fn record_audit(&self, e: &AuditEntry) -> StoreResult<()> {
                sqlx::query(
                    "INSERT INTO audit_log (id, at, action, account_id, actor_key_id, actor_user_id, object_type, \
                     object_id, client_addr, request_id, details) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                )
                .bind(&e.id)
                .bind(to_ms(e.at))
                .bind(&e.action)
                .bind(e.account_id.as_ref().map(|a| a.as_str()))
                .bind(e.actor_key_id.as_ref().map(|k| k.as_str()))
                .bind(e.actor_user_id.as_ref().map(|u| u.as_str()))
                .bind(&e.object_type)
                .bind(e.object_id.as_deref())
                .bind(e.client_addr.as_deref())
                .bind(e.request_id.as_deref())
                .bind(e.details.to_string())
                .execute(&self.pool)
                .await
                .map_err(map_err)?;
                Ok(())
            }

            async fn list_audit(&self, filter: &AuditFilter, page: &PageRequest) -> StoreResult<Page<AuditEntry>> {
                let mut count = sqlx::QueryBuilder::<$Db>::new("SELECT COUNT(*) AS n FROM audit_log");
                push_audit_filter(&mut count, filter);
                let total = int(&count.build().fetch_one(&self.pool).await.map_err(map_err)?, "n")?;
                let mut q = sqlx::QueryBuilder::<$Db>::new(
                    "SELECT id, at, action, account_id, actor_key_id, actor_user_id, object_type, object_id, \
                     client_addr, request_id, details FROM audit_log",
                );
                push_audit_filter(&mut q, filter);
                if let Some(after) = &page.after {
                    q.push(" AND id < ").push_bind(after.clone());
                }
                q.push(" ORDER BY id DESC LIMIT ").push_bind(page.limit as i64 + 1);
                let rows = q.build().fetch_all(&self.pool).await.map_err(map_err)?;
                let has_more = rows.len() > page.limit as usize;
                let items = rows
                    .iter()
                    .take(page.limit as usize)
                    .map(audit_from_row)
                    .collect::<StoreResult<Vec<_>>>()?;
                Ok(Page { items, total: total as u64, has_more })
            }

            async fn purge_audit(&self, before: OffsetDateTime) -> StoreResult<u64> {
                let done = sqlx::query("DELETE FROM audit_log WHERE at < $1")
                    .bind(to_ms(before))
                    .execute(&self.pool)
                    .await
                    .map_err(map_err)?;
                Ok(done.rows_affected())
            }

            async fn usage_by_day(&self, account: &AccountId, from_day: i32, to_day: i32) -> StoreResult<Vec<UsageRow>> {
                let rows = sqlx::query(
                    "SELECT key_id, day, requests FROM usage_daily WHERE account_id = $1 AND day >= $2 \
                     AND day <= $3 ORDER BY day, key_id",
                )
                .bind(account.as_str())
                .bind(from_day)
                .bind(to_day)
                .fetch_all(&self.pool)
                .await
                .map_err(map_err)?;
                rows.iter()
                    .map(|r| {
                        Ok(UsageRow {
                            key_id: KeyId::from_trusted(text(r, "key_id")?),
                            day: r.try_get::<i32, _>("day").map_err(map_err)?,
                            requests: int(r, "requests")? as u64,
                        })
                    })
                    .collect()
            }

            async fn find_users_by_email(&self, email: &str, limit: u32) -> StoreResult<Vec<User>> {
                let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE lower(email) = $1 ORDER BY created_at, id LIMIT $2");
                let rows = sqlx::query(&sql)
                    .bind(email.trim().to_ascii_lowercase())
                    .bind(limit as i64)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(map_err)?;
                rows.iter().map(user_from_row).collect()
            }

            async fn mark_email_verified(&self, account: &AccountId, user: &UserId, at: OffsetDateTime) -> StoreResult<()> {
                let done = sqlx::query("UPDATE users SET email_verified_at = $1 WHERE account_id = $2 AND id = $3")
                    .bind(to_ms(at))
                    .bind(account.as_str())
                    .bind(user.as_str())
                    .execute(&self.pool)
                    .await
                    .map_err(map_err)?;
                if done.rows_affected() == 0 {
                    return Err(StoreError::NotFound);
                }
                Ok(())
            }

            async fn create_session(&self, s: &Session) -> StoreResult<()> {
                sqlx::query(
                    "INSERT INTO dashboard_sessions (token_hash, account_id, user_id, created_at, expires_at) \
                     VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(&s.token_hash)
                .bind(s.account_id.as_str())
                .bind(s.user_id.as_str())
                .bind(to_ms(s.created_at))
                .bind(to_ms(s.expires_at))
                .execute(&self.pool)
                .await
                .map_err(map_err)?;
                Ok(())
            }

            async fn find_session(&self, token_hash: &str, now: OffsetDateTime) -> StoreResult<Session> {
                let sql = format!("SELECT {SESSION_COLUMNS} FROM dashboard_sessions WHERE token_hash = $1 AND expires_at > $2");
                let row = sqlx::query(&sql)
                    .bind(token_hash)
                    .bind(to_ms(now))
                    .fetch_one(&self.pool)
                    .await
                    .map_err(map_err)?;
                session_from_row(&row)
            }

            async fn delete_session(&self, token_hash: &str) -> StoreResult<()> {
                sqlx::query("DELETE FROM dashboard_sessions WHERE token_hash = $1")
                    .bind(token_hash)
                    .execute(&self.pool)
                    .await
                    .map_err(map_err)?;
                Ok(())
            }

            async fn delete_user_sessions(&self, account: &AccountId, user: &UserId) -> StoreResult<u64> {
                let done = sqlx::query("DELETE FROM dashboard_sessions WHERE account_id = $1 AND user_id = $2")
                    .bind(account.as_str())
                    .bind(user.as_str())
                    .execute(&self.pool)
                    .await
                    .map_err(map_err)?;
                Ok(done.rows_affected())
            }

            async fn prune_dashboard(&self, now: OffsetDateTime) -> StoreResult<u64> {
                let mut n = 0;
                for table in ["dashboard_sessions", "dashboard_links"] {
                    let done = sqlx::query(&format!("DELETE FROM {table} WHERE expires_at <= $1"))
                        .bind(to_ms(now))
                        .execute(&self.pool)
                        .await
                        .map_err(map_err)?;
                    n += done.rows_affected();
                }
                Ok(n)
            }

            async fn create_email_link(&self, l: &EmailLink) -> StoreResult<()> {
                sqlx::query(
                    "INSERT INTO dashboard_links (token_hash, purpose, account_id, user_id, email, role, created_by, \
                     created_at, expires_at, used_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                )
                .bind(&l.token_hash)
                .bind(l.purpose.as_str())
                .bind(l.account_id.as_str())
                .bind(l.user_id.as_ref().map(|u| u.as_str()))
                .bind(&l.email)
                .bind(l.role.map(|r| r.as_str()))
                .bind(l.created_by.as_ref().map(|u| u.as_str()))
                .bind(to_ms(l.created_at))
                .bind(to_ms(l.expires_at))
                .bind(l.used_at.map(to_ms))
                .execute(&self.pool)
                .await
                .map_err(map_err)?;
                Ok(())
            }

            async fn find_email_link(&self, token_hash: &str, purpose: LinkPurpose, now: OffsetDateTime) -> StoreResult<EmailLink> {
                let sql = format!(
                    "SELECT {LINK_COLUMNS} FROM dashboard_links WHERE token_hash = $1 AND purpose = $2 \
                     AND used_at IS NULL AND expires_at > $3"
                );
                let row = sqlx::query(&sql)
                    .bind(token_hash)
                    .bind(purpose.as_str())
                    .bind(to_ms(now))
                    .fetch_one(&self.pool)
                    .await
                    .map_err(map_err)?;
                link_from_row(&row)
            }

            async fn use_email_link(&self, token_hash: &str, purpose: LinkPurpose, now: OffsetDateTime) -> StoreResult<EmailLink> {
                // One statement claims the link: of two uses at once, only one gets a row back.
                let sql = format!(
                    "UPDATE dashboard_links SET used_at = $1 WHERE token_hash = $2 AND purpose = $3 \
                     AND used_at IS NULL AND expires_at > $1 RETURNING {LINK_COLUMNS}"
                );
                let row = sqlx::query(&sql)
                    .bind(to_ms(now))
                    .bind(token_hash)
                    .bind(purpose.as_str())
                    .fetch_one(&self.pool)
                    .await
                    .map_err(map_err)?;
                link_from_row(&row)
            }
        }
    };
}
pub(crate) use sql_store;
