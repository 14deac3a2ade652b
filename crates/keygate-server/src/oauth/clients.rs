//! `/api/v1/oauth/clients`: the OAuth clients an account registers for its integrations.
//!
//! Reading needs any credential of the account; registering, changing, re-keying and deleting
//! need `admin`. A confidential client's secret is shown when it is made (at creation and at
//! rotation) and stored as its SHA-256 only. Deleting a client ends every token issued to it.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use keygate_core::oauth::{check_redirect_uri, generate_secret, secret_hash, ScopeSet, SecretKind};
use keygate_core::{AccountId, ClientId, Scope, UserId};
use keygate_store::OAuthClient;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};

use crate::http::auth::{Admin, Principal, Reader};
use crate::http::error::ApiResult;
use crate::http::extract::{Json, PathParams, Query};
use crate::http::paging::{page_headers, page_request};
use crate::http::ApiError;
use crate::service::audit::{self, action, AuditEvent};
use crate::service::{now, rfc3339};
use crate::state::AppState;

const MAX_NAME: usize = 200;
const MAX_REDIRECT_URIS: usize = 20;

#[derive(Serialize, ToSchema)]
pub struct ClientOut {
    pub client_id: String,
    pub name: String,
    pub redirect_uris: Vec<String>,
    /// The most the client may ask for, space-separated (`read write`).
    pub scope: String,
    pub confidential: bool,
    pub created_at: String,
    pub updated_at: String,
}

impl ClientOut {
    fn new(c: &OAuthClient) -> Self {
        ClientOut {
            client_id: c.id.to_string(),
            name: c.name.clone(),
            redirect_uris: c.redirect_uris.clone(),
            scope: c.scope.clone(),
            confidential: c.confidential,
            created_at: rfc3339(c.created_at),
            updated_at: rfc3339(c.updated_at),
        }
    }
}

/// A client as registered or re-keyed: the only times its secret is shown.
#[derive(Serialize, ToSchema)]
pub struct ClientWithSecretOut {
    /// `kgcs_…`; `null` for a public client.
    pub client_secret: Option<String>,
    #[serde(flatten)]
    pub client: ClientOut,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClientIn {
    pub name: String,
    /// Exact URIs the authorization step may redirect to: `https://…`, or `http://` on
    /// localhost / 127.0.0.1 / [::1]; no fragment. May be empty for a client that only uses
    /// client credentials.
    #[serde(default)]
    pub redirect_uris: Vec<String>,
    /// Space-separated Keygate scopes (`read`, `write`, `admin`); default `read`.
    pub scope: Option<String>,
    /// Default true. A public client (a browser or native app) has no secret and must use PKCE.
    pub confidential: Option<bool>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClientPatch {
    pub name: Option<String>,
    pub redirect_uris: Option<Vec<String>>,
    pub scope: Option<String>,
}

#[derive(Deserialize, IntoParams)]
pub struct ListParams {
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

fn validate_name(name: &str) -> ApiResult<String> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME || name.chars().any(char::is_control) {
        return Err(ApiError::invalid_field(
            "name",
            format!("1 to {MAX_NAME} characters, no control characters"),
        ));
    }
    Ok(name.to_owned())
}

fn validate_redirect_uris(uris: Vec<String>) -> ApiResult<Vec<String>> {
    if uris.len() > MAX_REDIRECT_URIS {
        return Err(ApiError::invalid_field(
            "redirect_uris",
            format!("at most {MAX_REDIRECT_URIS} entries"),
        ));
    }
    for uri in &uris {
        check_redirect_uri(uri)
            .map_err(|e| ApiError::invalid_field("redirect_uris", e.to_string()))?;
    }
    let mut uris = uris;
    uris.dedup();
    Ok(uris)
}

/// A client's scope: valid, not empty, and not above `allowed` (what the registering
/// credential holds, or the dashboard user's role carries).
fn validate_scope(allowed: Scope, scope: &str) -> ApiResult<String> {
    let set =
        ScopeSet::parse(scope).map_err(|e| ApiError::invalid_field("scope", e.to_string()))?;
    let Some(highest) = set.effective() else {
        return Err(ApiError::invalid_field(
            "scope",
            "must name at least one scope",
        ));
    };
    if !allowed.allows(highest) {
        return Err(ApiError::forbidden(format!(
            "A client cannot be given more than this credential's scope ({allowed})"
        )));
    }
    Ok(set.to_string())
}

/// Records a change to a client in the audit log (never its secret).
async fn audit_client(
    state: &AppState,
    name: &'static str,
    client: &OAuthClient,
    details: serde_json::Value,
) {
    let event = AuditEvent::new(name, "oauth_client", &client.id)
        .account(Some(&client.account_id))
        .details(details);
    audit::record(state, event).await;
}

async fn load(state: &AppState, who: &Principal, id: &str) -> ApiResult<OAuthClient> {
    let account = who.own_account()?;
    let id = ClientId::parse(id).ok_or_else(|| ApiError::not_found("OAuth client"))?;
    state
        .store
        .get_oauth_client(Some(account), &id)
        .await
        .map_err(|_| ApiError::not_found("OAuth client"))
}

/// What registering a client asks for, from the API's body or the dashboard's form.
pub struct ClientSpec {
    pub name: String,
    pub redirect_uris: Vec<String>,
    /// Space-separated scopes.
    pub scope: String,
    pub confidential: bool,
}

/// Registers a client of `account` after checking `spec` (its scope up to `allowed`), and
/// records it in the audit log. Returns the client and, for a confidential one, its secret:
/// the only time it exists in plaintext.
pub async fn create(
    state: &AppState,
    account: &AccountId,
    created_by: Option<UserId>,
    allowed: Scope,
    spec: ClientSpec,
) -> ApiResult<(OAuthClient, Option<String>)> {
    let name = validate_name(&spec.name)?;
    let redirect_uris = validate_redirect_uris(spec.redirect_uris)?;
    let scope = validate_scope(allowed, &spec.scope)?;
    let secret = spec
        .confidential
        .then(|| generate_secret(SecretKind::ClientSecret));
    let at = now();
    let client = OAuthClient {
        id: ClientId::generate(),
        account_id: account.clone(),
        name,
        redirect_uris,
        scope,
        confidential: spec.confidential,
        secret_hash: secret.as_deref().map(secret_hash),
        created_by,
        created_at: at,
        updated_at: at,
    };
    state.store.create_oauth_client(&client).await?;
    tracing::info!(client_id = %client.id, "OAuth client registered");
    audit_client(
        state,
        action::OAUTH_CLIENT_CREATED,
        &client,
        json!({"name": client.name, "scope": client.scope, "confidential": client.confidential,
               "redirect_uris": client.redirect_uris}),
    )
    .await;
    Ok((client, secret))
}

/// Deletes a client, ends every token issued to it, and records it in the audit log.
pub async fn delete(state: &AppState, client: &OAuthClient) -> ApiResult<()> {
    let issued = state
        .store
        .delete_oauth_client(&client.account_id, &client.id, now())
        .await?;
    let denied = issued.len();
    super::deny_access_tokens(state, issued).await?;
    tracing::info!(client_id = %client.id, "OAuth client deleted");
    audit_client(
        state,
        action::OAUTH_CLIENT_DELETED,
        client,
        json!({"tokens_denied": denied}),
    )
    .await;
    Ok(())
}

#[utoipa::path(post, path = "/api/v1/oauth/clients", tag = "oauth", request_body = ClientIn,
    responses((status = 201, body = ClientWithSecretOut), (status = 400), (status = 403)))]
pub async fn create_client(
    State(state): State<AppState>,
    Admin(who): Admin,
    Json(body): Json<ClientIn>,
) -> ApiResult<impl IntoResponse> {
    let account = who.own_account()?.clone();
    let spec = ClientSpec {
        name: body.name,
        redirect_uris: body.redirect_uris,
        scope: body.scope.unwrap_or_else(|| "read".into()),
        confidential: body.confidential.unwrap_or(true),
    };
    let (client, secret) = create(&state, &account, who.user_id.clone(), who.scope, spec).await?;
    let out = ClientWithSecretOut {
        client_secret: secret,
        client: ClientOut::new(&client),
    };
    Ok((StatusCode::CREATED, axum::Json(out)))
}

#[utoipa::path(get, path = "/api/v1/oauth/clients", tag = "oauth", params(ListParams),
    responses((status = 200, body = Vec<ClientOut>, description = "total in X-Total-Count, next page in Link")))]
pub async fn list_clients(
    State(state): State<AppState>,
    Reader(who): Reader,
    Query(params): Query<ListParams>,
) -> ApiResult<impl IntoResponse> {
    let account = who.own_account()?;
    let page_req = page_request(params.limit, params.cursor)?;
    let page = state.store.list_oauth_clients(account, &page_req).await?;
    let headers = page_headers(
        &page,
        page_req.limit,
        "/api/v1/oauth/clients",
        page.items.last().map(|c| c.id.as_str()),
    );
    let body: Vec<ClientOut> = page.items.iter().map(ClientOut::new).collect();
    Ok((headers, axum::Json(body)))
}

#[utoipa::path(get, path = "/api/v1/oauth/clients/{client_id}", tag = "oauth",
    params(("client_id" = String, Path)), responses((status = 200, body = ClientOut), (status = 404)))]
pub async fn get_client(
    State(state): State<AppState>,
    Reader(who): Reader,
    PathParams(id): PathParams<String>,
) -> ApiResult<axum::Json<ClientOut>> {
    Ok(axum::Json(ClientOut::new(&load(&state, &who, &id).await?)))
}

#[utoipa::path(patch, path = "/api/v1/oauth/clients/{client_id}", tag = "oauth", request_body = ClientPatch,
    params(("client_id" = String, Path)), responses((status = 200, body = ClientOut), (status = 400), (status = 404)))]
pub async fn update_client(
    State(state): State<AppState>,
    Admin(who): Admin,
    PathParams(id): PathParams<String>,
    Json(patch): Json<ClientPatch>,
) -> ApiResult<axum::Json<ClientOut>> {
    let mut client = load(&state, &who, &id).await?;
    let mut fields = Vec::new();
    if patch.name.is_some() {
        fields.push("name");
    }
    if patch.redirect_uris.is_some() {
        fields.push("redirect_uris");
    }
    if patch.scope.is_some() {
        fields.push("scope");
    }
    if let Some(name) = patch.name {
        client.name = validate_name(&name)?;
    }
    if let Some(uris) = patch.redirect_uris {
        client.redirect_uris = validate_redirect_uris(uris)?;
    }
    if let Some(scope) = patch.scope {
        client.scope = validate_scope(who.scope, &scope)?;
    }
    client.updated_at = now();
    state.store.update_oauth_client(&client).await?;
    tracing::info!(client_id = %client.id, "OAuth client updated");
    audit_client(
        &state,
        action::OAUTH_CLIENT_UPDATED,
        &client,
        json!({"fields": fields}),
    )
    .await;
    Ok(axum::Json(ClientOut::new(&client)))
}

#[utoipa::path(post, path = "/api/v1/oauth/clients/{client_id}/rotate-secret", tag = "oauth",
    params(("client_id" = String, Path)), responses((status = 200, body = ClientWithSecretOut), (status = 400), (status = 404)))]
pub async fn rotate_client_secret(
    State(state): State<AppState>,
    Admin(who): Admin,
    PathParams(id): PathParams<String>,
) -> ApiResult<axum::Json<ClientWithSecretOut>> {
    let mut client = load(&state, &who, &id).await?;
    if !client.confidential {
        return Err(ApiError::invalid("A public client has no secret to rotate"));
    }
    let secret = generate_secret(SecretKind::ClientSecret);
    client.secret_hash = Some(secret_hash(&secret));
    client.updated_at = now();
    state.store.update_oauth_client(&client).await?;
    tracing::info!(client_id = %client.id, "OAuth client secret rotated");
    audit_client(
        &state,
        action::OAUTH_CLIENT_SECRET_ROTATED,
        &client,
        json!({}),
    )
    .await;
    Ok(axum::Json(ClientWithSecretOut {
        client_secret: Some(secret),
        client: ClientOut::new(&client),
    }))
}

#[utoipa::path(delete, path = "/api/v1/oauth/clients/{client_id}", tag = "oauth",
    params(("client_id" = String, Path)), responses((status = 204), (status = 404)))]
pub async fn delete_client(
    State(state): State<AppState>,
    Admin(who): Admin,
    PathParams(id): PathParams<String>,
) -> ApiResult<StatusCode> {
    let client = load(&state, &who, &id).await?;
    delete(&state, &client).await?;
    Ok(StatusCode::NO_CONTENT)
}
