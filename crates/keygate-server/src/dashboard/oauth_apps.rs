//! The OAuth Apps page: the account's OAuth clients, registering one (its client secret shown
//! once, on the page that answers the form) and deleting one; and the apps the signed-in user
//! has authorized, with a button to take each authorization back. Everyone in the account sees
//! the clients; registering and deleting take an owner or admin, like `admin` scope on the API.
//! The rules and audit entries are the API's (`crate::oauth::clients`, `crate::oauth::consents`).

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use keygate_core::ClientId;
use keygate_store::{OAuthClient, PageRequest};
use serde::Deserialize;

use super::csrf::{CsrfToken, Form};
use super::keys::{scope_choices, ScopeChoice};
use super::page::{date_time, ok, render, see_other, Base, FieldErrors, PageError};
use super::session::{DashboardAdmin, DashboardUser};
use crate::oauth::{clients as svc, consents};
use crate::state::AppState;

/// A client as a row or a heading.
pub struct ClientRow {
    pub id: String,
    pub name: String,
    pub confidential: bool,
    pub redirect_uris: Vec<String>,
    pub scope: String,
    pub created: String,
}

impl ClientRow {
    fn new(c: &OAuthClient) -> Self {
        ClientRow {
            id: c.id.to_string(),
            name: c.name.clone(),
            confidential: c.confidential,
            redirect_uris: c.redirect_uris.clone(),
            scope: c.scope.clone(),
            created: date_time(c.created_at),
        }
    }
}

/// An app the signed-in user has authorized.
pub struct ConsentRow {
    pub client_id: String,
    /// The client's name, or its id if it was since deleted.
    pub name: String,
    pub scope: String,
    pub granted: String,
}

#[derive(Template)]
#[template(path = "dashboard/oauth_apps.html")]
struct AppsPage {
    base: Base,
    clients: Vec<ClientRow>,
    consents: Vec<ConsentRow>,
    can_manage: bool,
}

#[derive(Deserialize)]
pub struct NoticeQuery {
    notice: Option<String>,
}

fn notice_text(notice: Option<&str>) -> Option<&'static str> {
    match notice {
        Some("deleted") => {
            Some("The app is deleted: its secret and every token issued to it no longer work.")
        }
        Some("revoked") => {
            Some("The authorization is taken back: the app's tokens for you no longer work.")
        }
        _ => None,
    }
}

pub async fn list(
    State(state): State<AppState>,
    csrf: CsrfToken,
    me: DashboardUser,
    Query(q): Query<NoticeQuery>,
) -> Result<Response, PageError> {
    // An account has a handful of clients; the page shows up to 100.
    let page = state
        .store
        .list_oauth_clients(
            &me.account.id,
            &PageRequest {
                after: None,
                limit: 100,
            },
        )
        .await?;
    let consents = consents::list(&state, &me.user.id)
        .await?
        .into_iter()
        .map(|(c, name)| ConsentRow {
            name: name.unwrap_or_else(|| c.client_id.to_string()),
            client_id: c.client_id.to_string(),
            scope: c.scope,
            granted: date_time(c.created_at),
        })
        .collect();
    ok(&AppsPage {
        base: Base::signed_in(&state, &csrf, &me, "/oauth-apps")
            .with_notice(notice_text(q.notice.as_deref())),
        clients: page.items.iter().map(ClientRow::new).collect(),
        consents,
        can_manage: me.is_admin(),
    })
}

#[derive(Deserialize, Default)]
pub struct ClientForm {
    #[serde(default)]
    pub name: String,
    /// One URI a line.
    #[serde(default)]
    pub redirect_uris: String,
    /// Checkboxes: present when ticked.
    pub scope_read: Option<String>,
    pub scope_write: Option<String>,
    pub scope_admin: Option<String>,
    /// `yes` or `no`.
    #[serde(default)]
    pub confidential: String,
}

impl ClientForm {
    fn scope(&self) -> String {
        [
            ("read", &self.scope_read),
            ("write", &self.scope_write),
            ("admin", &self.scope_admin),
        ]
        .iter()
        .filter(|(_, ticked)| ticked.is_some())
        .map(|(s, _)| *s)
        .collect::<Vec<_>>()
        .join(" ")
    }

    /// Whether the box for `scope` is ticked, for showing the form again.
    pub fn has(&self, scope: &str) -> bool {
        match scope {
            "read" => self.scope_read.is_some(),
            "write" => self.scope_write.is_some(),
            "admin" => self.scope_admin.is_some(),
            _ => false,
        }
    }
}

#[derive(Template)]
#[template(path = "dashboard/oauth_app_new.html")]
struct NewAppPage {
    base: Base,
    scopes: Vec<ScopeChoice>,
    form: ClientForm,
    errors: FieldErrors,
}

pub async fn new_app(
    State(state): State<AppState>,
    csrf: CsrfToken,
    DashboardAdmin(me): DashboardAdmin,
) -> Result<Response, PageError> {
    ok(&NewAppPage {
        base: Base::signed_in(&state, &csrf, &me, "/oauth-apps"),
        scopes: scope_choices(&me),
        form: ClientForm {
            scope_read: Some("on".into()),
            confidential: "yes".into(),
            ..ClientForm::default()
        },
        errors: FieldErrors::default(),
    })
}

/// The page that shows a new client's id and, for a confidential one, its secret, once.
#[derive(Template)]
#[template(path = "dashboard/oauth_app_secret.html")]
struct SecretPage {
    base: Base,
    client: ClientRow,
    secret: Option<String>,
}

pub async fn create(
    State(state): State<AppState>,
    csrf: CsrfToken,
    DashboardAdmin(me): DashboardAdmin,
    Form(form): Form<ClientForm>,
) -> Result<Response, PageError> {
    let mut errors = FieldErrors::default();
    let confidential = match form.confidential.as_str() {
        "yes" => true,
        "no" => false,
        _ => {
            errors.add("confidential", "Choose whether the app can keep a secret.");
            true
        }
    };
    if errors.is_empty() {
        let spec = svc::ClientSpec {
            name: form.name.clone(),
            redirect_uris: form
                .redirect_uris
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_owned)
                .collect(),
            scope: form.scope(),
            confidential,
        };
        match svc::create(
            &state,
            &me.account.id,
            Some(me.user.id.clone()),
            me.scope(),
            spec,
        )
        .await
        {
            Ok((client, secret)) => {
                return ok(&SecretPage {
                    base: Base::signed_in(&state, &csrf, &me, "/oauth-apps"),
                    client: ClientRow::new(&client),
                    secret,
                })
            }
            Err(err) => errors.absorb(
                err,
                &[
                    ("name", "name"),
                    ("redirect_uris", "redirect_uris"),
                    ("scope", "scope"),
                ],
            )?,
        }
    }
    render(
        StatusCode::BAD_REQUEST,
        &NewAppPage {
            base: Base::signed_in(&state, &csrf, &me, "/oauth-apps"),
            scopes: scope_choices(&me),
            form,
            errors,
        },
    )
}

/// One of the account's clients; anything else is "not found".
async fn client_of(
    state: &AppState,
    me: &DashboardUser,
    id: &str,
) -> Result<OAuthClient, PageError> {
    let id = ClientId::parse(id).ok_or(PageError::NotFound)?;
    state
        .store
        .get_oauth_client(Some(&me.account.id), &id)
        .await
        .map_err(|_| PageError::NotFound)
}

#[derive(Template)]
#[template(path = "dashboard/oauth_app_confirm.html")]
struct ConfirmPage {
    base: Base,
    client: ClientRow,
}

pub async fn confirm_delete(
    State(state): State<AppState>,
    csrf: CsrfToken,
    DashboardAdmin(me): DashboardAdmin,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    let client = client_of(&state, &me, &id).await?;
    ok(&ConfirmPage {
        base: Base::signed_in(&state, &csrf, &me, "/oauth-apps"),
        client: ClientRow::new(&client),
    })
}

pub async fn delete(
    State(state): State<AppState>,
    DashboardAdmin(me): DashboardAdmin,
    Path(id): Path<String>,
    Form(_): Form<serde::de::IgnoredAny>,
) -> Result<Response, PageError> {
    let client = client_of(&state, &me, &id).await?;
    svc::delete(&state, &client).await?;
    Ok(see_other("/oauth-apps?notice=deleted", &[]))
}

/// Takes back the signed-in user's authorization of a client (any user: it is their own).
pub async fn revoke_consent(
    State(state): State<AppState>,
    me: DashboardUser,
    Path(client_id): Path<String>,
    Form(_): Form<serde::de::IgnoredAny>,
) -> Result<Response, PageError> {
    consents::revoke(&state, &me.user.id, Some(&me.account.id), &client_id).await?;
    Ok(see_other("/oauth-apps?notice=revoked", &[]))
}
