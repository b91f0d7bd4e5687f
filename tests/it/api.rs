//! Identity and the REST API over real HTTPS: sign-in, forced password change, projects,
//! groups, grants, visibility, CSRF, tokens, throttling, validation and the OpenAPI document.

use bytes::Bytes;
use serde_json::json;

use crate::fixture::*;

async fn audit_actions(app: &InProcess) -> Vec<(String, String, u16)> {
    app.server
        .state
        .audit
        .recent(1000)
        .await
        .unwrap()
        .into_iter()
        .map(|e| {
            (
                e.event.action.clone(),
                e.event.actor.user_name.clone().unwrap_or_default(),
                e.event.status,
            )
        })
        .collect()
}

#[tokio::test]
async fn a_group_grant_gives_read_access_and_membership_removal_takes_it_away() {
    let app = InProcess::start().await;

    // The first admin must change the initial password before anything else.
    let (mut admin, body) = app.login("admin", &app.admin_password).await;
    assert_eq!(body["must_change_password"], true);
    let (s, b) = admin.get("/api/v1/projects").await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (403, Some("password_change_required"))
    );
    let mut admin = app.admin().await;

    for (name, desc) in [("prod", "production"), ("secret", "not for alice")] {
        let (s, b) = admin
            .post(
                "/api/v1/projects",
                json!({"name": name, "description": desc}),
            )
            .await;
        assert_eq!(s, 201, "{b}");
    }
    let (s, b) = admin
        .post("/api/v1/groups", json!({"name": "viewers"}))
        .await;
    assert_eq!(s, 201, "{b}");
    let (s, b) = admin
        .post(
            "/api/v1/users",
            json!({"name": "alice", "password": "alice-initial-pass"}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(b["must_change_password"], true);
    let (s, b) = admin
        .post(
            "/api/v1/grants",
            json!({"group": "viewers", "role": "project-read-only", "project": "prod"}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let (s, b) = admin
        .post("/api/v1/groups/viewers/members", json!({"user": "alice"}))
        .await;
    assert_eq!(s, 204, "{b}");

    let (mut alice, _) = app.login("alice", "alice-initial-pass").await;
    let (s, _) = alice
        .post(
            "/api/v1/auth/password",
            json!({"current_password": "alice-initial-pass", "new_password": "alice-chosen-password"}),
        )
        .await;
    assert_eq!(s, 204);

    let (s, b) = alice.get("/api/v1/projects").await;
    assert_eq!(s, 200);
    let names: Vec<&str> = b["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["prod"]);
    assert_eq!(alice.get("/api/v1/projects/prod").await.0, 200);
    let (s, b) = alice
        .patch("/api/v1/projects/prod", json!({"description": "mine now"}))
        .await;
    assert_eq!((s, b["error"]["code"].as_str()), (403, Some("forbidden")));
    assert_eq!(alice.get("/api/v1/projects/secret").await.0, 404);
    assert_eq!(
        alice
            .patch("/api/v1/projects/secret", json!({"description": "x"}))
            .await
            .0,
        404
    );
    assert_eq!(alice.get("/api/v1/projects/does-not-exist").await.0, 404);
    assert_eq!(alice.get("/api/v1/users").await.0, 403);
    let (s, b) = alice.get("/api/v1/auth/me").await;
    assert_eq!(s, 200);
    assert_eq!(b["groups"], json!(["viewers"]));
    assert_eq!(b["grants"][0]["role"], "project-read-only");
    assert_eq!(b["grants"][0]["subject"]["name"], "viewers");

    // Removing the membership takes effect on the very next request.
    assert_eq!(
        admin.delete("/api/v1/groups/viewers/members/alice").await.0,
        204
    );
    assert_eq!(alice.get("/api/v1/projects/prod").await.0, 404);
    let (_, b) = alice.get("/api/v1/projects").await;
    assert_eq!(b["items"], json!([]));

    // Everything above is in the audit log, with who, from where, and the outcome.
    let events = audit_actions(&app).await;
    for wanted in [
        ("auth.login", "admin", 200),
        ("auth.password.change", "admin", 200),
        ("project.create", "admin", 200),
        ("group.create", "admin", 200),
        ("user.create", "admin", 200),
        ("grant.create", "admin", 200),
        ("group.member.add", "admin", 200),
        ("auth.login", "alice", 200),
        ("project.update", "alice", 403),
        ("group.member.remove", "admin", 200),
    ] {
        assert!(
            events
                .iter()
                .any(|(a, u, s)| (a.as_str(), u.as_str(), *s) == wanted),
            "missing {wanted:?} in {events:?}"
        );
    }
    let login = app.server.state.audit.recent(1000).await.unwrap();
    let login = login
        .iter()
        .find(|e| e.event.action == "auth.login")
        .unwrap();
    assert_eq!(login.event.actor.client_addr.as_deref(), Some("127.0.0.1"));
    assert_eq!(
        login.event.actor.user_agent.as_deref(),
        Some("ztka-tests/1")
    );
}

#[tokio::test]
async fn bad_input_gets_the_documented_status_and_nothing_is_half_written() {
    let app = InProcess::start().await;
    let mut admin = app.admin().await;

    let (s, b) = admin
        .send(
            "POST",
            "/api/v1/projects",
            Some(Bytes::from_static(b"{\"name\":")),
            Some("application/json"),
        )
        .await;
    assert_eq!((s, b["error"]["code"].as_str()), (400, Some("bad_request")));
    assert!(
        b["error"]["request_id"]
            .as_str()
            .is_some_and(|r| !r.is_empty())
    );

    let (s, b) = admin.post("/api/v1/projects", json!({"name": 42})).await;
    assert_eq!((s, b["error"]["field"].as_str()), (400, Some("name")));
    let (s, b) = admin
        .post("/api/v1/projects", json!({"name": "ok", "colour": "red"}))
        .await;
    assert_eq!((s, b["error"]["field"].as_str()), (400, Some("colour")));
    let (s, b) = admin
        .post("/api/v1/projects", json!({"name": "a".repeat(64)}))
        .await;
    assert_eq!((s, b["error"]["field"].as_str()), (400, Some("name")));
    assert!(
        b["error"]["message"]
            .as_str()
            .unwrap()
            .contains("at most 63")
    );
    let (s, b) = admin
        .post("/api/v1/projects", json!({"name": "Not_DNS"}))
        .await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (400, Some("invalid_input"))
    );
    let (s, _) = admin
        .send(
            "POST",
            "/api/v1/projects",
            Some(Bytes::from("{}")),
            Some("text/plain"),
        )
        .await;
    assert_eq!(s, 415);
    let big = format!("{{\"name\":\"{}\"}}", "a".repeat(2 * 1024 * 1024));
    let (s, b) = admin
        .send(
            "POST",
            "/api/v1/projects",
            Some(Bytes::from(big)),
            Some("application/json"),
        )
        .await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (413, Some("payload_too_large"))
    );

    assert_eq!(
        admin
            .post("/api/v1/projects", json!({"name": "dup"}))
            .await
            .0,
        201
    );
    let (s, b) = admin.post("/api/v1/projects", json!({"name": "dup"})).await;
    assert_eq!((s, b["error"]["code"].as_str()), (409, Some("conflict")));

    // A user with a short password, or a grant naming nobody, is not half-created.
    let (s, b) = admin
        .post("/api/v1/users", json!({"name": "bob", "password": "short"}))
        .await;
    assert_eq!((s, b["error"]["field"].as_str()), (400, Some("password")));
    assert_eq!(admin.get("/api/v1/users/bob").await.0, 404);
    let (s, b) = admin
        .post(
            "/api/v1/grants",
            json!({"user": "nobody", "role": "project-admin", "project": "dup"}),
        )
        .await;
    assert_eq!((s, b["error"]["field"].as_str()), (400, Some("user")));
    let (s, b) = admin
        .post(
            "/api/v1/grants",
            json!({"user": "admin", "role": "namespace-admin", "project": "dup"}),
        )
        .await;
    assert_eq!((s, b["error"]["field"].as_str()), (400, Some("namespaces")));
    let (s, b) = admin
        .post("/api/v1/grants", json!({"user": "admin", "role": "owner"}))
        .await;
    assert_eq!((s, b["error"]["field"].as_str()), (400, Some("role")));
    let (_, b) = admin.get("/api/v1/grants").await;
    assert_eq!(
        b["items"].as_array().unwrap().len(),
        1,
        "only the bootstrap grant: {b}"
    );
    let (s, _) = admin.get("/api/v1/users?limit=9999").await;
    assert_eq!(s, 400);

    // Missing CSRF token on a cookie-authenticated change.
    let mut no_csrf = admin.clone();
    no_csrf.csrf = None;
    let (s, b) = no_csrf
        .post("/api/v1/projects", json!({"name": "sneaky"}))
        .await;
    assert_eq!((s, b["error"]["code"].as_str()), (403, Some("csrf_failed")));
    no_csrf.csrf = Some("wrong".into());
    assert_eq!(
        no_csrf
            .post("/api/v1/projects", json!({"name": "sneaky"}))
            .await
            .0,
        403
    );
    assert_eq!(admin.get("/api/v1/projects/sneaky").await.0, 404);

    // Unauthenticated.
    let (s, b) = app.anonymous().get("/api/v1/projects").await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (401, Some("unauthorized"))
    );
}

#[tokio::test]
async fn sessions_expire_and_end_server_side() {
    let app = InProcess::start().await;
    let mut admin = app.admin().await;
    let (s, b) = admin
        .patch(
            "/api/v1/settings",
            json!({"session_idle_timeout_secs": 120}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = admin
        .patch("/api/v1/settings", json!({"session_idle_timeout_secs": 5}))
        .await;
    assert_eq!(
        (s, b["error"]["field"].as_str()),
        (400, Some("session_idle_timeout_secs"))
    );

    // Age the session past the idle timeout in the database.
    let key = ztka::authn::sha256_hex(admin.cookie.as_deref().unwrap());
    let store = app.server.state.store.clone();
    let lookup = key.clone();
    let mut session = store
        .read(move |txn| ztka::store::grants::get_session(txn, &lookup))
        .await
        .unwrap()
        .unwrap();
    session.last_seen_at -= time::Duration::minutes(3);
    store
        .write(move |txn| ztka::store::grants::put_session(txn, &key, &session))
        .await
        .unwrap();
    let (s, b) = admin.get("/api/v1/auth/me").await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (401, Some("session_expired"))
    );

    // Logout ends the session on the server: the old cookie is useless afterwards.
    let (mut again, _) = app.login("admin", ADMIN_PASSWORD).await;
    let stolen = again.cookie.clone();
    assert_eq!(again.post("/api/v1/auth/logout", json!({})).await.0, 204);
    again.cookie = stolen;
    assert_eq!(again.get("/api/v1/auth/me").await.0, 401);
}

#[tokio::test]
async fn api_tokens_are_shown_once_expire_and_die_with_their_user() {
    let app = InProcess::start().await;
    let mut admin = app.admin().await;
    let (s, _) = admin
        .post("/api/v1/users", json!({"name": "ci", "kind": "service"}))
        .await;
    assert_eq!(s, 201);
    let (s, b) = admin
        .post(
            "/api/v1/users",
            json!({"name": "ci2", "kind": "service", "password": "a-password-for-service"}),
        )
        .await;
    assert_eq!((s, b["error"]["field"].as_str()), (400, Some("password")));
    // Service users cannot sign in with a password; an admin's token can act for automation.
    let (s, b) = app
        .anonymous()
        .post(
            "/api/v1/auth/login",
            json!({"username": "ci", "password": "anything-at-all"}),
        )
        .await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (401, Some("invalid_credentials"))
    );

    let (s, b) = admin
        .post(
            "/api/v1/tokens",
            json!({"name": "deploys", "expires_in_secs": 3600}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let secret = b["token"].as_str().unwrap().to_owned();
    let id = b["id"].as_str().unwrap().to_owned();
    let (_, list) = admin.get("/api/v1/tokens").await;
    assert!(
        list.to_string().find(&secret).is_none(),
        "a token is shown only once"
    );

    let mut bot = app.anonymous();
    bot.bearer = Some(secret.clone());
    assert_eq!(bot.get("/api/v1/users").await.0, 200);
    // Bearer requests need no CSRF token.
    assert_eq!(
        bot.post("/api/v1/projects", json!({"name": "from-ci"}))
            .await
            .0,
        201
    );
    bot.bearer = Some(format!("{secret}x"));
    assert_eq!(bot.get("/api/v1/users").await.0, 401);

    // Expire it in the database.
    let store = app.server.state.store.clone();
    let hash = ztka::authn::sha256_hex(&secret);
    let mut token = store
        .read(move |txn| ztka::store::grants::token_by_hash(txn, &hash))
        .await
        .unwrap()
        .unwrap();
    token.expires_at = time::OffsetDateTime::now_utc() - time::Duration::seconds(1);
    store
        .write(move |txn| ztka::store::grants::update_token(txn, &token))
        .await
        .unwrap();
    bot.bearer = Some(secret);
    let (s, b) = bot.get("/api/v1/users").await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (401, Some("token_expired"))
    );
    assert_eq!(admin.delete(&format!("/api/v1/tokens/{id}")).await.0, 204);
}

#[tokio::test]
async fn disabling_a_user_locks_them_out_everywhere() {
    let app = InProcess::start().await;
    let mut admin = app.admin().await;
    admin
        .post(
            "/api/v1/users",
            json!({"name": "carol", "password": "carol-password-1", "must_change_password": false}),
        )
        .await;
    admin
        .post(
            "/api/v1/grants",
            json!({"user": "carol", "role": "admin-read-only"}),
        )
        .await;
    let (mut carol, _) = app.login("carol", "carol-password-1").await;
    let (s, b) = carol.post("/api/v1/tokens", json!({"name": "t"})).await;
    assert_eq!(s, 201, "{b}");
    let mut carol_bot = app.anonymous();
    carol_bot.bearer = Some(b["token"].as_str().unwrap().to_owned());
    assert_eq!(carol.get("/api/v1/users").await.0, 200);
    // Read-only admins cannot change anything.
    assert_eq!(
        carol.post("/api/v1/projects", json!({"name": "x"})).await.0,
        403
    );

    let (s, b) = admin
        .patch("/api/v1/users/carol", json!({"disabled": true}))
        .await;
    assert_eq!((s, b["disabled"].as_bool()), (200, Some(true)));
    assert_eq!(carol.get("/api/v1/users").await.0, 401);
    assert_eq!(carol_bot.get("/api/v1/users").await.0, 401);
    let (s, b) = app
        .anonymous()
        .post(
            "/api/v1/auth/login",
            json!({"username": "carol", "password": "carol-password-1"}),
        )
        .await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (403, Some("account_disabled"))
    );
    // An admin cannot lock themselves out.
    assert_eq!(
        admin
            .patch("/api/v1/users/admin", json!({"disabled": true}))
            .await
            .0,
        409
    );
    assert_eq!(admin.delete("/api/v1/users/admin").await.0, 409);

    assert_eq!(admin.delete("/api/v1/users/carol").await.0, 204);
    let (_, grants) = admin.get("/api/v1/grants").await;
    assert_eq!(
        grants["items"].as_array().unwrap().len(),
        1,
        "carol's grant went with her"
    );
}

#[tokio::test]
async fn failed_sign_ins_are_throttled_without_revealing_who_exists() {
    let app = InProcess::start().await;
    let _admin = app.admin().await;
    let mut anon = app.anonymous();
    let (s1, b1) = anon
        .post(
            "/api/v1/auth/login",
            json!({"username": "admin", "password": "wrong-password-1"}),
        )
        .await;
    let (s2, b2) = anon
        .post(
            "/api/v1/auth/login",
            json!({"username": "ghost", "password": "wrong-password-1"}),
        )
        .await;
    assert_eq!((s1, s2), (401, 401));
    assert_eq!(b1["error"]["message"], b2["error"]["message"]);
    assert_eq!(b1["error"]["code"], b2["error"]["code"]);

    let mut last = 0;
    for _ in 0..12 {
        last = anon
            .post(
                "/api/v1/auth/login",
                json!({"username": "admin", "password": "wrong-password-1"}),
            )
            .await
            .0;
    }
    assert_eq!(last, 429);
    // Locked even with the right password.
    let (s, b) = anon
        .post(
            "/api/v1/auth/login",
            json!({"username": "admin", "password": ADMIN_PASSWORD}),
        )
        .await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (429, Some("too_many_attempts"))
    );
    let events = audit_actions(&app).await;
    assert!(
        events
            .iter()
            .any(|(a, u, s)| a == "auth.login" && u == "ghost" && *s == 401)
    );
    assert!(
        events
            .iter()
            .any(|(a, _, s)| a == "auth.login" && *s == 429)
    );
}

#[tokio::test]
async fn grants_expire_without_a_restart() {
    let app = InProcess::start().await;
    let mut admin = app.admin().await;
    admin
        .post("/api/v1/projects", json!({"name": "temp"}))
        .await;
    admin
        .post(
            "/api/v1/users",
            json!({"name": "dave", "password": "dave-password-12", "must_change_password": false}),
        )
        .await;
    let soon = (time::OffsetDateTime::now_utc() + time::Duration::seconds(2))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let (s, b) = admin
        .post(
            "/api/v1/grants",
            json!({"user": "dave", "role": "project-admin", "project": "temp", "expires_at": soon}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let (mut dave, _) = app.login("dave", "dave-password-12").await;
    assert_eq!(dave.get("/api/v1/projects/temp").await.0, 200);
    tokio::time::sleep(std::time::Duration::from_millis(2200)).await;
    assert_eq!(dave.get("/api/v1/projects/temp").await.0, 404);
    let (_, b) = admin.get("/api/v1/grants?project=temp").await;
    assert_eq!(b["items"][0]["active"], false);
}

#[tokio::test]
async fn the_openapi_document_lists_every_route_and_every_route_is_served() {
    let app = InProcess::start().await;
    let mut admin = app.admin().await;
    let (s, doc) = app.anonymous().get("/api/v1/openapi.json").await;
    assert_eq!(s, 200);
    assert_eq!(doc["openapi"], "3.0.3");
    let paths = doc["paths"].as_object().unwrap();
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    let routes = ztka::api::openapi::routes();
    assert!(routes.len() >= 30);
    for (route, _) in &routes {
        let full = format!("/api/v1{}", route.path);
        let op = &paths[&full][route.method];
        assert!(
            op.is_object(),
            "{} {full} missing from the document",
            route.method
        );
        if let Some(r) = op["requestBody"]["content"]["application/json"]["schema"]["$ref"].as_str()
        {
            let name = r.trim_start_matches("#/components/schemas/");
            assert!(schemas.contains_key(name), "{r} does not resolve");
        }
        // And the router serves it: whatever the answer, it is not "no such route".
        let path = full
            .replace("{name}", "x")
            .replace("{id}", "x")
            .replace("{user}", "x");
        let (status, body) = admin
            .send(
                &route.method.to_uppercase(),
                &path,
                Some(Bytes::from("{}")),
                Some("application/json"),
            )
            .await;
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(
            !(status == 404 && message.starts_with("no API route")),
            "{} {path} is documented but not served",
            route.method
        );
    }
    // Every documented path+method pair comes from the table (nothing extra).
    let documented: usize = paths.values().map(|p| p.as_object().unwrap().len()).sum();
    assert_eq!(documented, routes.len());
}

#[tokio::test]
async fn headless_setup_with_admin_commands() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // Create the database and the first admin, then stop.
    let first = ServerProcess::start(&data, &[]);
    assert!(first.stop().success());

    let run = |args: &[&str]| {
        let out = ztka()
            .args(args)
            .env("ZTKA_DATA_DIR", &data)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "erin-password-123\n").unwrap();
    let (code, _, err) = run(&[
        "admin",
        "user",
        "create",
        "erin",
        "--password-file",
        pw.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(0), "{err}");
    let (code, out, _) = run(&["admin", "user", "create", "robot", "--service"]);
    assert_eq!(code, Some(0));
    assert!(!out.contains("password"));
    let (code, _, err) = run(&["admin", "user", "create", "erin"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("already exists"), "{err}");
    let (code, _, err) = run(&[
        "admin",
        "grant",
        "--user",
        "erin",
        "--role",
        "admin-read-only",
    ]);
    assert_eq!(code, Some(0), "{err}");
    let (code, _, err) = run(&[
        "admin",
        "grant",
        "--user",
        "erin",
        "--role",
        "project-admin",
    ]);
    assert_eq!(code, Some(2));
    assert!(err.contains("needs a project"), "{err}");
    let (code, _, err) = run(&["admin", "grant", "--user", "nobody", "--role", "admin"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("no user named"), "{err}");
    let (code, out, _) = run(&["admin", "user", "list"]);
    assert_eq!(code, Some(0));
    assert!(
        out.contains("erin") && out.contains("robot") && out.contains("service"),
        "{out}"
    );

    let server = ServerProcess::start(&data, &[]);
    let mut erin = ApiClient {
        http: server.client(),
        base: format!("https://localhost:{}", server.addr.port()),
        cookie: None,
        csrf: None,
        bearer: None,
        user_agent: "t".into(),
    };
    let (s, b) = erin
        .post(
            "/api/v1/auth/login",
            json!({"username": "erin", "password": "erin-password-123"}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["must_change_password"], true);
    assert!(server.stop().success());

    let (code, _, _) = run(&["admin", "user", "disable", "erin"]);
    assert_eq!(code, Some(0));
    let (_, out, _) = run(&["admin", "user", "list"]);
    assert!(
        out.lines()
            .any(|l| l.starts_with("erin") && l.contains("disabled")),
        "{out}"
    );
}

#[tokio::test]
async fn the_audit_api_filters_pages_scopes_by_project_and_audits_its_readers() {
    let app = InProcess::start().await;
    let mut admin = app.admin().await;
    for p in ["prod", "secret"] {
        admin.post("/api/v1/projects", json!({"name": p})).await;
    }
    for (u, role, project) in [
        ("alice", "project-read-only", "prod"),
        ("nina", "namespace-admin", "prod"),
    ] {
        admin
            .post(
                "/api/v1/users",
                json!({"name": u, "password": "a-long-password-1", "must_change_password": false}),
            )
            .await;
        let mut grant = json!({"user": u, "role": role, "project": project});
        if role == "namespace-admin" {
            grant["namespaces"] = json!(["team-a"]);
        }
        assert_eq!(admin.post("/api/v1/grants", grant).await.0, 201);
    }
    admin
        .patch("/api/v1/projects/secret", json!({"description": "hidden"}))
        .await;
    admin
        .patch("/api/v1/projects/prod", json!({"description": "visible"}))
        .await;

    // Filters and the chain head.
    let (s, b) = admin.get("/api/v1/audit?action=project.update").await;
    assert_eq!(s, 200, "{b}");
    let items = b["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert!(items.iter().all(|e| e["action"] == "project.update"));
    assert!(
        items[0]["seq"].as_u64() > items[1]["seq"].as_u64(),
        "newest first"
    );
    assert_eq!(b["head"]["hash"].as_str().unwrap().len(), 64);
    let (_, b) = admin
        .get("/api/v1/audit?user=admin&outcome=success&kind=system&limit=500")
        .await;
    assert!(
        b["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["actor"]["user_name"] == "admin")
    );

    // Cursor pagination: pages do not overlap and new events do not shift them.
    let (_, p1) = admin.get("/api/v1/audit?limit=3").await;
    let cursor = p1["next_cursor"].as_str().unwrap().to_owned();
    admin
        .post("/api/v1/projects", json!({"name": "later"}))
        .await;
    let (_, p2) = admin
        .get(&format!("/api/v1/audit?limit=3&cursor={cursor}"))
        .await;
    let last1 = p1["items"][2]["seq"].as_u64().unwrap();
    let first2 = p2["items"][0]["seq"].as_u64().unwrap();
    assert_eq!(first2, last1 - 1);

    // Bad filters name the field.
    let (s, b) = admin.get("/api/v1/audit?outcome=maybe").await;
    assert_eq!((s, b["error"]["field"].as_str()), (400, Some("outcome")));
    assert_eq!(admin.get("/api/v1/audit?limit=100000").await.0, 400);
    assert_eq!(admin.get("/api/v1/audit?colour=red").await.0, 400);
    let (s, b) = admin.get("/api/v1/audit?from=2099-01-01T00:00:00Z").await;
    assert_eq!((s, b["items"].clone()), (200, json!([])));
    let (s, b) = admin
        .get(
            "/api/v1/audit?from=2000-01-01T00:00:00Z&to=2099-01-01T00:00:00Z&action=project.update",
        )
        .await;
    assert_eq!((s, b["items"].as_array().map(Vec::len)), (200, Some(2)));
    let (s, b) = admin
        .get("/api/v1/audit?from=2099-01-01T00:00:00Z&to=2000-01-01T00:00:00Z")
        .await;
    assert_eq!((s, b["error"]["field"].as_str()), (400, Some("from")));

    // A project reader sees only that project's events.
    let (mut alice, _) = app.login("alice", "a-long-password-1").await;
    let (s, b) = alice.get("/api/v1/audit?limit=500").await;
    assert_eq!(s, 200, "{b}");
    let items = b["items"].as_array().unwrap();
    assert!(!items.is_empty());
    assert!(
        items.iter().all(|e| e["target"]["project"] == "prod"),
        "{b}"
    );
    let (_, b) = alice.get("/api/v1/audit?project=secret").await;
    assert_eq!(b["items"], json!([]));

    // A role without audit access is refused.
    let (mut nina, _) = app.login("nina", "a-long-password-1").await;
    assert_eq!(nina.get("/api/v1/audit").await.0, 403);
    assert_eq!(nina.get("/api/v1/audit/export").await.0, 403);

    // Export: JSON Lines, the same events as the list for the same filter.
    let res = admin
        .http
        .send({
            let mut r = get(&format!(
                "{}/api/v1/audit/export?action=project.update",
                admin.base
            ));
            r.headers_mut().insert(
                "cookie",
                format!("ztka_session={}", admin.cookie.as_ref().unwrap())
                    .parse()
                    .unwrap(),
            );
            r
        })
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "application/x-ndjson");
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(res.body())
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert!(
        lines
            .iter()
            .all(|e| e["action"] == "project.update" && e["hash"].as_str().unwrap().len() == 64)
    );

    // Reading and exporting were themselves recorded.
    let (_, b) = admin.get("/api/v1/audit?action=audit.export").await;
    assert_eq!(b["items"][0]["actor"]["user_name"], "admin");
    let (_, b) = admin
        .get("/api/v1/audit?action=audit.read&user=alice")
        .await;
    assert!(!b["items"].as_array().unwrap().is_empty());
}
