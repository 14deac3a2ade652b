//! The authorization step (RFC 6749 §4.1.1–4.1.2): a user, logged in to the dashboard, sees
//! which client asks for which scopes and approves or denies; the browser goes back to the
//! client with a `code` (or an `error`) and the client's `state`.
//!
//! The logic is in service functions the dashboard's pages call:
//! [`validate_request`] checks an authorization request, [`grant`] records the user's consent
//! and issues a code, [`deny`] builds the `access_denied` redirect. The order of checks is
//! what keeps this from being an open redirector: `client_id` and `redirect_uri` are checked
//! first, and while either is in doubt the error is shown to the user, never redirected
//! (§4.1.2.1); only then do other errors go back to the client.
//!
//! `GET /oauth/authorize` and `POST /oauth/authorize` are server-rendered pages on top of
//! those functions; the consent page is a dashboard template (`oauth_consent.html`, in the
//! sign-in layout). The user comes from [`session`], the dashboard's login session; a
//! browser without one is sent to the dashboard's `/login`, which comes back here.

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use keygate_core::oauth::{generate_secret, is_s256_challenge, secret_hash, ScopeSet, SecretKind};
use keygate_store::{AuthorizationCode, OAuthClient, OAuthConsent, StoreError, User};

use super::FormParams;
use crate::dashboard::csrf::CsrfToken;
use crate::dashboard::page::Base;
use crate::http::auth::user_scope;
use crate::service::now;
use crate::state::AppState;

/// The parameters of an authorization request, as sent.
#[derive(Clone, Debug, Default)]
pub struct AuthorizeParams {
    pub response_type: Option<String>,
    pub client_id: Option<String>,
    pub redirect_uri: Option<String>,
    pub scope: Option<String>,
    pub state: Option<String>,
    pub code_challenge: Option<String>,
    pub code_challenge_method: Option<String>,
}

impl AuthorizeParams {
    /// From a query string or a form body (the consent form repeats the request).
    pub fn from_form(params: &FormParams) -> Self {
        let get = |k: &str| params.get(k).map(str::to_owned);
        AuthorizeParams {
            response_type: get("response_type"),
            client_id: get("client_id"),
            redirect_uri: get("redirect_uri"),
            scope: get("scope"),
            state: get("state"),
            code_challenge: get("code_challenge"),
            code_challenge_method: get("code_challenge_method"),
        }
    }

    /// The request as form fields, for the consent form and the `/login?next=` URL.
    pub fn pairs(&self) -> Vec<(&'static str, &str)> {
        [
            ("response_type", &self.response_type),
            ("client_id", &self.client_id),
            ("redirect_uri", &self.redirect_uri),
            ("scope", &self.scope),
            ("state", &self.state),
            ("code_challenge", &self.code_challenge),
            ("code_challenge_method", &self.code_challenge_method),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.as_deref().map(|v| (k, v)))
        .collect()
    }
}

/// A checked authorization request, ready for the consent page.
#[derive(Clone, Debug)]
pub struct AuthorizeRequest {
    pub client: OAuthClient,
    /// One of the client's registered URIs, exactly as sent.
    pub redirect_uri: String,
    /// What the client asks for (all of the client's scope when it named none).
    pub scope: ScopeSet,
    pub state: Option<String>,
    /// The PKCE S256 challenge (required of public clients).
    pub code_challenge: Option<String>,
    pub params: AuthorizeParams,
}

/// Why an authorization request cannot go on.
#[derive(Clone, Debug, PartialEq)]
pub enum AuthorizeError {
    /// `client_id` or `redirect_uri` is missing, unknown or not registered: show this message
    /// to the user and never redirect, since the redirect target cannot be trusted.
    Invalid(String),
    /// Send the browser back to the client with this error (§4.1.2.1).
    Redirect {
        redirect_uri: String,
        error: &'static str,
        description: String,
        state: Option<String>,
    },
}

impl AuthorizeError {
    /// Where to send the browser: `None` for [`AuthorizeError::Invalid`].
    pub fn redirect_url(&self) -> Option<String> {
        match self {
            AuthorizeError::Invalid(_) => None,
            AuthorizeError::Redirect {
                redirect_uri,
                error,
                description,
                state,
            } => {
                let mut pairs = vec![
                    ("error", *error),
                    ("error_description", description.as_str()),
                ];
                if let Some(s) = state {
                    pairs.push(("state", s.as_str()));
                }
                Some(with_query(redirect_uri, &pairs))
            }
        }
    }
}

impl std::fmt::Display for AuthorizeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AuthorizeError::Invalid(m) => f.write_str(m),
            AuthorizeError::Redirect {
                error, description, ..
            } => {
                write!(f, "{error}: {description}")
            }
        }
    }
}

/// `uri` with `pairs` added to its query (RFC 6749 §3.1.2: keep the query it has).
fn with_query(uri: &str, pairs: &[(&str, &str)]) -> String {
    let mut query = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        query.append_pair(k, v);
    }
    let sep = if uri.contains('?') { '&' } else { '?' };
    format!("{uri}{sep}{}", query.finish())
}

/// Checks an authorization request (RFC 6749 §4.1.1, RFC 7636 §4.3), in the order that keeps
/// errors from redirecting anywhere the client did not register.
pub async fn validate_request(
    state: &AppState,
    params: &AuthorizeParams,
) -> Result<AuthorizeRequest, AuthorizeError> {
    let client_id = params.client_id.as_deref().ok_or_else(|| {
        AuthorizeError::Invalid("The request names no client (client_id).".into())
    })?;
    let client = super::find_client(state, client_id)
        .await
        .map_err(|_| {
            AuthorizeError::Invalid("The request could not be checked; try again.".into())
        })?
        .ok_or_else(|| AuthorizeError::Invalid("The application is unknown (client_id).".into()))?;
    // RFC 9700 §2.1 and OAuth 2.1: the redirect URI is always sent and matched exactly.
    let redirect_uri = params
        .redirect_uri
        .clone()
        .ok_or_else(|| AuthorizeError::Invalid("The request has no redirect_uri.".into()))?;
    if !client.redirect_uris.iter().any(|u| u == &redirect_uri) {
        return Err(AuthorizeError::Invalid(
            "The redirect_uri is not one the application registered.".into(),
        ));
    }
    let redirect = |error: &'static str, description: &str| AuthorizeError::Redirect {
        redirect_uri: redirect_uri.clone(),
        error,
        description: description.to_owned(),
        state: params.state.clone(),
    };
    match params.response_type.as_deref() {
        Some("code") => {}
        None => return Err(redirect("invalid_request", "response_type is required")),
        Some(_) => {
            return Err(redirect(
                "unsupported_response_type",
                "only response_type=code is supported",
            ))
        }
    }
    let allowed = ScopeSet::parse(&client.scope).unwrap_or_default();
    let scope = match params.scope.as_deref() {
        None => allowed.clone(),
        Some(raw) => {
            let asked =
                ScopeSet::parse(raw).map_err(|e| redirect("invalid_scope", &e.to_string()))?;
            if asked.is_empty() || !asked.is_subset(&allowed) {
                return Err(redirect(
                    "invalid_scope",
                    &format!("this application may ask for: {allowed}"),
                ));
            }
            asked
        }
    };
    if scope.is_empty() {
        return Err(redirect("invalid_scope", "no scope to grant"));
    }
    let code_challenge = match (
        params.code_challenge.as_deref(),
        params.code_challenge_method.as_deref(),
    ) {
        (Some(challenge), Some("S256")) if is_s256_challenge(challenge) => {
            Some(challenge.to_owned())
        }
        (Some(_), Some("S256")) => {
            return Err(redirect("invalid_request", "malformed code_challenge"))
        }
        (Some(_), None) | (Some(_), Some("plain")) => {
            return Err(redirect(
                "invalid_request",
                "code_challenge_method must be S256 (plain is not supported)",
            ))
        }
        (Some(_), Some(_)) => {
            return Err(redirect(
                "invalid_request",
                "unsupported code_challenge_method",
            ))
        }
        (None, Some(_)) => return Err(redirect("invalid_request", "code_challenge is missing")),
        (None, None) if !client.confidential => {
            return Err(redirect(
                "invalid_request",
                "public clients must use PKCE (code_challenge with S256)",
            ))
        }
        (None, None) => None,
    };
    Ok(AuthorizeRequest {
        client,
        redirect_uri,
        scope,
        state: params.state.clone(),
        code_challenge,
        params: params.clone(),
    })
}

/// The scopes `user` can actually grant of what `request` asks: never more than their role.
pub fn grantable_scope(user: &User, request: &AuthorizeRequest) -> ScopeSet {
    let most = user_scope(user.role);
    ScopeSet::from_scopes(request.scope.iter().filter(|s| most.allows(*s)))
}

/// Whether `user` already consented to everything `request` asks (the dashboard may then skip
/// the consent page).
pub async fn has_consent(state: &AppState, user: &User, request: &AuthorizeRequest) -> bool {
    match state
        .store
        .get_oauth_consent(&user.id, &request.client.id)
        .await
    {
        Ok(c) => ScopeSet::parse(&c.scope)
            .is_ok_and(|given| grantable_scope(user, request).is_subset(&given)),
        Err(_) => false,
    }
}

/// The user approved: records their consent and issues a single-use code (lifetime
/// `oauth_code_ttl`) bound to the client, the redirect URI, the PKCE challenge, the user and
/// the scopes. Returns the URL to send the browser to, with `code` and `state`.
pub async fn grant(
    state: &AppState,
    user: &User,
    request: &AuthorizeRequest,
) -> Result<String, AuthorizeError> {
    let failed = |error: &'static str, description: &str| AuthorizeError::Redirect {
        redirect_uri: request.redirect_uri.clone(),
        error,
        description: description.to_owned(),
        state: request.state.clone(),
    };
    let scope = grantable_scope(user, request);
    if scope.is_empty() {
        return Err(failed(
            "access_denied",
            "the user's role does not allow the scopes asked for",
        ));
    }
    let at = now();
    let consent = OAuthConsent {
        account_id: user.account_id.clone(),
        user_id: user.id.clone(),
        client_id: request.client.id.clone(),
        scope: scope.to_string(),
        created_at: at,
        updated_at: at,
    };
    let code = generate_secret(SecretKind::AuthorizationCode);
    let record = AuthorizationCode {
        code_hash: secret_hash(&code),
        client_id: request.client.id.clone(),
        account_id: user.account_id.clone(),
        user_id: user.id.clone(),
        redirect_uri: request.redirect_uri.clone(),
        scope: scope.to_string(),
        code_challenge: request.code_challenge.clone(),
        created_at: at,
        expires_at: at + state.config.oauth_code_ttl,
        used_at: None,
        grant_id: None,
    };
    let stored = async {
        state.store.upsert_oauth_consent(&consent).await?;
        state.store.create_authorization_code(&record).await
    };
    if let Err(err) = stored.await {
        tracing::error!(error = %err, "storing an OAuth consent or code failed");
        return Err(failed(
            "server_error",
            "the authorization could not be recorded",
        ));
    }
    tracing::info!(client_id = %request.client.id, user_id = %user.id, "OAuth code issued");
    crate::service::audit::record(
        state,
        crate::service::audit::AuditEvent::new(
            crate::service::audit::action::OAUTH_CONSENT_GRANTED,
            "oauth_consent",
            &request.client.id,
        )
        .account(Some(&user.account_id))
        .actor(crate::service::audit::Actor::user(&user.id))
        .details(serde_json::json!({"scope": scope.to_string()})),
    )
    .await;
    let mut pairs = vec![("code", code.as_str())];
    if let Some(s) = &request.state {
        pairs.push(("state", s.as_str()));
    }
    Ok(with_query(&request.redirect_uri, &pairs))
}

/// The user said no: the URL that tells the client (`access_denied`).
pub fn deny(request: &AuthorizeRequest) -> String {
    AuthorizeError::Redirect {
        redirect_uri: request.redirect_uri.clone(),
        error: "access_denied",
        description: "the user denied the request".into(),
        state: request.state.clone(),
    }
    .redirect_url()
    .unwrap_or_default()
}

/// The dashboard session behind a request: the logged-in user and the CSRF token the consent
/// form must carry back.
pub struct Session {
    pub user: User,
    pub csrf_token: String,
}

/// The user logged in to the dashboard in this browser (its `kg_session` cookie), if any, with
/// an account that is enabled.
///
/// The consent form's CSRF token is derived from the session's own secret: another site can
/// make the browser send the cookie but cannot read it, so it cannot compute the token, and
/// the token dies with the session (log out, password reset).
pub async fn session(state: &AppState, headers: &HeaderMap) -> Option<Session> {
    use crate::dashboard::{csrf, session as dashboard_session};
    let token = csrf::cookie(headers, dashboard_session::COOKIE)?;
    let found = state
        .store
        .find_session(&secret_hash(token), time::OffsetDateTime::now_utc())
        .await
        .ok()?;
    let entry = crate::http::auth::load_user(state, &found.account_id, &found.user_id)
        .await
        .ok()?;
    if entry.account.status != keygate_store::AccountStatus::Active {
        return None;
    }
    Some(Session {
        user: entry.user.clone(),
        csrf_token: secret_hash(&format!("keygate/oauth-consent/v1:{token}")),
    })
}

/// Where the dashboard's login page is; it comes back to `next` after logging in.
fn login_url(params: &AuthorizeParams) -> String {
    let next = with_query("/oauth/authorize", &params.pairs());
    with_query("/login", &[("next", next.as_str())])
}

#[utoipa::path(get, path = "/oauth/authorize", tag = "oauth",
    responses((status = 200, description = "the consent page"), (status = 303, description = "to /login, or back to the client with an error"),
        (status = 400, description = "bad client_id or redirect_uri (no redirect)")))]
pub async fn authorize_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let params = match FormParams::from_query(query.as_deref()) {
        Ok(p) => AuthorizeParams::from_form(&p),
        Err(e) => return error_page(&e.description),
    };
    let request = match validate_request(&state, &params).await {
        Ok(r) => r,
        Err(err) => return answer_error(err),
    };
    let Some(session) = session(&state, &headers).await else {
        return see_other(&login_url(&params));
    };
    // The dashboard's CSRF token is not used here: the form carries the session's own.
    let base = Base::anonymous(&state, &CsrfToken(String::new()));
    match consent_page(base, &request, &session) {
        Ok(page) => html(StatusCode::OK, &page),
        Err(err) => {
            tracing::error!(error = %err, "rendering the consent page");
            error_page("The page could not be shown; try again.")
        }
    }
}

#[utoipa::path(post, path = "/oauth/authorize", tag = "oauth",
    request_body(content_type = "application/x-www-form-urlencoded", description = "the request's parameters, csrf_token and decision=approve|deny"),
    responses((status = 303, description = "back to the client with a code or an error, or to /login"), (status = 400), (status = 403)))]
pub async fn authorize_decision(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let form = match FormParams::parse(&headers, &body) {
        Ok(f) => f,
        Err(e) => return error_page(&e.description),
    };
    let params = AuthorizeParams::from_form(&form);
    let request = match validate_request(&state, &params).await {
        Ok(r) => r,
        Err(err) => return answer_error(err),
    };
    let cross_site = headers
        .get("sec-fetch-site")
        .is_some_and(|v| v.as_bytes() == b"cross-site");
    let Some(session) = session(&state, &headers).await else {
        return see_other(&login_url(&params));
    };
    let csrf_ok = !cross_site
        && form.get("csrf_token").is_some_and(|t| {
            subtle::ConstantTimeEq::ct_eq(t.as_bytes(), session.csrf_token.as_bytes()).into()
        });
    if !csrf_ok {
        return html(
            StatusCode::FORBIDDEN,
            &page(
                "Request expired",
                "<p>This form has expired. Go back and try again.</p>",
            ),
        );
    }
    match form.get("decision") {
        Some("approve") => match grant(&state, &session.user, &request).await {
            Ok(url) => see_other(&url),
            Err(err) => answer_error(err),
        },
        _ => see_other(&deny(&request)),
    }
}

fn answer_error(err: AuthorizeError) -> Response {
    match err.redirect_url() {
        Some(url) => see_other(&url),
        None => error_page(&err.to_string()),
    }
}

fn see_other(url: &str) -> Response {
    match HeaderValue::from_str(url) {
        Ok(location) => (StatusCode::SEE_OTHER, [(header::LOCATION, location)]).into_response(),
        Err(_) => error_page("The redirect address is not valid."),
    }
}

fn error_page(message: &str) -> Response {
    html(
        StatusCode::BAD_REQUEST,
        &page(
            "Authorization failed",
            &format!("<p>{}</p>", escape(message)),
        ),
    )
}

/// A page that loads nothing and runs nothing, and that no other site may frame (a framed
/// consent page could be clicked through by an invisible overlay).
fn html(status: StatusCode, body: &str) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; frame-ancestors 'none'; form-action 'self'",
            ),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::CACHE_CONTROL, "no-store"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        body.to_owned(),
    )
        .into_response()
}

fn page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{} · Keygate</title></head><body><main>\n<h1>{}</h1>\n{body}\n</main></body></html>\n",
        escape(title),
        escape(title)
    )
}

#[derive(askama::Template)]
#[template(path = "dashboard/oauth_consent.html")]
struct ConsentPage<'a> {
    base: Base,
    client: &'a str,
    user: &'a str,
    target: &'a str,
    scopes: Vec<&'static str>,
    /// The request's parameters and the CSRF token, as the form's hidden fields.
    hidden: Vec<(&'static str, &'a str)>,
}

/// The consent page, in the dashboard's sign-in layout (`base`): who asks, for what, as whom;
/// approve or deny. The form repeats the request so the decision is checked against it again.
fn consent_page(
    base: Base,
    request: &AuthorizeRequest,
    session: &Session,
) -> Result<String, askama::Error> {
    let page = ConsentPage {
        base,
        client: &request.client.name,
        user: &session.user.email,
        target: &request.redirect_uri,
        scopes: grantable_scope(&session.user, request)
            .iter()
            .map(scope_meaning)
            .collect(),
        hidden: request
            .params
            .pairs()
            .into_iter()
            .chain([("csrf_token", session.csrf_token.as_str())])
            .collect(),
    };
    askama::Template::render(&page)
}

fn scope_meaning(scope: keygate_core::Scope) -> &'static str {
    match scope {
        keygate_core::Scope::Read => "read: see your account's data",
        keygate_core::Scope::Write => "write: create, change and delete data",
        keygate_core::Scope::Admin => "admin: manage settings, users and keys",
    }
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

impl From<StoreError> for AuthorizeError {
    fn from(err: StoreError) -> Self {
        tracing::error!(error = %err, "OAuth authorization failed");
        AuthorizeError::Invalid("The request could not be checked; try again.".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keygate_core::{AccountId, ClientId, UserId};
    use keygate_store::{PasswordVerifiers, Role};

    fn request(scope: &str) -> AuthorizeRequest {
        let t = now();
        let params = AuthorizeParams {
            response_type: Some("code".into()),
            client_id: Some("kgc_1".into()),
            redirect_uri: Some("https://app.example.com/cb?tenant=1".into()),
            state: Some("\"><script>".into()),
            ..Default::default()
        };
        AuthorizeRequest {
            client: OAuthClient {
                id: ClientId::generate(),
                account_id: AccountId::generate(),
                name: "<b>Evil</b> & Co".into(),
                redirect_uris: vec!["https://app.example.com/cb?tenant=1".into()],
                scope: "read write admin".into(),
                confidential: true,
                secret_hash: None,
                created_by: None,
                created_at: t,
                updated_at: t,
            },
            redirect_uri: "https://app.example.com/cb?tenant=1".into(),
            scope: ScopeSet::parse(scope).expect("scope"),
            state: params.state.clone(),
            code_challenge: None,
            params,
        }
    }

    fn user(role: Role) -> User {
        let t = now();
        User {
            id: UserId::generate(),
            account_id: AccountId::generate(),
            email: "jane@example.com".into(),
            username: "jane".into(),
            first_name: "Jane".into(),
            last_name: "Doe".into(),
            role,
            verifiers: PasswordVerifiers {
                password: None,
                md5: None,
                sha1: None,
            },
            email_verified_at: None,
            created_at: t,
            updated_at: t,
        }
    }

    #[test]
    fn errors_keep_the_redirect_uris_own_query_and_carry_the_state() {
        let r = request("read");
        let url = deny(&r);
        assert_eq!(
            url,
            "https://app.example.com/cb?tenant=1&error=access_denied\
             &error_description=the+user+denied+the+request&state=%22%3E%3Cscript%3E"
        );
        assert_eq!(
            AuthorizeError::Invalid("bad client".into()).redirect_url(),
            None
        );
    }

    #[test]
    fn a_member_can_grant_no_more_than_write() {
        let r = request("read write admin");
        assert_eq!(
            grantable_scope(&user(Role::Member), &r).to_string(),
            "read write"
        );
        assert_eq!(
            grantable_scope(&user(Role::Owner), &r).to_string(),
            "read write admin"
        );
    }

    #[test]
    fn the_consent_page_escapes_what_clients_choose_and_carries_the_csrf_token() {
        let session = Session {
            user: user(Role::Member),
            csrf_token: "csrf-123".into(),
        };
        let base = Base {
            brand: "Keygate".into(),
            csrf: String::new(),
            asset_version: "test",
            nav: crate::dashboard::NAV,
            active: "",
            who: None,
            notice: None,
        };
        let html = consent_page(base, &request("read admin"), &session).expect("rendered");
        // askama writes numeric character references.
        assert!(html.contains("&#60;b&#62;Evil&#60;/b&#62; &#38; Co"));
        assert!(html.contains("value=\"&#34;&#62;&#60;script&#62;\""));
        assert!(!html.contains("<script>"));
        assert!(html.contains("name=\"csrf_token\" value=\"csrf-123\""));
        assert!(html.contains("read: see"));
        assert!(
            !html.contains("admin: manage"),
            "a member is not shown scopes they cannot grant"
        );
        assert!(!html.contains("<style") && !html.contains("style="));
    }
}
