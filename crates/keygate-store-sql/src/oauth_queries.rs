//! The OAuth queries both backends share. `sql_oauth_store!` is expanded in the backend's
//! module after `sql_store!`, whose row helpers (`text`, `int`, `paged`, …) it uses.
//!
//! The single-use rules (codes, refresh tokens) are conditional updates (`… AND used_at IS
//! NULL`) whose affected-row count says who won. They come first in their transactions: on
//! SQLite the write takes the database's write lock before anything is read, and on PostgreSQL
//! a concurrent update of the same row waits for the winner and then matches nothing.

macro_rules! sql_oauth_store {
    ($Store:ident, $Db:ty) => {
        use keygate_core::{ClientId, GrantId};
        use keygate_store::{
            AuthorizationCode, IssuedAccessToken, OAuthClient, OAuthConsent, OAuthGrant,
            OAuthStore, RefreshToken, RefreshTokenWithGrant,
        };

        const CLIENT_COLUMNS: &str = "id, account_id, name, redirect_uris, scope, confidential, \
             secret_hash, created_by, created_at, updated_at";
        const CODE_COLUMNS: &str = "code_hash, client_id, account_id, user_id, redirect_uri, scope, \
             code_challenge, created_at, expires_at, used_at, grant_id";
        const CONSENT_COLUMNS: &str =
            "user_id, client_id, account_id, scope, created_at, updated_at";

        fn client_from_row(row: &DbRow) -> StoreResult<OAuthClient> {
            Ok(OAuthClient {
                id: ClientId::from_trusted(text(row, "id")?),
                account_id: AccountId::from_trusted(text(row, "account_id")?),
                name: text(row, "name")?,
                redirect_uris: text(row, "redirect_uris")?
                    .lines()
                    .filter(|u| !u.is_empty())
                    .map(str::to_owned)
                    .collect(),
                scope: text(row, "scope")?,
                confidential: int(row, "confidential")? != 0,
                secret_hash: opt_text(row, "secret_hash")?,
                created_by: opt_text(row, "created_by")?.map(UserId::from_trusted),
                created_at: from_ms(int(row, "created_at")?)?,
                updated_at: from_ms(int(row, "updated_at")?)?,
            })
        }

        fn code_from_row(row: &DbRow) -> StoreResult<AuthorizationCode> {
            Ok(AuthorizationCode {
                code_hash: text(row, "code_hash")?,
                client_id: ClientId::from_trusted(text(row, "client_id")?),
                account_id: AccountId::from_trusted(text(row, "account_id")?),
                user_id: UserId::from_trusted(text(row, "user_id")?),
                redirect_uri: text(row, "redirect_uri")?,
                scope: text(row, "scope")?,
                code_challenge: opt_text(row, "code_challenge")?,
                created_at: from_ms(int(row, "created_at")?)?,
                expires_at: from_ms(int(row, "expires_at")?)?,
                used_at: opt_from_ms(opt_int(row, "used_at")?)?,
                grant_id: opt_text(row, "grant_id")?.map(GrantId::from_trusted),
            })
        }

        fn consent_from_row(row: &DbRow) -> StoreResult<OAuthConsent> {
            Ok(OAuthConsent {
                account_id: AccountId::from_trusted(text(row, "account_id")?),
                user_id: UserId::from_trusted(text(row, "user_id")?),
                client_id: ClientId::from_trusted(text(row, "client_id")?),
                scope: text(row, "scope")?,
                created_at: from_ms(int(row, "created_at")?)?,
                updated_at: from_ms(int(row, "updated_at")?)?,
            })
        }

        fn access_from_row(row: &DbRow) -> StoreResult<IssuedAccessToken> {
            Ok(IssuedAccessToken {
                jti: text(row, "jti")?,
                client_id: ClientId::from_trusted(text(row, "client_id")?),
                grant_id: opt_text(row, "grant_id")?.map(GrantId::from_trusted),
                expires_at: from_ms(int(row, "expires_at")?)?,
            })
        }

        async fn insert_access<'c, E>(exec: E, a: &IssuedAccessToken) -> StoreResult<()>
        where
            E: sqlx::Executor<'c, Database = $Db>,
        {
            sqlx::query(
                "INSERT INTO oauth_access_tokens (jti, client_id, grant_id, expires_at) VALUES ($1, $2, $3, $4)",
            )
            .bind(&a.jti)
            .bind(a.client_id.as_str())
            .bind(a.grant_id.as_ref().map(|g| g.as_str()))
            .bind(to_ms(a.expires_at))
            .execute(exec)
            .await
            .map_err(map_err)?;
            Ok(())
        }

        async fn insert_refresh<'c, E>(exec: E, r: &RefreshToken) -> StoreResult<()>
        where
            E: sqlx::Executor<'c, Database = $Db>,
        {
            sqlx::query(
                "INSERT INTO oauth_refresh_tokens (token_hash, grant_id, created_at, expires_at, used_at) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(&r.token_hash)
            .bind(r.grant_id.as_str())
            .bind(to_ms(r.created_at))
            .bind(to_ms(r.expires_at))
            .bind(r.used_at.map(to_ms))
            .execute(exec)
            .await
            .map_err(map_err)?;
            Ok(())
        }

        /// Revokes grants matching `condition` (on `g`, bound to `value`) and lists their
        /// unexpired access tokens; the update comes first (see the module comment).
        async fn revoke_grants_in(
            tx: &mut sqlx::Transaction<'static, $Db>,
            condition: &str,
            values: &[&str],
            now: i64,
        ) -> StoreResult<Vec<IssuedAccessToken>> {
            let update = format!(
                "UPDATE oauth_grants AS g SET revoked_at = $1 WHERE g.revoked_at IS NULL AND {condition}"
            );
            let mut q = sqlx::query(&update).bind(now);
            for v in values {
                q = q.bind(*v);
            }
            q.execute(&mut **tx).await.map_err(map_err)?;
            let select = format!(
                "SELECT t.jti, t.client_id, t.grant_id, t.expires_at FROM oauth_access_tokens t \
                 JOIN oauth_grants g ON g.id = t.grant_id WHERE t.expires_at > $1 AND {condition} ORDER BY t.jti"
            );
            let mut q = sqlx::query(&select).bind(now);
            for v in values {
                q = q.bind(*v);
            }
            let rows = q.fetch_all(&mut **tx).await.map_err(map_err)?;
            rows.iter().map(access_from_row).collect()
        }

        #[async_trait]
        impl OAuthStore for $Store {
            async fn create_oauth_client(&self, c: &OAuthClient) -> StoreResult<()> {
                sqlx::query(
                    "INSERT INTO oauth_clients (id, account_id, name, redirect_uris, scope, confidential, \
                     secret_hash, created_by, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                )
                .bind(c.id.as_str())
                .bind(c.account_id.as_str())
                .bind(&c.name)
                .bind(c.redirect_uris.join("\n"))
                .bind(&c.scope)
                .bind(i64::from(c.confidential))
                .bind(c.secret_hash.as_deref())
                .bind(c.created_by.as_ref().map(|u| u.as_str()))
                .bind(to_ms(c.created_at))
                .bind(to_ms(c.updated_at))
                .execute(&self.pool)
                .await
                .map_err(map_err)?;
                Ok(())
            }

            async fn get_oauth_client(
                &self,
                account: Option<&AccountId>,
                id: &ClientId,
            ) -> StoreResult<OAuthClient> {
                let sql = format!("SELECT {CLIENT_COLUMNS} FROM oauth_clients WHERE id = $1");
                let row = sqlx::query(&sql)
                    .bind(id.as_str())
                    .fetch_one(&self.pool)
                    .await
                    .map_err(map_err)?;
                let client = client_from_row(&row)?;
                match account {
                    Some(a) if *a != client.account_id => Err(StoreError::NotFound),
                    _ => Ok(client),
                }
            }

            async fn list_oauth_clients(
                &self,
                account: &AccountId,
                page: &PageRequest,
            ) -> StoreResult<Page<OAuthClient>> {
                let account = account.as_str().to_owned();
                paged(
                    &self.pool,
                    CLIENT_COLUMNS,
                    "oauth_clients",
                    &|qb| {
                        qb.push(" WHERE account_id = ").push_bind(account.clone());
                    },
                    "id",
                    page,
                    client_from_row,
                )
                .await
            }

            async fn update_oauth_client(&self, c: &OAuthClient) -> StoreResult<()> {
                let done = sqlx::query(
                    "UPDATE oauth_clients SET name = $1, redirect_uris = $2, scope = $3, secret_hash = $4, \
                     updated_at = $5 WHERE id = $6 AND account_id = $7",
                )
                .bind(&c.name)
                .bind(c.redirect_uris.join("\n"))
                .bind(&c.scope)
                .bind(c.secret_hash.as_deref())
                .bind(to_ms(c.updated_at))
                .bind(c.id.as_str())
                .bind(c.account_id.as_str())
                .execute(&self.pool)
                .await
                .map_err(map_err)?;
                if done.rows_affected() == 0 {
                    return Err(StoreError::NotFound);
                }
                Ok(())
            }

            async fn delete_oauth_client(
                &self,
                account: &AccountId,
                id: &ClientId,
                now: OffsetDateTime,
            ) -> StoreResult<Vec<IssuedAccessToken>> {
                let mut tx = self.pool.begin().await.map_err(map_err)?;
                // Deleting the grants first takes the write lock (SQLite) before the reads.
                sqlx::query(
                    "DELETE FROM oauth_grants WHERE client_id = $1 AND client_id IN \
                     (SELECT id FROM oauth_clients WHERE account_id = $2)",
                )
                .bind(id.as_str())
                .bind(account.as_str())
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
                let rows = sqlx::query(
                    "SELECT t.jti, t.client_id, t.grant_id, t.expires_at FROM oauth_access_tokens t \
                     JOIN oauth_clients c ON c.id = t.client_id \
                     WHERE t.client_id = $1 AND c.account_id = $2 AND t.expires_at > $3 ORDER BY t.jti",
                )
                .bind(id.as_str())
                .bind(account.as_str())
                .bind(to_ms(now))
                .fetch_all(&mut *tx)
                .await
                .map_err(map_err)?;
                let tokens = rows.iter().map(access_from_row).collect::<StoreResult<Vec<_>>>()?;
                let done = sqlx::query("DELETE FROM oauth_clients WHERE id = $1 AND account_id = $2")
                    .bind(id.as_str())
                    .bind(account.as_str())
                    .execute(&mut *tx)
                    .await
                    .map_err(map_err)?;
                if done.rows_affected() == 0 {
                    tx.rollback().await.map_err(map_err)?;
                    return Err(StoreError::NotFound);
                }
                tx.commit().await.map_err(map_err)?;
                Ok(tokens)
            }

            async fn create_authorization_code(&self, c: &AuthorizationCode) -> StoreResult<()> {
                sqlx::query(
                    "INSERT INTO oauth_codes (code_hash, client_id, account_id, user_id, redirect_uri, scope, \
                     code_challenge, created_at, expires_at, used_at, grant_id) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                )
                .bind(&c.code_hash)
                .bind(c.client_id.as_str())
                .bind(c.account_id.as_str())
                .bind(c.user_id.as_str())
                .bind(&c.redirect_uri)
                .bind(&c.scope)
                .bind(c.code_challenge.as_deref())
                .bind(to_ms(c.created_at))
                .bind(to_ms(c.expires_at))
                .bind(c.used_at.map(to_ms))
                .bind(c.grant_id.as_ref().map(|g| g.as_str()))
                .execute(&self.pool)
                .await
                .map_err(map_err)?;
                Ok(())
            }

            async fn get_authorization_code(&self, code_hash: &str) -> StoreResult<AuthorizationCode> {
                let sql = format!("SELECT {CODE_COLUMNS} FROM oauth_codes WHERE code_hash = $1");
                let row = sqlx::query(&sql)
                    .bind(code_hash)
                    .fetch_one(&self.pool)
                    .await
                    .map_err(map_err)?;
                code_from_row(&row)
            }

            async fn redeem_authorization_code(
                &self,
                code_hash: &str,
                grant: &OAuthGrant,
                refresh: Option<&RefreshToken>,
                access: &IssuedAccessToken,
            ) -> StoreResult<bool> {
                let mut tx = self.pool.begin().await.map_err(map_err)?;
                let won = sqlx::query(
                    "UPDATE oauth_codes SET used_at = $1, grant_id = $2 WHERE code_hash = $3 AND used_at IS NULL",
                )
                .bind(to_ms(grant.created_at))
                .bind(grant.id.as_str())
                .bind(code_hash)
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
                if won.rows_affected() == 0 {
                    tx.rollback().await.map_err(map_err)?;
                    return Ok(false);
                }
                sqlx::query(
                    "INSERT INTO oauth_grants (id, client_id, account_id, user_id, scope, created_at, revoked_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(grant.id.as_str())
                .bind(grant.client_id.as_str())
                .bind(grant.account_id.as_str())
                .bind(grant.user_id.as_str())
                .bind(&grant.scope)
                .bind(to_ms(grant.created_at))
                .bind(grant.revoked_at.map(to_ms))
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
                if let Some(r) = refresh {
                    insert_refresh(&mut *tx, r).await?;
                }
                insert_access(&mut *tx, access).await?;
                tx.commit().await.map_err(map_err)?;
                Ok(true)
            }

            async fn get_refresh_token(&self, token_hash: &str) -> StoreResult<RefreshTokenWithGrant> {
                let row = sqlx::query(
                    "SELECT r.token_hash, r.grant_id, r.created_at AS r_created_at, r.expires_at, r.used_at, \
                     g.client_id, g.account_id, g.user_id, g.scope, g.created_at AS g_created_at, g.revoked_at \
                     FROM oauth_refresh_tokens r JOIN oauth_grants g ON g.id = r.grant_id WHERE r.token_hash = $1",
                )
                .bind(token_hash)
                .fetch_one(&self.pool)
                .await
                .map_err(map_err)?;
                let grant_id = GrantId::from_trusted(text(&row, "grant_id")?);
                Ok(RefreshTokenWithGrant {
                    token: RefreshToken {
                        token_hash: text(&row, "token_hash")?,
                        grant_id: grant_id.clone(),
                        created_at: from_ms(int(&row, "r_created_at")?)?,
                        expires_at: from_ms(int(&row, "expires_at")?)?,
                        used_at: opt_from_ms(opt_int(&row, "used_at")?)?,
                    },
                    grant: OAuthGrant {
                        id: grant_id,
                        client_id: ClientId::from_trusted(text(&row, "client_id")?),
                        account_id: AccountId::from_trusted(text(&row, "account_id")?),
                        user_id: UserId::from_trusted(text(&row, "user_id")?),
                        scope: text(&row, "scope")?,
                        created_at: from_ms(int(&row, "g_created_at")?)?,
                        revoked_at: opt_from_ms(opt_int(&row, "revoked_at")?)?,
                    },
                })
            }

            async fn rotate_refresh_token(
                &self,
                old_hash: &str,
                next: &RefreshToken,
                access: &IssuedAccessToken,
            ) -> StoreResult<bool> {
                let mut tx = self.pool.begin().await.map_err(map_err)?;
                let won = sqlx::query(
                    "UPDATE oauth_refresh_tokens SET used_at = $1 WHERE token_hash = $2 AND used_at IS NULL \
                     AND grant_id = $3 AND grant_id IN (SELECT id FROM oauth_grants WHERE revoked_at IS NULL)",
                )
                .bind(to_ms(next.created_at))
                .bind(old_hash)
                .bind(next.grant_id.as_str())
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
                if won.rows_affected() == 0 {
                    tx.rollback().await.map_err(map_err)?;
                    return Ok(false);
                }
                insert_refresh(&mut *tx, next).await?;
                insert_access(&mut *tx, access).await?;
                tx.commit().await.map_err(map_err)?;
                Ok(true)
            }

            async fn record_access_token(&self, access: &IssuedAccessToken) -> StoreResult<()> {
                insert_access(&self.pool, access).await
            }

            async fn revoke_oauth_grant(
                &self,
                id: &GrantId,
                now: OffsetDateTime,
            ) -> StoreResult<Vec<IssuedAccessToken>> {
                let mut tx = self.pool.begin().await.map_err(map_err)?;
                let tokens = revoke_grants_in(&mut tx, "g.id = $2", &[id.as_str()], to_ms(now)).await?;
                tx.commit().await.map_err(map_err)?;
                Ok(tokens)
            }

            async fn upsert_oauth_consent(&self, c: &OAuthConsent) -> StoreResult<()> {
                sqlx::query(
                    "INSERT INTO oauth_consents (user_id, client_id, account_id, scope, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (user_id, client_id) \
                     DO UPDATE SET scope = excluded.scope, updated_at = excluded.updated_at",
                )
                .bind(c.user_id.as_str())
                .bind(c.client_id.as_str())
                .bind(c.account_id.as_str())
                .bind(&c.scope)
                .bind(to_ms(c.created_at))
                .bind(to_ms(c.updated_at))
                .execute(&self.pool)
                .await
                .map_err(map_err)?;
                Ok(())
            }

            async fn get_oauth_consent(
                &self,
                user: &UserId,
                client: &ClientId,
            ) -> StoreResult<OAuthConsent> {
                let sql = format!(
                    "SELECT {CONSENT_COLUMNS} FROM oauth_consents WHERE user_id = $1 AND client_id = $2"
                );
                let row = sqlx::query(&sql)
                    .bind(user.as_str())
                    .bind(client.as_str())
                    .fetch_one(&self.pool)
                    .await
                    .map_err(map_err)?;
                consent_from_row(&row)
            }

            async fn list_oauth_consents(&self, user: &UserId) -> StoreResult<Vec<OAuthConsent>> {
                let sql = format!(
                    "SELECT {CONSENT_COLUMNS} FROM oauth_consents WHERE user_id = $1 ORDER BY created_at, client_id"
                );
                let rows = sqlx::query(&sql)
                    .bind(user.as_str())
                    .fetch_all(&self.pool)
                    .await
                    .map_err(map_err)?;
                rows.iter().map(consent_from_row).collect()
            }

            async fn delete_oauth_consent(
                &self,
                user: &UserId,
                client: &ClientId,
                now: OffsetDateTime,
            ) -> StoreResult<Vec<IssuedAccessToken>> {
                let mut tx = self.pool.begin().await.map_err(map_err)?;
                let done = sqlx::query("DELETE FROM oauth_consents WHERE user_id = $1 AND client_id = $2")
                    .bind(user.as_str())
                    .bind(client.as_str())
                    .execute(&mut *tx)
                    .await
                    .map_err(map_err)?;
                if done.rows_affected() == 0 {
                    tx.rollback().await.map_err(map_err)?;
                    return Err(StoreError::NotFound);
                }
                let tokens = revoke_grants_in(
                    &mut tx,
                    "g.user_id = $2 AND g.client_id = $3",
                    &[user.as_str(), client.as_str()],
                    to_ms(now),
                )
                .await?;
                tx.commit().await.map_err(map_err)?;
                Ok(tokens)
            }
        }
    };
}

pub(crate) use sql_oauth_store;
