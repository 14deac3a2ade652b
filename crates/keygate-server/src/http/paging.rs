//! Paging of native lists: `limit` (default 20, at most 100) and an opaque `cursor`; the answer
//! is a bare JSON array with the total in `X-Total-Count` and the next page in a `Link` header.

use axum::http::{HeaderMap, HeaderValue};
use keygate_store::{Page, PageRequest};

use super::ApiError;

pub const DEFAULT_LIMIT: u32 = 20;
pub const MAX_LIMIT: u32 = 100;

pub fn page_request(limit: Option<u32>, cursor: Option<String>) -> Result<PageRequest, ApiError> {
    let limit = limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::invalid_field(
            "limit",
            format!("must be between 1 and {MAX_LIMIT}"),
        ));
    }
    if cursor
        .as_ref()
        .is_some_and(|c| c.len() > 64 || !c.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
    {
        return Err(ApiError::invalid_field(
            "cursor",
            "is not a cursor this server issued",
        ));
    }
    Ok(PageRequest {
        after: cursor,
        limit,
    })
}

/// Headers for a page. `path_and_query` is the request's path plus any filters to keep; the
/// next link adds `limit` and `cursor` to it.
pub fn page_headers<T>(page: &Page<T>, limit: u32, base: &str, last_id: Option<&str>) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert("x-total-count", HeaderValue::from(page.total));
    if let (true, Some(last)) = (page.has_more, last_id) {
        let sep = if base.contains('?') { '&' } else { '?' };
        let link = format!("<{base}{sep}limit={limit}&cursor={last}>; rel=\"next\"");
        if let Ok(v) = HeaderValue::from_str(&link) {
            headers.insert("link", v);
        }
    }
    headers
}
