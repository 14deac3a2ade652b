//! The Usage page: requests per day per key as a chart, drawn here as SVG so it needs no
//! script, with the same numbers in a table; and the account's credits, balance and ledger.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use askama::Template;
use axum::extract::{Query, State};
use axum::response::Response;
use keygate_store::{CreditEntry, PageRequest, UsageRow};
use serde::Deserialize;
use time::OffsetDateTime;

use super::csrf::CsrfToken;
use super::page::{date, date_time, ok, Base, PageError};
use super::session::DashboardUser;
use crate::state::AppState;
use crate::usage::day_of;

/// The chart shows this many keys apart; the rest are summed as "Other keys".
const SERIES: usize = 5;

pub struct Series {
    pub name: String,
    pub total: u64,
    /// The CSS class that colours it (`s0`…`s5`).
    pub class: String,
}

pub struct DayRow {
    pub date: String,
    pub requests: Vec<u64>,
    pub total: u64,
}

pub struct LedgerRow {
    pub when: String,
    pub kind: &'static str,
    pub description: String,
    pub amount: String,
    pub positive: bool,
    pub balance_after: i64,
}

#[derive(Template)]
#[template(path = "dashboard/usage.html")]
struct UsagePage {
    base: Base,
    days: i32,
    chart: String,
    series: Vec<Series>,
    table: Vec<DayRow>,
    total: u64,
    balance: i64,
    used: i64,
    monthly: Option<u64>,
    plan: String,
    next_reset: String,
    ledger: Vec<LedgerRow>,
}

#[derive(Deserialize)]
pub struct UsageQuery {
    days: Option<i32>,
}

fn day_date(day: i32) -> time::Date {
    (OffsetDateTime::UNIX_EPOCH + time::Duration::days(day as i64)).date()
}

/// The step between the axis's five lines: 1, 2 or 5 times a power of ten, so that four steps
/// reach the highest bar.
fn tick_step(max: u64) -> u64 {
    let needed = max.div_ceil(4).max(1);
    let mut power = 1u64;
    loop {
        for m in [1, 2, 5] {
            if power.saturating_mul(m) >= needed {
                return power * m;
            }
        }
        power = power.saturating_mul(10);
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A stacked bar per day, one colour per series. `values[day][series]`.
fn chart(first_day: i32, values: &[Vec<u64>], series: &[Series]) -> String {
    let (w, h) = (720.0_f64, 260.0_f64);
    let (left, right, top, bottom) = (52.0, 8.0, 12.0, 28.0);
    let plot_w = w - left - right;
    let plot_h = h - top - bottom;
    let max = values
        .iter()
        .map(|d| d.iter().sum::<u64>())
        .max()
        .unwrap_or(0);
    let step = tick_step(max);
    let top_value = step * 4;
    let n = values.len().max(1) as f64;
    let slot = plot_w / n;
    let bar = (slot * 0.7).max(1.0);
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg class="chart" viewBox="0 0 {w} {h}" role="img" aria-labelledby="chart-title"><title id="chart-title">Requests per day and key</title>"#
    );
    for i in 0..=4 {
        let v = step * i;
        let y = top + plot_h - plot_h * (i as f64) / 4.0;
        let _ = write!(
            svg,
            r#"<line class="grid" x1="{left}" x2="{}" y1="{y:.1}" y2="{y:.1}"/><text class="axis" x="{}" y="{:.1}" text-anchor="end">{v}</text>"#,
            w - right,
            left - 8.0,
            y + 4.0
        );
    }
    for (i, day) in values.iter().enumerate() {
        let x = left + slot * i as f64 + (slot - bar) / 2.0;
        let mut y = top + plot_h;
        let d = day_date(first_day + i as i32);
        for (s, v) in day.iter().enumerate() {
            if *v == 0 {
                continue;
            }
            let bh = plot_h * (*v as f64) / (top_value as f64);
            y -= bh;
            let _ = write!(
                svg,
                r#"<rect class="{}" x="{x:.1}" y="{y:.1}" width="{bar:.1}" height="{bh:.1}"><title>{}: {} — {v} requests</title></rect>"#,
                series[s].class,
                date(d.midnight().assume_utc()),
                escape(&series[s].name),
            );
        }
        let label_every = (values.len() / 6).max(1);
        if i % label_every == 0 {
            let label = d
                .format(time::macros::format_description!(
                    "[month repr:short] [day padding:none]"
                ))
                .unwrap_or_default();
            let _ = write!(
                svg,
                r#"<text class="axis" x="{:.1}" y="{}" text-anchor="middle">{label}</text>"#,
                x + bar / 2.0,
                h - 8.0
            );
        }
    }
    svg.push_str("</svg>");
    svg
}

pub async fn usage_page(
    State(state): State<AppState>,
    csrf: CsrfToken,
    me: DashboardUser,
    Query(q): Query<UsageQuery>,
) -> Result<Response, PageError> {
    let days = q.days.filter(|d| [7, 30, 90].contains(d)).unwrap_or(30);
    let today = day_of(OffsetDateTime::now_utc());
    let first = today - days + 1;
    let rows: Vec<UsageRow> = state
        .store
        .usage_by_day(&me.account.id, first, today)
        .await?;
    let keys = super::keys::all_keys(&state, &me).await?;
    let name_of = |id: &keygate_core::KeyId| {
        keys.iter().find(|k| &k.id == id).map_or_else(
            || "Deleted key".to_owned(),
            |k| format!("{} ({}…{})", k.name, k.start, k.last4),
        )
    };
    let mut totals: BTreeMap<String, u64> = BTreeMap::new();
    for r in &rows {
        *totals.entry(r.key_id.to_string()).or_default() += r.requests;
    }
    let mut ranked: Vec<(String, u64)> = totals.into_iter().collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let shown: Vec<String> = ranked
        .iter()
        .take(SERIES)
        .map(|(id, _)| id.clone())
        .collect();
    let mut series: Vec<Series> = shown
        .iter()
        .enumerate()
        .map(|(i, id)| Series {
            name: name_of(&keygate_core::KeyId::from_trusted(id.clone())),
            total: ranked[i].1,
            class: format!("s{i}"),
        })
        .collect();
    let other_total: u64 = ranked.iter().skip(SERIES).map(|(_, n)| n).sum();
    if other_total > 0 {
        series.push(Series {
            name: "Other keys".into(),
            total: other_total,
            class: format!("s{SERIES}"),
        });
    }
    let mut values = vec![vec![0u64; series.len()]; days as usize];
    for r in &rows {
        let slot = shown
            .iter()
            .position(|id| id == r.key_id.as_str())
            .unwrap_or(SERIES);
        if let Some(v) = values
            .get_mut((r.day - first) as usize)
            .and_then(|d| d.get_mut(slot))
        {
            *v += r.requests;
        }
    }
    let total: u64 = values.iter().flatten().sum();
    let table = values
        .iter()
        .enumerate()
        .rev()
        .filter(|(_, v)| v.iter().any(|n| *n > 0))
        .map(|(i, v)| DayRow {
            date: date(day_date(first + i as i32).midnight().assume_utc()),
            requests: v.clone(),
            total: v.iter().sum(),
        })
        .collect();
    let chart = if total > 0 {
        chart(first, &values, &series)
    } else {
        String::new()
    };

    let credits =
        crate::service::credits::state_of(&state, &me.account.id, &me.account.plan).await?;
    let ledger = latest_entries(&state, &me, 25).await?;
    let plan = state.config.plans.get(&me.account.plan);
    ok(&UsagePage {
        base: Base::signed_in(&state, &csrf, &me, "/usage"),
        days,
        chart,
        series,
        table,
        total,
        balance: credits.balance,
        used: credits.used,
        monthly: plan.and_then(|p| p.monthly_credits),
        plan: me.account.plan.clone(),
        next_reset: date(
            crate::service::credits::next_reset(OffsetDateTime::now_utc())
                .midnight()
                .assume_utc(),
        ),
        ledger: ledger
            .iter()
            .map(|e| LedgerRow {
                when: date_time(e.created_at),
                kind: e.kind.as_str(),
                description: e.description.clone(),
                amount: if e.amount > 0 {
                    format!("+{}", e.amount)
                } else {
                    e.amount.to_string()
                },
                positive: e.amount > 0,
                balance_after: e.balance_after,
            })
            .collect(),
    })
}

/// The newest `n` ledger entries, newest first.
async fn latest_entries(
    state: &AppState,
    me: &DashboardUser,
    n: usize,
) -> Result<Vec<CreditEntry>, PageError> {
    let mut all = Vec::new();
    let mut after = None;
    for _ in 0..50 {
        let page = state
            .store
            .list_credit_entries(
                &me.account.id,
                &PageRequest {
                    after: after.clone(),
                    limit: 100,
                },
            )
            .await?;
        after = page.items.last().map(|e| e.id.clone());
        all.extend(page.items);
        if all.len() > n {
            let cut = all.len() - n;
            all.drain(..cut);
        }
        if !page.has_more {
            break;
        }
    }
    all.reverse();
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_axis_steps_are_round_numbers_whose_four_steps_reach_the_highest_bar() {
        assert_eq!(tick_step(0), 1);
        assert_eq!(tick_step(4), 1);
        assert_eq!(tick_step(5), 2);
        assert_eq!(tick_step(7), 2);
        assert_eq!(tick_step(9), 5);
        assert_eq!(tick_step(101), 50);
        assert_eq!(tick_step(4_999), 2_000);
    }

    #[test]
    fn the_chart_escapes_key_names_and_draws_one_bar_per_series_and_day() {
        let series = vec![Series {
            name: "<script>".into(),
            total: 3,
            class: "s0".into(),
        }];
        let svg = chart(20_000, &[vec![1], vec![0], vec![2]], &series);
        assert!(!svg.contains("<script>"));
        assert!(svg.contains("&lt;script&gt;"));
        assert_eq!(svg.matches("<rect").count(), 2);
        assert!(!svg.contains("style="), "no inline style (strict CSP)");
    }
}
