//! The webhook queries both backends share. `sql_webhook_store!` is expanded in the backend's
//! module right after `sql_store!`, whose row helpers (`text`, `int`, `key_from_row`, …) it
//! uses; `$lock` is the row-locking clause of the claim (`FOR UPDATE SKIP LOCKED` on PostgreSQL,
//! nothing on SQLite, where a write statement already runs alone).

macro_rules! sql_webhook_store {
    ($Store:ident, $Db:ty, $lock:literal) => {
        use keygate_core::{DeliveryId, EndpointId, EventId};
        use keygate_store::{
            ClaimedDelivery, DeliveryAttempt, DeliveryStatus, EndpointHealth, EventTarget,
            NextStep, WebhookDelivery, WebhookEndpoint, WebhookEvent, WebhookStore,
        };

        const ENDPOINT_COLUMNS: &str = "p.id AS p_id, p.account_id AS p_account_id, p.url AS p_url, \
             p.description AS p_description, p.event_types AS p_event_types, p.secret AS p_secret, \
             p.previous_secret AS p_previous_secret, p.previous_rotated_at AS p_previous_rotated_at, \
             p.enabled AS p_enabled, p.disabled_reason AS p_disabled_reason, \
             p.failing_since AS p_failing_since, p.created_at AS p_created_at, p.updated_at AS p_updated_at";
        const DELIVERY_COLUMNS: &str = "d.id AS d_id, d.event_id AS d_event_id, e.event_type AS e_event_type, \
             d.endpoint_id AS d_endpoint_id, d.account_id AS d_account_id, d.status AS d_status, \
             d.attempts AS d_attempts, d.next_attempt_at AS d_next_attempt_at, \
             d.last_status_code AS d_last_status_code, d.last_error AS d_last_error, \
             d.created_at AS d_created_at, d.updated_at AS d_updated_at";
        const EVENT_COLUMNS: &str = "e.id AS e_id, e.account_id AS e_account_id, e.payload AS e_payload, \
             e.created_at AS e_created_at";

        fn endpoint_from_row(row: &DbRow) -> StoreResult<WebhookEndpoint> {
            let previous = match (
                opt_text(row, "p_previous_secret")?,
                opt_int(row, "p_previous_rotated_at")?,
            ) {
                (Some(secret), Some(at)) => Some((secret, from_ms(at)?)),
                _ => None,
            };
            Ok(WebhookEndpoint {
                id: EndpointId::from_trusted(text(row, "p_id")?),
                account_id: AccountId::from_trusted(text(row, "p_account_id")?),
                url: text(row, "p_url")?,
                description: text(row, "p_description")?,
                event_types: text(row, "p_event_types")?
                    .split(',')
                    .filter(|t| !t.is_empty())
                    .map(str::to_owned)
                    .collect(),
                sealed_secret: text(row, "p_secret")?,
                previous_secret: previous,
                enabled: int(row, "p_enabled")? != 0,
                disabled_reason: opt_text(row, "p_disabled_reason")?,
                failing_since: opt_from_ms(opt_int(row, "p_failing_since")?)?,
                created_at: from_ms(int(row, "p_created_at")?)?,
                updated_at: from_ms(int(row, "p_updated_at")?)?,
            })
        }

        fn delivery_from_row(row: &DbRow) -> StoreResult<WebhookDelivery> {
            Ok(WebhookDelivery {
                id: DeliveryId::from_trusted(text(row, "d_id")?),
                event_id: EventId::from_trusted(text(row, "d_event_id")?),
                event_type: text(row, "e_event_type")?,
                endpoint_id: EndpointId::from_trusted(text(row, "d_endpoint_id")?),
                account_id: AccountId::from_trusted(text(row, "d_account_id")?),
                status: DeliveryStatus::parse(&text(row, "d_status")?)
                    .ok_or_else(|| corrupt("delivery status"))?,
                attempts: u32::try_from(int(row, "d_attempts")?).map_err(|_| corrupt("attempt count"))?,
                next_attempt_at: from_ms(int(row, "d_next_attempt_at")?)?,
                last_status_code: opt_int(row, "d_last_status_code")?
                    .map(|c| u16::try_from(c).map_err(|_| corrupt("status code")))
                    .transpose()?,
                last_error: opt_text(row, "d_last_error")?,
                created_at: from_ms(int(row, "d_created_at")?)?,
                updated_at: from_ms(int(row, "d_updated_at")?)?,
            })
        }

        fn event_from_row(row: &DbRow) -> StoreResult<WebhookEvent> {
            Ok(WebhookEvent {
                id: EventId::from_trusted(text(row, "e_id")?),
                account_id: AccountId::from_trusted(text(row, "e_account_id")?),
                event_type: text(row, "e_event_type")?,
                payload: text(row, "e_payload")?,
                created_at: from_ms(int(row, "e_created_at")?)?,
            })
        }

        fn attempt_from_row(row: &DbRow) -> StoreResult<DeliveryAttempt> {
            Ok(DeliveryAttempt {
                delivery_id: DeliveryId::from_trusted(text(row, "delivery_id")?),
                attempted_at: from_ms(int(row, "attempted_at")?)?,
                status_code: opt_int(row, "status_code")?
                    .map(|c| u16::try_from(c).map_err(|_| corrupt("status code")))
                    .transpose()?,
                latency_ms: u32::try_from(int(row, "latency_ms")?).map_err(|_| corrupt("latency"))?,
                error: opt_text(row, "error")?,
                response_excerpt: text(row, "response_excerpt")?,
            })
        }

        /// The endpoints of `account` an event of `event_type` goes to.
        async fn target_endpoints<'c, E>(
            exec: E,
            account: &AccountId,
            event_type: &str,
            target: &EventTarget,
        ) -> StoreResult<Vec<String>>
        where
            E: sqlx::Executor<'c, Database = $Db>,
        {
            match target {
                EventTarget::Subscribed => {
                    let rows = sqlx::query(
                        "SELECT id, event_types FROM webhook_endpoints WHERE account_id = $1 AND enabled = 1 ORDER BY id",
                    )
                    .bind(account.as_str())
                    .fetch_all(exec)
                    .await
                    .map_err(map_err)?;
                    let mut ids = Vec::new();
                    for row in &rows {
                        let filters: Vec<String> = text(row, "event_types")?
                            .split(',')
                            .filter(|t| !t.is_empty())
                            .map(str::to_owned)
                            .collect();
                        if keygate_core::webhook::subscribes(&filters, event_type) {
                            ids.push(text(row, "id")?);
                        }
                    }
                    Ok(ids)
                }
                EventTarget::Endpoint(id) => {
                    let found = sqlx::query(
                        "SELECT id FROM webhook_endpoints WHERE id = $1 AND account_id = $2",
                    )
                    .bind(id.as_str())
                    .bind(account.as_str())
                    .fetch_optional(exec)
                    .await
                    .map_err(map_err)?;
                    match found {
                        Some(row) => Ok(vec![text(&row, "id")?]),
                        None => Err(StoreError::NotFound),
                    }
                }
            }
        }

        async fn insert_delivery<'c, E>(
            exec: E,
            id: &DeliveryId,
            event: &str,
            endpoint: &str,
            account: &str,
            now: i64,
        ) -> StoreResult<()>
        where
            E: sqlx::Executor<'c, Database = $Db>,
        {
            sqlx::query(
                "INSERT INTO webhook_deliveries (id, event_id, endpoint_id, account_id, status, attempts, \
                 next_attempt_at, created_at, updated_at) VALUES ($1, $2, $3, $4, 'pending', 0, $5, $6, $7)",
            )
            .bind(id.as_str())
            .bind(event)
            .bind(endpoint)
            .bind(account)
            .bind(now)
            .bind(now)
            .bind(now)
            .execute(exec)
            .await
            .map_err(map_err)?;
            Ok(())
        }

        /// Disables an endpoint and gives up its pending deliveries (leased ones too: their
        /// workers' results no longer count).
        /// Disables an endpoint and gives up its pending deliveries. The deliveries are
        /// updated before the endpoint, the order `finish_attempt` locks them in: the other way
        /// round, a user disabling an endpoint while the worker records an attempt on it
        /// deadlocked on PostgreSQL (each held the row the other wanted).
        async fn disable_in(
            tx: &mut sqlx::Transaction<'static, $Db>,
            id: &str,
            reason: &str,
            now: i64,
        ) -> StoreResult<()> {
            sqlx::query(
                "UPDATE webhook_deliveries SET status = 'failed', last_error = 'endpoint disabled', \
                 lease_owner = NULL, lease_until = NULL, updated_at = $1 WHERE endpoint_id = $2 AND status = 'pending'",
            )
            .bind(now)
            .bind(id)
            .execute(&mut **tx)
            .await
            .map_err(map_err)?;
            let done = sqlx::query(
                "UPDATE webhook_endpoints SET enabled = 0, disabled_reason = $1, updated_at = $2 WHERE id = $3",
            )
            .bind(reason)
            .bind(now)
            .bind(id)
            .execute(&mut **tx)
            .await
            .map_err(map_err)?;
            if done.rows_affected() == 0 {
                return Err(StoreError::NotFound);
            }
            Ok(())
        }

        #[async_trait]
        impl WebhookStore for $Store {
            async fn create_endpoint(&self, p: &WebhookEndpoint) -> StoreResult<()> {
                sqlx::query(
                    "INSERT INTO webhook_endpoints (id, account_id, url, description, event_types, secret, \
                     previous_secret, previous_rotated_at, enabled, disabled_reason, failing_since, created_at, \
                     updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
                )
                .bind(p.id.as_str())
                .bind(p.account_id.as_str())
                .bind(&p.url)
                .bind(&p.description)
                .bind(p.event_types.join(","))
                .bind(&p.sealed_secret)
                .bind(p.previous_secret.as_ref().map(|(s, _)| s.as_str()))
                .bind(p.previous_secret.as_ref().map(|(_, at)| to_ms(*at)))
                .bind(i64::from(p.enabled))
                .bind(p.disabled_reason.as_deref())
                .bind(p.failing_since.map(to_ms))
                .bind(to_ms(p.created_at))
                .bind(to_ms(p.updated_at))
                .execute(&self.pool)
                .await
                .map_err(map_err)?;
                Ok(())
            }

            async fn get_endpoint(
                &self,
                account: Option<&AccountId>,
                id: &EndpointId,
            ) -> StoreResult<WebhookEndpoint> {
                let sql = format!("SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints p WHERE p.id = $1");
                let row = sqlx::query(&sql)
                    .bind(id.as_str())
                    .fetch_one(&self.pool)
                    .await
                    .map_err(map_err)?;
                let endpoint = endpoint_from_row(&row)?;
                match account {
                    Some(a) if *a != endpoint.account_id => Err(StoreError::NotFound),
                    _ => Ok(endpoint),
                }
            }

            async fn list_endpoints(
                &self,
                account: &AccountId,
                page: &PageRequest,
            ) -> StoreResult<Page<WebhookEndpoint>> {
                let account = account.as_str().to_owned();
                paged(
                    &self.pool,
                    ENDPOINT_COLUMNS,
                    "webhook_endpoints p",
                    &|qb| {
                        qb.push(" WHERE p.account_id = ").push_bind(account.clone());
                    },
                    "p.id",
                    page,
                    endpoint_from_row,
                )
                .await
            }

            async fn update_endpoint(&self, p: &WebhookEndpoint) -> StoreResult<()> {
                let done = sqlx::query(
                    "UPDATE webhook_endpoints SET url = $1, description = $2, event_types = $3, secret = $4, \
                     previous_secret = $5, previous_rotated_at = $6, enabled = $7, disabled_reason = $8, \
                     failing_since = $9, updated_at = $10 WHERE id = $11",
                )
                .bind(&p.url)
                .bind(&p.description)
                .bind(p.event_types.join(","))
                .bind(&p.sealed_secret)
                .bind(p.previous_secret.as_ref().map(|(s, _)| s.as_str()))
                .bind(p.previous_secret.as_ref().map(|(_, at)| to_ms(*at)))
                .bind(i64::from(p.enabled))
                .bind(p.disabled_reason.as_deref())
                .bind(p.failing_since.map(to_ms))
                .bind(to_ms(p.updated_at))
                .bind(p.id.as_str())
                .execute(&self.pool)
                .await
                .map_err(map_err)?;
                if done.rows_affected() == 0 {
                    return Err(StoreError::NotFound);
                }
                Ok(())
            }

            async fn delete_endpoint(&self, account: &AccountId, id: &EndpointId) -> StoreResult<()> {
                let done = sqlx::query("DELETE FROM webhook_endpoints WHERE id = $1 AND account_id = $2")
                    .bind(id.as_str())
                    .bind(account.as_str())
                    .execute(&self.pool)
                    .await
                    .map_err(map_err)?;
                if done.rows_affected() == 0 {
                    return Err(StoreError::NotFound);
                }
                Ok(())
            }

            async fn disable_endpoint(
                &self,
                id: &EndpointId,
                reason: &str,
                now: OffsetDateTime,
            ) -> StoreResult<()> {
                let mut tx = self.pool.begin().await.map_err(map_err)?;
                disable_in(&mut tx, id.as_str(), reason, to_ms(now)).await?;
                tx.commit().await.map_err(map_err)
            }

            async fn enqueue_event(
                &self,
                event: &WebhookEvent,
                target: &EventTarget,
            ) -> StoreResult<Vec<DeliveryId>> {
                // Most of Keygate's own events go to no endpoint: one read, no write, for those.
                if target_endpoints(&self.pool, &event.account_id, &event.event_type, target)
                    .await?
                    .is_empty()
                {
                    return Ok(Vec::new());
                }
                let now = to_ms(event.created_at);
                let mut tx = self.pool.begin().await.map_err(map_err)?;
                // The write comes first: on SQLite it takes the write lock before the read below,
                // so no other writer can slip in between (which would fail this transaction).
                sqlx::query(
                    "INSERT INTO webhook_events (id, account_id, event_type, payload, created_at) \
                     VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(event.id.as_str())
                .bind(event.account_id.as_str())
                .bind(&event.event_type)
                .bind(&event.payload)
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
                let endpoints =
                    target_endpoints(&mut *tx, &event.account_id, &event.event_type, target).await?;
                if endpoints.is_empty() {
                    tx.rollback().await.map_err(map_err)?;
                    return Ok(Vec::new());
                }
                let mut ids = Vec::with_capacity(endpoints.len());
                for endpoint in &endpoints {
                    let id = DeliveryId::generate();
                    insert_delivery(
                        &mut *tx,
                        &id,
                        event.id.as_str(),
                        endpoint,
                        event.account_id.as_str(),
                        now,
                    )
                    .await?;
                    ids.push(id);
                }
                tx.commit().await.map_err(map_err)?;
                Ok(ids)
            }

            async fn claim_deliveries(
                &self,
                owner: &str,
                now: OffsetDateTime,
                lease_until: OffsetDateTime,
                limit: u32,
            ) -> StoreResult<Vec<ClaimedDelivery>> {
                let now = to_ms(now);
                let claim = format!(
                    "UPDATE webhook_deliveries SET lease_owner = $1, lease_until = $2 WHERE id IN (\
                     SELECT id FROM webhook_deliveries WHERE status = 'pending' AND next_attempt_at <= $3 \
                     AND (lease_until IS NULL OR lease_until < $4) ORDER BY next_attempt_at LIMIT $5{}) \
                     RETURNING id",
                    $lock
                );
                let claimed = sqlx::query(&claim)
                    .bind(owner)
                    .bind(to_ms(lease_until))
                    .bind(now)
                    .bind(now)
                    .bind(i64::from(limit))
                    .fetch_all(&self.pool)
                    .await
                    .map_err(map_err)?;
                if claimed.is_empty() {
                    return Ok(Vec::new());
                }
                let mut q = sqlx::QueryBuilder::<$Db>::new(format!(
                    "SELECT {DELIVERY_COLUMNS}, {EVENT_COLUMNS}, {ENDPOINT_COLUMNS} FROM webhook_deliveries d \
                     JOIN webhook_events e ON e.id = d.event_id JOIN webhook_endpoints p ON p.id = d.endpoint_id \
                     WHERE d.lease_owner = "
                ));
                q.push_bind(owner.to_owned()).push(" AND d.id IN (");
                let mut ids = q.separated(", ");
                for row in &claimed {
                    ids.push_bind(text(row, "id")?);
                }
                q.push(") ORDER BY d.next_attempt_at");
                let rows = q.build().fetch_all(&self.pool).await.map_err(map_err)?;
                rows.iter()
                    .map(|row| {
                        Ok(ClaimedDelivery {
                            delivery: delivery_from_row(row)?,
                            event: event_from_row(row)?,
                            endpoint: endpoint_from_row(row)?,
                        })
                    })
                    .collect()
            }

            async fn finish_attempt(
                &self,
                owner: &str,
                a: &DeliveryAttempt,
                next: &NextStep,
                disable: Option<&str>,
            ) -> StoreResult<Option<EndpointHealth>> {
                let at = to_ms(a.attempted_at);
                let (status, next_at) = match next {
                    NextStep::Succeeded => (DeliveryStatus::Succeeded, at),
                    NextStep::RetryAt(t) => (DeliveryStatus::Pending, to_ms(*t)),
                    NextStep::Failed => (DeliveryStatus::Failed, at),
                };
                let mut tx = self.pool.begin().await.map_err(map_err)?;
                let row = sqlx::query(
                    "UPDATE webhook_deliveries SET status = $1, attempts = attempts + 1, next_attempt_at = $2, \
                     lease_owner = NULL, lease_until = NULL, last_status_code = $3, last_error = $4, updated_at = $5 \
                     WHERE id = $6 AND lease_owner = $7 RETURNING endpoint_id",
                )
                .bind(status.as_str())
                .bind(next_at)
                .bind(a.status_code.map(i64::from))
                .bind(a.error.as_deref())
                .bind(at)
                .bind(a.delivery_id.as_str())
                .bind(owner)
                .fetch_optional(&mut *tx)
                .await
                .map_err(map_err)?;
                let Some(row) = row else {
                    tx.rollback().await.map_err(map_err)?;
                    return Ok(None);
                };
                let endpoint = text(&row, "endpoint_id")?;
                sqlx::query(
                    "INSERT INTO webhook_attempts (delivery_id, attempted_at, status_code, latency_ms, error, \
                     response_excerpt) VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(a.delivery_id.as_str())
                .bind(at)
                .bind(a.status_code.map(i64::from))
                .bind(i64::from(a.latency_ms))
                .bind(a.error.as_deref())
                .bind(&a.response_excerpt)
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
                let health = if *next == NextStep::Succeeded {
                    sqlx::query(
                        "UPDATE webhook_endpoints SET failing_since = NULL WHERE id = $1 \
                         RETURNING enabled, failing_since",
                    )
                    .bind(&endpoint)
                    .fetch_one(&mut *tx)
                    .await
                } else {
                    sqlx::query(
                        "UPDATE webhook_endpoints SET failing_since = COALESCE(failing_since, $1) WHERE id = $2 \
                         RETURNING enabled, failing_since",
                    )
                    .bind(at)
                    .bind(&endpoint)
                    .fetch_one(&mut *tx)
                    .await
                }
                .map_err(map_err)?;
                if let Some(reason) = disable {
                    disable_in(&mut tx, &endpoint, reason, at).await?;
                }
                let health = EndpointHealth {
                    enabled: disable.is_none() && int(&health, "enabled")? != 0,
                    failing_since: opt_from_ms(opt_int(&health, "failing_since")?)?,
                };
                tx.commit().await.map_err(map_err)?;
                Ok(Some(health))
            }

            async fn release_leases(&self, owner: &str) -> StoreResult<u64> {
                let done = sqlx::query(
                    "UPDATE webhook_deliveries SET lease_owner = NULL, lease_until = NULL WHERE lease_owner = $1",
                )
                .bind(owner)
                .execute(&self.pool)
                .await
                .map_err(map_err)?;
                Ok(done.rows_affected())
            }

            async fn get_delivery(
                &self,
                account: &AccountId,
                id: &DeliveryId,
            ) -> StoreResult<WebhookDelivery> {
                let sql = format!(
                    "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries d JOIN webhook_events e ON e.id = d.event_id \
                     WHERE d.id = $1 AND d.account_id = $2"
                );
                let row = sqlx::query(&sql)
                    .bind(id.as_str())
                    .bind(account.as_str())
                    .fetch_one(&self.pool)
                    .await
                    .map_err(map_err)?;
                delivery_from_row(&row)
            }

            async fn list_deliveries(
                &self,
                account: &AccountId,
                endpoint: &EndpointId,
                page: &PageRequest,
            ) -> StoreResult<Page<WebhookDelivery>> {
                let total = sqlx::query(
                    "SELECT COUNT(*) AS n FROM webhook_deliveries WHERE account_id = $1 AND endpoint_id = $2",
                )
                .bind(account.as_str())
                .bind(endpoint.as_str())
                .fetch_one(&self.pool)
                .await
                .map_err(map_err)?;
                let total = int(&total, "n")?;
                // Newest first: the cursor is the last (oldest) id of the previous page.
                let mut q = sqlx::QueryBuilder::<$Db>::new(format!(
                    "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries d JOIN webhook_events e ON e.id = d.event_id \
                     WHERE d.account_id = "
                ));
                q.push_bind(account.as_str().to_owned())
                    .push(" AND d.endpoint_id = ")
                    .push_bind(endpoint.as_str().to_owned());
                if let Some(after) = &page.after {
                    q.push(" AND d.id < ").push_bind(after.clone());
                }
                q.push(" ORDER BY d.id DESC LIMIT ").push_bind(i64::from(page.limit) + 1);
                let rows = q.build().fetch_all(&self.pool).await.map_err(map_err)?;
                let has_more = rows.len() > page.limit as usize;
                let items = rows
                    .iter()
                    .take(page.limit as usize)
                    .map(delivery_from_row)
                    .collect::<StoreResult<Vec<_>>>()?;
                Ok(Page { items, total: total as u64, has_more })
            }

            async fn list_attempts(&self, deliveries: &[DeliveryId]) -> StoreResult<Vec<DeliveryAttempt>> {
                if deliveries.is_empty() {
                    return Ok(Vec::new());
                }
                let mut q = sqlx::QueryBuilder::<$Db>::new(
                    "SELECT delivery_id, attempted_at, status_code, latency_ms, error, response_excerpt \
                     FROM webhook_attempts WHERE delivery_id IN (",
                );
                let mut ids = q.separated(", ");
                for id in deliveries {
                    ids.push_bind(id.as_str().to_owned());
                }
                q.push(") ORDER BY attempted_at, delivery_id");
                let rows = q.build().fetch_all(&self.pool).await.map_err(map_err)?;
                rows.iter().map(attempt_from_row).collect()
            }

            async fn replay_delivery(
                &self,
                account: &AccountId,
                id: &DeliveryId,
                now: OffsetDateTime,
            ) -> StoreResult<DeliveryId> {
                let original = self.get_delivery(account, id).await?;
                let replay = DeliveryId::generate();
                insert_delivery(
                    &self.pool,
                    &replay,
                    original.event_id.as_str(),
                    original.endpoint_id.as_str(),
                    original.account_id.as_str(),
                    to_ms(now),
                )
                .await?;
                Ok(replay)
            }

            async fn claim_notice(
                &self,
                subject: &str,
                kind: &str,
                now: OffsetDateTime,
            ) -> StoreResult<bool> {
                let done = sqlx::query(
                    "INSERT INTO webhook_notices (subject, kind, created_at) VALUES ($1, $2, $3) \
                     ON CONFLICT (subject, kind) DO NOTHING",
                )
                .bind(subject)
                .bind(kind)
                .bind(to_ms(now))
                .execute(&self.pool)
                .await
                .map_err(map_err)?;
                Ok(done.rows_affected() == 1)
            }

            async fn keys_expiring(
                &self,
                from: OffsetDateTime,
                to: OffsetDateTime,
                limit: u32,
            ) -> StoreResult<Vec<ApiKey>> {
                let sql = format!(
                    "SELECT {KEY_COLUMNS} FROM api_keys k WHERE k.expires_at > $1 AND k.expires_at <= $2 \
                     AND k.revoked_at IS NULL AND k.rolled_to IS NULL AND k.account_id IS NOT NULL \
                     ORDER BY k.expires_at LIMIT $3"
                );
                let rows = sqlx::query(&sql)
                    .bind(to_ms(from))
                    .bind(to_ms(to))
                    .bind(i64::from(limit))
                    .fetch_all(&self.pool)
                    .await
                    .map_err(map_err)?;
                rows.iter().map(key_from_row).collect()
            }

            async fn purge_webhook_history(&self, before: OffsetDateTime) -> StoreResult<u64> {
                let before = to_ms(before);
                // Deleting an event deletes its deliveries and their attempts (ON DELETE CASCADE);
                // events with a delivery still pending are kept whatever their age.
                let events = sqlx::query(
                    "DELETE FROM webhook_events WHERE created_at < $1 AND NOT EXISTS (\
                     SELECT 1 FROM webhook_deliveries d WHERE d.event_id = webhook_events.id AND d.status = 'pending')",
                )
                .bind(before)
                .execute(&self.pool)
                .await
                .map_err(map_err)?;
                sqlx::query("DELETE FROM webhook_notices WHERE created_at < $1")
                    .bind(before)
                    .execute(&self.pool)
                    .await
                    .map_err(map_err)?;
                Ok(events.rows_affected())
            }
        }
    };
}

pub(crate) use sql_webhook_store;
