//! The API's route table. The router and `/api/v1/openapi.json` are both built from it, so
//! the document cannot drift from what is served.

use axum::extract::State;
use axum::routing::{MethodRouter, delete, get, patch, post};
use serde_json::{Value, json};

use super::{
    audit, auth, clusters, grants, groups, kubeconfig, projects, settings, sso, tokens, users,
};
use crate::state::AppState;

pub struct Route {
    pub method: &'static str,
    /// Relative to `/api/v1`, in axum/OpenAPI template syntax.
    pub path: &'static str,
    pub tag: &'static str,
    pub summary: &'static str,
    /// Name of the request body schema in `components.schemas`.
    pub body: Option<&'static str>,
    /// Whether the operation needs authentication.
    pub authenticated: bool,
    /// Whether the operation is a paginated list.
    pub paginated: bool,
    pub success: u16,
}

const fn r(
    method: &'static str,
    path: &'static str,
    tag: &'static str,
    summary: &'static str,
) -> Route {
    Route {
        method,
        path,
        tag,
        summary,
        body: None,
        authenticated: true,
        paginated: false,
        success: 200,
    }
}

impl Route {
    const fn body(mut self, schema: &'static str) -> Self {
        self.body = Some(schema);
        self
    }
    const fn public(mut self) -> Self {
        self.authenticated = false;
        self
    }
    const fn paged(mut self) -> Self {
        self.paginated = true;
        self
    }
    const fn status(mut self, code: u16) -> Self {
        self.success = code;
        self
    }
}

pub fn routes() -> Vec<(Route, MethodRouter<AppState>)> {
    vec![
        (
            r("get", "/openapi.json", "meta", "This document").public(),
            get(document),
        ),
        (
            r(
                "post",
                "/auth/login",
                "auth",
                "Sign in; sets the session cookie",
            )
            .body("LoginRequest")
            .public(),
            post(auth::login),
        ),
        (
            r("post", "/auth/logout", "auth", "End the session").status(204),
            post(auth::logout),
        ),
        (
            r(
                "get",
                "/auth/me",
                "auth",
                "The caller, their groups and effective grants",
            ),
            get(auth::me),
        ),
        (
            r(
                "post",
                "/auth/password",
                "auth",
                "Change the caller's password",
            )
            .body("ChangePassword")
            .status(204),
            post(auth::change_password),
        ),
        (
            r("get", "/users", "users", "List users").paged(),
            get(users::list),
        ),
        (
            r("post", "/users", "users", "Create a local or service user")
                .body("CreateUser")
                .status(201),
            post(users::create),
        ),
        (
            r("get", "/users/{name}", "users", "Get a user"),
            get(users::get),
        ),
        (
            r(
                "patch",
                "/users/{name}",
                "users",
                "Update, disable or enable a user",
            )
            .body("UpdateUser"),
            patch(users::update),
        ),
        (
            r("delete", "/users/{name}", "users", "Delete a user").status(204),
            delete(users::delete),
        ),
        (
            r(
                "post",
                "/users/{name}/password",
                "users",
                "Reset a user's password",
            )
            .body("ResetPassword"),
            post(users::reset_password),
        ),
        (
            r(
                "post",
                "/users/{name}/kubeconfig/revoke",
                "users",
                "Revoke every credential issued to the user so far",
            )
            .status(204),
            post(users::revoke_kubeconfig),
        ),
        (
            r("get", "/groups", "groups", "List groups").paged(),
            get(groups::list),
        ),
        (
            r("post", "/groups", "groups", "Create a group")
                .body("CreateGroup")
                .status(201),
            post(groups::create),
        ),
        (
            r("get", "/groups/{name}", "groups", "Get a group"),
            get(groups::get),
        ),
        (
            r("patch", "/groups/{name}", "groups", "Update a group").body("UpdateGroup"),
            patch(groups::update),
        ),
        (
            r(
                "delete",
                "/groups/{name}",
                "groups",
                "Delete a group and its grants",
            )
            .status(204),
            delete(groups::delete),
        ),
        (
            r(
                "get",
                "/groups/{name}/members",
                "groups",
                "List a group's members",
            ),
            get(groups::members),
        ),
        (
            r("post", "/groups/{name}/members", "groups", "Add a member")
                .body("AddMember")
                .status(204),
            post(groups::add_member),
        ),
        (
            r(
                "delete",
                "/groups/{name}/members/{user}",
                "groups",
                "Remove a member",
            )
            .status(204),
            delete(groups::remove_member),
        ),
        (
            r(
                "get",
                "/projects",
                "projects",
                "List the projects the caller can see",
            )
            .paged(),
            get(projects::list),
        ),
        (
            r("post", "/projects", "projects", "Create a project")
                .body("CreateProject")
                .status(201),
            post(projects::create),
        ),
        (
            r("get", "/projects/{name}", "projects", "Get a project"),
            get(projects::get),
        ),
        (
            r("patch", "/projects/{name}", "projects", "Update a project").body("UpdateProject"),
            patch(projects::update),
        ),
        (
            r(
                "delete",
                "/projects/{name}",
                "projects",
                "Delete a project and its grants",
            )
            .status(204),
            delete(projects::delete),
        ),
        (
            r(
                "get",
                "/projects/{name}/clusters",
                "clusters",
                "List a project's clusters",
            )
            .paged(),
            get(clusters::list),
        ),
        (
            r(
                "post",
                "/projects/{name}/clusters",
                "clusters",
                "Create (import) a cluster",
            )
            .body("CreateCluster")
            .status(201),
            post(clusters::create),
        ),
        (
            r(
                "get",
                "/projects/{name}/clusters/{cluster}",
                "clusters",
                "Get a cluster and its agent's status",
            ),
            get(clusters::get),
        ),
        (
            r(
                "patch",
                "/projects/{name}/clusters/{cluster}",
                "clusters",
                "Update a cluster",
            )
            .body("UpdateCluster"),
            patch(clusters::update),
        ),
        (
            r(
                "delete",
                "/projects/{name}/clusters/{cluster}",
                "clusters",
                "Delete a cluster; its agent is refused from then on",
            )
            .status(204),
            delete(clusters::delete),
        ),
        (
            r(
                "post",
                "/projects/{name}/clusters/{cluster}/bootstrap",
                "clusters",
                "New single-use bootstrap token and install manifest",
            )
            .status(201),
            post(clusters::bootstrap),
        ),
        (
            r(
                "get",
                "/kubeconfig",
                "kubeconfig",
                "The caller's kubeconfig (YAML) with a fresh client certificate",
            ),
            get(kubeconfig::download),
        ),
        (
            r(
                "get",
                "/kubeconfig/certificates",
                "kubeconfig",
                "The caller's unexpired kubeconfig certificates",
            ),
            get(kubeconfig::own_certificates),
        ),
        (
            r(
                "post",
                "/kubeconfig/certificates/{serial}/revoke",
                "kubeconfig",
                "Revoke one of the caller's kubeconfig certificates",
            )
            .status(204),
            post(kubeconfig::revoke_own_certificate),
        ),
        (
            r(
                "get",
                "/users/{name}/kubeconfig/certificates",
                "users",
                "A user's unexpired kubeconfig certificates",
            ),
            get(kubeconfig::user_certificates),
        ),
        (
            r(
                "post",
                "/users/{name}/kubeconfig/certificates/{serial}/revoke",
                "users",
                "Revoke one kubeconfig certificate of a user",
            )
            .status(204),
            post(kubeconfig::revoke_user_certificate),
        ),
        (
            r("get", "/roles", "access", "The built-in roles"),
            get(grants::roles),
        ),
        (
            r(
                "get",
                "/grants",
                "access",
                "List grants the caller may read",
            )
            .paged(),
            get(grants::list),
        ),
        (
            r(
                "post",
                "/grants",
                "access",
                "Grant a role to a user or group",
            )
            .body("CreateGrant")
            .status(201),
            post(grants::create),
        ),
        (
            r("get", "/grants/{id}", "access", "Get a grant"),
            get(grants::get),
        ),
        (
            r("delete", "/grants/{id}", "access", "Remove a grant").status(204),
            delete(grants::delete),
        ),
        (
            r(
                "post",
                "/users/{name}/tokens",
                "tokens",
                "Issue an API token to a service user",
            )
            .body("CreateToken")
            .status(201),
            post(tokens::create_for_service_user),
        ),
        (
            r("get", "/tokens", "tokens", "List the caller's API tokens"),
            get(tokens::list),
        ),
        (
            r(
                "post",
                "/tokens",
                "tokens",
                "Create an API token (shown once)",
            )
            .body("CreateToken")
            .status(201),
            post(tokens::create),
        ),
        (
            r("delete", "/tokens/{id}", "tokens", "Delete an API token").status(204),
            delete(tokens::delete),
        ),
        (
            r(
                "get",
                "/audit",
                "audit",
                "Query the audit log (newest first) with the chain head",
            )
            .paged(),
            get(audit::list),
        ),
        (
            r(
                "get",
                "/audit/export",
                "audit",
                "Export matching audit events as JSON Lines",
            ),
            get(audit::export),
        ),
        (
            r("get", "/settings", "settings", "Organization settings"),
            get(settings::get),
        ),
        (
            r(
                "patch",
                "/settings",
                "settings",
                "Change organization settings",
            )
            .body("UpdateSettings"),
            patch(settings::update),
        ),
        (
            r(
                "get",
                "/sso/providers",
                "sso",
                "List single sign-on providers",
            )
            .paged(),
            get(sso::list),
        ),
        (
            r(
                "post",
                "/sso/providers",
                "sso",
                "Add an OpenID Connect provider",
            )
            .body("CreateSsoProvider")
            .status(201),
            post(sso::create),
        ),
        (
            r("get", "/sso/providers/{name}", "sso", "Get a provider"),
            get(sso::get),
        ),
        (
            r("patch", "/sso/providers/{name}", "sso", "Change a provider")
                .body("UpdateSsoProvider"),
            patch(sso::update),
        ),
        (
            r(
                "delete",
                "/sso/providers/{name}",
                "sso",
                "Remove a provider",
            )
            .status(204),
            delete(sso::delete),
        ),
        (
            r(
                "post",
                "/sso/providers/{name}/test",
                "sso",
                "Fetch the provider's discovery document and keys now",
            ),
            post(sso::test),
        ),
        (
            r(
                "get",
                "/auth/sso",
                "auth",
                "Providers offered on the sign-in page",
            )
            .public(),
            get(sso::options),
        ),
        (
            r(
                "get",
                "/auth/sso/{name}/login",
                "auth",
                "Start signing in with a provider (redirects the browser)",
            )
            .public()
            .status(303),
            get(sso::login),
        ),
        (
            r(
                "get",
                "/auth/sso/{name}/callback",
                "auth",
                "Where the provider returns the browser (redirects to the console)",
            )
            .public()
            .status(303),
            get(sso::callback),
        ),
        (
            r(
                "get",
                "/auth/sso/errors/{id}",
                "auth",
                "Why a sign-in failed (readable once)",
            )
            .public(),
            get(sso::error),
        ),
    ]
}

fn string() -> Value {
    json!({"type": "string"})
}
fn integer() -> Value {
    json!({"type": "integer", "minimum": 0})
}
fn object(required: &[&str], props: &[(&str, Value)]) -> Value {
    let properties: serde_json::Map<String, Value> = props
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect();
    json!({"type": "object", "additionalProperties": false, "required": required, "properties": properties})
}

/// Request body schemas, by the names routes refer to.
pub fn schemas() -> serde_json::Map<String, Value> {
    let name =
        json!({"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 63});
    let mut m = serde_json::Map::new();
    let mut add = |k: &str, v: Value| {
        m.insert(k.to_owned(), v);
    };
    add(
        "Error",
        json!({"type": "object", "required": ["error"], "properties": {"error": object(&["code", "message", "request_id"], &[("code", string()), ("message", string()), ("field", string()), ("request_id", string())])}}),
    );
    add(
        "LoginRequest",
        object(
            &["username", "password"],
            &[("username", string()), ("password", string())],
        ),
    );
    add(
        "ChangePassword",
        object(
            &["current_password", "new_password"],
            &[
                ("current_password", string()),
                ("new_password", json!({"type": "string", "minLength": 12})),
            ],
        ),
    );
    add(
        "CreateUser",
        object(
            &["name"],
            &[
                ("name", name.clone()),
                ("kind", json!({"enum": ["local", "service"]})),
                ("display_name", string()),
                ("email", string()),
                ("password", json!({"type": "string", "minLength": 12})),
                ("must_change_password", json!({"type": "boolean"})),
            ],
        ),
    );
    add(
        "UpdateUser",
        object(
            &[],
            &[
                ("display_name", string()),
                ("email", string()),
                ("disabled", json!({"type": "boolean"})),
                (
                    "kubeconfig_validity_secs",
                    json!({"type": "integer", "minimum": 0}),
                ),
            ],
        ),
    );
    add(
        "ResetPassword",
        object(
            &[],
            &[("password", json!({"type": "string", "minLength": 12}))],
        ),
    );
    add(
        "CreateGroup",
        object(
            &["name"],
            &[("name", name.clone()), ("description", string())],
        ),
    );
    add("UpdateGroup", object(&[], &[("description", string())]));
    add(
        "AddMember",
        object(
            &["user"],
            &[("user", json!({"type": "string", "maxLength": 254}))],
        ),
    );
    add(
        "CreateProject",
        object(
            &["name"],
            &[("name", name.clone()), ("description", string())],
        ),
    );
    add("UpdateProject", object(&[], &[("description", string())]));
    add(
        "CreateCluster",
        object(
            &["name"],
            &[("name", name.clone()), ("description", string())],
        ),
    );
    add("UpdateCluster", object(&[], &[("description", string())]));
    let roles: Vec<&str> = crate::domain::org::Role::ALL
        .iter()
        .map(|r| r.name())
        .collect();
    add(
        "CreateGrant",
        object(
            &["role"],
            &[
                ("user", name.clone()),
                ("group", name.clone()),
                ("role", json!({"enum": roles})),
                ("project", name.clone()),
                ("namespaces", json!({"type": "array", "items": name})),
                (
                    "expires_at",
                    json!({"type": "string", "format": "date-time"}),
                ),
            ],
        ),
    );
    add(
        "CreateToken",
        object(
            &["name"],
            &[("name", string()), ("expires_in_secs", integer())],
        ),
    );
    let strings = json!({"type": "array", "items": {"type": "string"}});
    let mapping = json!({"type": "array", "items": object(&["idp_group", "group"], &[("idp_group", string()), ("group", name.clone())])});
    let provider_fields = |with_name: bool| {
        let mut fields = vec![
            ("display_name", string()),
            (
                "issuer",
                json!({"type": "string", "format": "uri", "pattern": "^https://"}),
            ),
            ("client_id", string()),
            (
                "client_secret",
                json!({"type": "string", "writeOnly": true}),
            ),
            ("scopes", strings.clone()),
            ("username_claim", string()),
            ("groups_claim", string()),
            ("allowed_domains", strings.clone()),
            ("group_mapping", mapping.clone()),
            ("ca_pem", string()),
            ("require_verified_email", json!({"type": "boolean"})),
            ("enabled", json!({"type": "boolean"})),
        ];
        if with_name {
            fields.insert(0, ("name", name.clone()));
        }
        fields
    };
    add(
        "CreateSsoProvider",
        object(
            &["name", "issuer", "client_id", "client_secret"],
            &provider_fields(true),
        ),
    );
    add("UpdateSsoProvider", object(&[], &provider_fields(false)));
    add(
        "UpdateSettings",
        object(
            &[],
            &[
                ("session_idle_timeout_secs", integer()),
                ("session_absolute_timeout_secs", integer()),
                ("kubeconfig_validity_secs", integer()),
                ("service_account_ttl_secs", integer()),
                ("api_token_max_validity_secs", integer()),
            ],
        ),
    );
    m
}

pub fn document_value() -> Value {
    let mut paths = serde_json::Map::new();
    for (route, _) in routes() {
        let full = format!("/api/v1{}", route.path);
        let mut params: Vec<Value> = route
            .path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|p| json!({"name": p, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        if route.paginated {
            params.push(json!({"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 500}}));
            params.push(json!({"name": "cursor", "in": "query", "schema": {"type": "string"}}));
        }
        let mut op = json!({
            "summary": route.summary,
            "tags": [route.tag],
            "operationId": format!("{}{}", route.method, route.path.replace(['/', '{', '}', '.'], "_")),
            "parameters": params,
            "responses": {
                route.success.to_string(): {"description": "success"},
                "default": {"description": "error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
            }
        });
        if let Some(body) = route.body {
            op["requestBody"] = json!({"required": true, "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{body}")}}}});
        }
        if !route.authenticated {
            op["security"] = json!([]);
        }
        let entry = paths.entry(full).or_insert_with(|| json!({}));
        entry[route.method] = op;
    }
    json!({
        "openapi": "3.0.3",
        "info": {"title": "ztka API", "version": env!("CARGO_PKG_VERSION")},
        "servers": [{"url": "/"}],
        "security": [{"session": []}, {"bearer": []}],
        "paths": paths,
        "components": {
            "schemas": schemas(),
            "securitySchemes": {
                "session": {"type": "apiKey", "in": "cookie", "name": crate::authn::SESSION_COOKIE},
                "bearer": {"type": "http", "scheme": "bearer"}
            }
        }
    })
}

async fn document(State(_): State<AppState>) -> axum::Json<Value> {
    axum::Json(document_value())
}
