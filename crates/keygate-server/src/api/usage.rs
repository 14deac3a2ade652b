//! `GET /api/v1/usage`: requests per key per day, counted in memory and written in batches.

use axum::extract::State;
use serde::{Deserialize, Serialize};
use time::format_description::well_known::Iso8601;
use time::{Date, OffsetDateTime};
use utoipa::{IntoParams, ToSchema};

use crate::http::auth::Reader;
use crate::http::error::ApiResult;
use crate::http::extract::Query;
use crate::http::ApiError;
use crate::state::AppState;
use crate::usage::day_of;

#[derive(Deserialize, IntoParams)]
pub struct UsageParams {
    /// First day, `YYYY-MM-DD` (default: 30 days ago).
    pub from: Option<String>,
    /// Last day, `YYYY-MM-DD` (default: today).
    pub to: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct UsageOut {
    pub date: String,
    pub key_id: String,
    pub requests: u64,
}

fn parse_day(field: &str, s: &str) -> ApiResult<i32> {
    let date = Date::parse(s, &Iso8601::DATE)
        .map_err(|_| ApiError::invalid_field(field, "must be a date, YYYY-MM-DD"))?;
    Ok(day_of(date.midnight().assume_utc()))
}

#[utoipa::path(get, path = "/api/v1/usage", tag = "usage", params(UsageParams),
    responses((status = 200, body = Vec<UsageOut>, description = "by day, then key; the last few seconds may not be written yet")))]
pub async fn get_usage(
    State(state): State<AppState>,
    Reader(who): Reader,
    Query(params): Query<UsageParams>,
) -> ApiResult<axum::Json<Vec<UsageOut>>> {
    let account = who.own_account()?.clone();
    let today = day_of(OffsetDateTime::now_utc());
    let to = params
        .to
        .as_deref()
        .map(|s| parse_day("to", s))
        .transpose()?
        .unwrap_or(today);
    let from = params
        .from
        .as_deref()
        .map(|s| parse_day("from", s))
        .transpose()?
        .unwrap_or(to - 30);
    if from > to || to - from > 366 {
        return Err(ApiError::invalid_field(
            "from",
            "must be on or before `to`, at most 366 days apart",
        ));
    }
    let rows = state.store.usage_by_day(&account, from, to).await?;
    let out = rows
        .into_iter()
        .map(|r| UsageOut {
            date: (OffsetDateTime::UNIX_EPOCH + time::Duration::days(r.day as i64))
                .date()
                .to_string(),
            key_id: r.key_id.to_string(),
            requests: r.requests,
        })
        .collect();
    Ok(axum::Json(out))
}
