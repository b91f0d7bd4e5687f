//! Real kubectl binaries against the simulator, with the kubeconfig it writes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use kubesim::kubectl::{is_recent, kubectl, kubectls, ok, port_forward_round_trip, stream_until};
use kubesim::{KubeSim, Options};
use serde_json::{Value, json};

async fn sim() -> KubeSim {
    KubeSim::start(Options::default()).await.unwrap()
}

fn pod(ns: &str, name: &str, labels: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "spec": {"containers": [{"name": "main", "image": "busybox"}]}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_list_describe() {
    let sim = sim().await;
    sim.create(pod("default", "web-1", json!({"app": "web"})))
        .await
        .unwrap();
    sim.create(pod("default", "db-1", json!({"app": "db"})))
        .await
        .unwrap();
    let kc = sim.kubeconfig_path();
    for bin in kubectls() {
        let table = ok(&bin, kc, &["get", "pods"], None).await;
        let header = table.lines().next().unwrap();
        assert!(
            header.contains("READY") && header.contains("STATUS"),
            "{table}"
        );
        assert!(
            table
                .lines()
                .any(|l| l.starts_with("web-1") && l.contains("Running")),
            "{table}"
        );

        let names = ok(
            &bin,
            kc,
            &["get", "pods", "-l", "app=web", "-o", "name"],
            None,
        )
        .await;
        assert_eq!(names.trim(), "pod/web-1");
        let names = ok(
            &bin,
            kc,
            &[
                "get",
                "pods",
                "--field-selector",
                "metadata.name=db-1,status.phase=Running",
                "-o",
                "name",
            ],
            None,
        )
        .await;
        assert_eq!(names.trim(), "pod/db-1");

        let json: Value =
            serde_json::from_str(&ok(&bin, kc, &["get", "pods", "-A", "-o", "json"], None).await)
                .unwrap();
        assert_eq!(json["items"].as_array().unwrap().len(), 2);

        let chunked = ok(
            &bin,
            kc,
            &["get", "pods", "--chunk-size=1", "-o", "name"],
            None,
        )
        .await;
        assert_eq!(
            chunked.lines().count(),
            2,
            "limit/continue pages: {chunked}"
        );

        let ns = ok(&bin, kc, &["get", "namespaces"], None).await;
        assert!(ns.contains("kube-system") && ns.contains("Active"), "{ns}");

        let described = ok(&bin, kc, &["describe", "pod", "web-1"], None).await;
        assert!(described.contains("Name:") && described.contains("web-1"));
        assert!(described.contains("Status:") && described.contains("Running"));
        assert!(
            described.contains("Started container main"),
            "events: {described}"
        );

        let missing = kubectl(&bin, kc, &["get", "pod", "nope"], None).await;
        assert_ne!(missing.code, 0);
        assert!(
            missing
                .stderr
                .contains(r#"Error from server (NotFound): pods "nope" not found"#),
            "{}",
            missing.stderr
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_then_update_then_delete() {
    let sim = sim().await;
    let kc = sim.kubeconfig_path();
    for (i, bin) in kubectls().into_iter().enumerate() {
        let name = format!("settings-{i}");
        let manifest = |value: &str| {
            format!(
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  namespace: default\ndata:\n  key: {value}\n"
            )
        };
        let out = ok(
            &bin,
            kc,
            &["apply", "--dry-run=server", "-f", "-"],
            Some(&manifest("one")),
        )
        .await;
        assert!(out.contains("server dry run"), "{out}");
        assert!(
            sim.get("v1", "ConfigMap", "default", &name)
                .await
                .unwrap()
                .is_none(),
            "a dry run stores nothing"
        );
        let out = ok(&bin, kc, &["apply", "-f", "-"], Some(&manifest("one"))).await;
        assert!(out.contains("created"), "{out}");
        let out = ok(&bin, kc, &["apply", "-f", "-"], Some(&manifest("two"))).await;
        assert!(out.contains("configured"), "{out}");
        let cm = sim
            .get("v1", "ConfigMap", "default", &name)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(cm["data"]["key"], "two");
        let out = ok(&bin, kc, &["apply", "-f", "-"], Some(&manifest("two"))).await;
        assert!(out.contains("unchanged"), "{out}");
        ok(&bin, kc, &["delete", "configmap", &name], None).await;
        assert!(
            sim.get("v1", "ConfigMap", "default", &name)
                .await
                .unwrap()
                .is_none()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_deployment_removes_its_replica_sets_and_pods() {
    let sim = sim().await;
    let kc = sim.kubeconfig_path();
    let Some(bin) = kubectls().into_iter().next() else {
        return;
    };
    let manifest = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 2\n  selector:\n    matchLabels: {app: web}\n  template:\n    metadata:\n      labels: {app: web}\n    spec:\n      containers:\n      - name: web\n        image: nginx:1\n";
    ok(&bin, kc, &["apply", "-f", "-"], Some(manifest)).await;
    let pods = sim.list("v1", "Pod", "default", "app=web").await.unwrap();
    assert_eq!(pods.len(), 2);
    let updated = manifest.replace("nginx:1", "nginx:2");
    ok(&bin, kc, &["apply", "-f", "-"], Some(&updated)).await;
    let image = ok(
        &bin,
        kc,
        &[
            "get",
            "deploy",
            "web",
            "-o",
            "jsonpath={.spec.template.spec.containers[0].image}",
        ],
        None,
    )
    .await;
    assert_eq!(image, "nginx:2", "strategic merge kept the container list");
    // The new template rolled out: the pods run the new image.
    let pods = sim.list("v1", "Pod", "default", "app=web").await.unwrap();
    assert_eq!(pods.len(), 2);
    assert!(
        pods.iter()
            .all(|p| p["spec"]["containers"][0]["image"] == "nginx:2"),
        "{pods:?}"
    );
    ok(&bin, kc, &["delete", "deployment", "web"], None).await;
    assert!(
        sim.list("v1", "Pod", "default", "app=web")
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        sim.list("apps/v1", "ReplicaSet", "default", "")
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_sees_new_objects() {
    let sim = std::sync::Arc::new(sim().await);
    sim.create(pod("default", "first", json!({})))
        .await
        .unwrap();
    for (i, bin) in kubectls().into_iter().enumerate() {
        let name = format!("later-{i}");
        let sim2 = sim.clone();
        let create_name = name.clone();
        let handle = tokio::runtime::Handle::current();
        let lines = stream_until(
            &bin,
            sim.kubeconfig_path(),
            &["get", "pods", "-w"],
            |seen| seen.iter().any(|l| l.starts_with(&name)),
            Some(Box::new(move || {
                let sim = sim2.clone();
                let n = create_name.clone();
                handle.spawn(async move { sim.create(pod("default", &n, json!({}))).await });
            })),
        )
        .await;
        assert!(lines.iter().any(|l| l.starts_with("first")), "{lines:?}");

        // A watch ends by itself when the client's request timeout passes.
        let started = std::time::Instant::now();
        let out = kubectl(
            &bin,
            sim.kubeconfig_path(),
            &["get", "pods", "-w", "--request-timeout=2s"],
            None,
        )
        .await;
        assert!(out.stdout.contains("first"), "{}", out.stdout);
        assert!(started.elapsed() < Duration::from_secs(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_follow_streams_lines() {
    let sim = sim().await;
    sim.create(pod("default", "talker", json!({})))
        .await
        .unwrap();
    for bin in kubectls() {
        let plain = ok(
            &bin,
            sim.kubeconfig_path(),
            &["logs", "talker", "--tail=3"],
            None,
        )
        .await;
        assert_eq!(plain.lines().count(), 3, "{plain}");
        // Ten lines exist at once; more only arrive while following.
        let lines = stream_until(
            &bin,
            sim.kubeconfig_path(),
            &["logs", "-f", "talker"],
            |seen| seen.len() >= 15,
            None,
        )
        .await;
        assert!(lines[14].contains("log line 15"), "{lines:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_passes_stdin_and_exit_codes() {
    let sim = sim().await;
    sim.create(pod("default", "shell", json!({})))
        .await
        .unwrap();
    let kc = sim.kubeconfig_path();
    for bin in kubectls() {
        let out = ok(
            &bin,
            kc,
            &["exec", "shell", "--", "echo", "hello", "there"],
            None,
        )
        .await;
        assert_eq!(out, "hello there\n");
        let out = ok(
            &bin,
            kc,
            &["exec", "-i", "shell", "--", "cat"],
            Some("line one\nline two\n"),
        )
        .await;
        assert_eq!(out, "line one\nline two\n");
        let out = kubectl(
            &bin,
            kc,
            &["exec", "shell", "--", "sh", "-c", "exit 7"],
            None,
        )
        .await;
        assert_eq!(out.code, 7, "{}", out.stderr);
        assert!(out.stderr.contains("command terminated with exit code 7"));
        let env = ok(&bin, kc, &["exec", "shell", "--", "env"], None).await;
        assert!(env.contains("HOSTNAME=shell"), "{env}");
        let attached = ok(&bin, kc, &["attach", "-i", "shell"], Some("typed\n")).await;
        assert!(attached.contains("typed"), "{attached}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_account_tokens_and_rbac_denials() {
    let sim = sim().await;
    let kc = sim.kubeconfig_path();
    let bins = kubectls();
    let Some(first) = bins.first() else { return };
    ok(first, kc, &["create", "namespace", "ztka-system"], None).await;
    ok(
        first,
        kc,
        &["create", "serviceaccount", "x", "-n", "ztka-system"],
        None,
    )
    .await;
    // TokenRequest through kubectl itself.
    let token = ok(
        first,
        kc,
        &[
            "create",
            "token",
            "x",
            "-n",
            "ztka-system",
            "--duration=10m",
        ],
        None,
    )
    .await;
    let sa_kc = sim.dir().join("sa-kubeconfig");
    sim.write_kubeconfig(&sa_kc, token.trim()).unwrap();

    for bin in &bins {
        // `auth whoami` is beta in 1.27 and asks for a version this server does not serve.
        if is_recent(bin) {
            let who = ok(bin, &sa_kc, &["auth", "whoami", "-o", "json"], None).await;
            assert!(who.contains("system:serviceaccount:ztka-system:x"), "{who}");
        }
        let out = kubectl(bin, &sa_kc, &["get", "pods", "-n", "default"], None).await;
        assert_ne!(out.code, 0);
        assert!(
            out.stderr.contains(
                r#"pods is forbidden: User "system:serviceaccount:ztka-system:x" cannot list resource "pods" in API group "" in the namespace "default""#
            ),
            "{}",
            out.stderr
        );
        let can = kubectl(
            bin,
            &sa_kc,
            &["auth", "can-i", "list", "pods", "-n", "default"],
            None,
        )
        .await;
        assert_eq!((can.code, can.stdout.trim()), (1, "no"));
        let can = ok(bin, kc, &["auth", "can-i", "delete", "nodes"], None).await;
        assert_eq!(can.trim(), "yes");
    }

    // Grant read access in `default` and check subresources and names are told apart.
    let grant = r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: reader, namespace: default}
rules:
- apiGroups: [""]
  resources: ["pods", "pods/log"]
  verbs: ["get", "list", "watch"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: reader-x, namespace: default}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: reader}
subjects:
- {kind: ServiceAccount, name: x, namespace: ztka-system}
"#;
    ok(first, kc, &["apply", "-f", "-"], Some(grant)).await;
    sim.create(pod("default", "p", json!({}))).await.unwrap();
    for bin in &bins {
        let pods = ok(
            bin,
            &sa_kc,
            &["get", "pods", "-n", "default", "-o", "name"],
            None,
        )
        .await;
        assert_eq!(pods.trim(), "pod/p");
        let rules = ok(
            bin,
            &sa_kc,
            &["auth", "can-i", "--list", "-n", "default"],
            None,
        )
        .await;
        assert!(
            rules
                .lines()
                .any(|l| l.starts_with("pods ") && l.contains("[get list watch]")),
            "{rules}"
        );
        let can = ok(
            bin,
            &sa_kc,
            &["auth", "can-i", "get", "pods/log", "-n", "default"],
            None,
        )
        .await;
        assert_eq!(can.trim(), "yes");
        let can = kubectl(
            bin,
            &sa_kc,
            &["auth", "can-i", "create", "pods/exec", "-n", "default"],
            None,
        )
        .await;
        assert_eq!(can.stdout.trim(), "no");
        let del = kubectl(bin, &sa_kc, &["delete", "pod", "p", "-n", "default"], None).await;
        assert!(
            del.stderr.contains(
                r#"pods "p" is forbidden: User "system:serviceaccount:ztka-system:x" cannot delete resource "pods" in API group "" in the namespace "default""#
            ),
            "{}",
            del.stderr
        );
        {
            let ex = kubectl(
                bin,
                &sa_kc,
                &["exec", "p", "-n", "default", "--", "echo"],
                None,
            )
            .await;
            assert_ne!(ex.code, 0);
            assert!(
                ex.stderr.contains("cannot create resource \"pods/exec\""),
                "{}",
                ex.stderr
            );
        }
    }

    // Impersonation needs the `impersonate` verb, which the ServiceAccount lacks.
    let out = kubectl(first, &sa_kc, &["--as=alice", "get", "pods"], None).await;
    assert!(
        out.stderr.contains(
            r#"users "alice" is forbidden: User "system:serviceaccount:ztka-system:x" cannot impersonate resource "users" in API group "" at the cluster scope"#
        ),
        "{}",
        out.stderr
    );
    let out = kubectl(first, kc, &["--as=alice", "get", "pods"], None).await;
    assert!(
        out.stderr
            .contains(r#"User "alice" cannot list resource "pods""#),
        "{}",
        out.stderr
    );

    // Deleting the ServiceAccount invalidates its tokens at once.
    ok(
        first,
        kc,
        &["delete", "serviceaccount", "x", "-n", "ztka-system"],
        None,
    )
    .await;
    let out = kubectl(first, &sa_kc, &["get", "pods", "-n", "default"], None).await;
    assert!(out.stderr.contains("Unauthorized"), "{}", out.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_tokens_are_refused() {
    let sim = sim().await;
    sim.create(json!({"apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": {"name": "brief", "namespace": "default"}}))
        .await
        .unwrap();
    let token = sim.create_token("default", "brief", 1).await.unwrap();
    let (code, _) = sim
        .request_as(&token, "GET", "/version", None)
        .await
        .unwrap();
    assert_eq!(code, 200);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (code, body) = sim
        .request_as(&token, "GET", "/version", None)
        .await
        .unwrap();
    assert_eq!(code, 401);
    assert_eq!(body["reason"], "Unauthorized");
    let (code, _) = sim
        .request_as("made-up", "GET", "/api", None)
        .await
        .unwrap();
    assert_eq!(code, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bind_and_escalate_rules() {
    let sim = sim().await;
    let kc = sim.kubeconfig_path();
    let Some(bin) = kubectls().into_iter().next() else {
        return;
    };
    let setup = r#"
apiVersion: v1
kind: Namespace
metadata: {name: team}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: lead, namespace: team}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: rbac-writer, namespace: team}
rules:
- apiGroups: ["rbac.authorization.k8s.io"]
  resources: ["roles", "rolebindings"]
  verbs: ["create", "get", "list", "patch", "update"]
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get", "list"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: lead, namespace: team}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: rbac-writer}
subjects: [{kind: ServiceAccount, name: lead, namespace: team}]
"#;
    ok(&bin, kc, &["apply", "-f", "-"], Some(setup)).await;
    let token = sim.create_token("team", "lead", 600).await.unwrap();
    let lead = sim.dir().join("lead-kubeconfig");
    sim.write_kubeconfig(&lead, &token).unwrap();

    let role = |name: &str, resource: &str| {
        format!(
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {{name: {name}, namespace: team}}\nrules:\n- apiGroups: [\"\"]\n  resources: [\"{resource}\"]\n  verbs: [\"get\"]\n"
        )
    };
    // Permissions the user holds may be handed on.
    ok(
        &bin,
        &lead,
        &["apply", "-f", "-"],
        Some(&role("cm-reader", "configmaps")),
    )
    .await;
    // Permissions the user lacks may not.
    let out = kubectl(
        &bin,
        &lead,
        &["apply", "-f", "-"],
        Some(&role("secret-reader", "secrets")),
    )
    .await;
    assert_ne!(out.code, 0);
    assert!(
        out.stderr.contains(r#"roles.rbac.authorization.k8s.io "secret-reader" is forbidden: user "system:serviceaccount:team:lead""#)
            && out.stderr.contains("is attempting to grant RBAC permissions not currently held")
            && out.stderr.contains(r#"{APIGroups:[""], Resources:["secrets"], Verbs:["get"]}"#),
        "{}",
        out.stderr
    );

    let binding = |name: &str, kind: &str, role: &str| {
        format!(
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {{name: {name}, namespace: team}}\nroleRef: {{apiGroup: rbac.authorization.k8s.io, kind: {kind}, name: {role}}}\nsubjects: [{{kind: ServiceAccount, name: default, namespace: team}}]\n"
        )
    };
    ok(
        &bin,
        &lead,
        &["apply", "-f", "-"],
        Some(&binding("b1", "Role", "cm-reader")),
    )
    .await;
    let out = kubectl(
        &bin,
        &lead,
        &["apply", "-f", "-"],
        Some(&binding("b2", "ClusterRole", "edit")),
    )
    .await;
    assert_ne!(out.code, 0);
    assert!(
        out.stderr
            .contains("is attempting to grant RBAC permissions not currently held"),
        "{}",
        out.stderr
    );

    // `bind` on that one role lifts the restriction for it; `escalate` lifts it for roles.
    let extra = r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: binder, namespace: team}
rules:
- apiGroups: ["rbac.authorization.k8s.io"]
  resources: ["clusterroles"]
  resourceNames: ["edit"]
  verbs: ["bind"]
- apiGroups: ["rbac.authorization.k8s.io"]
  resources: ["roles"]
  verbs: ["escalate"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: lead-binder, namespace: team}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: binder}
subjects: [{kind: ServiceAccount, name: lead, namespace: team}]
"#;
    ok(&bin, kc, &["apply", "-f", "-"], Some(extra)).await;
    ok(
        &bin,
        &lead,
        &["apply", "-f", "-"],
        Some(&binding("b2", "ClusterRole", "edit")),
    )
    .await;
    let out = kubectl(
        &bin,
        &lead,
        &["apply", "-f", "-"],
        Some(&binding("b3", "ClusterRole", "admin")),
    )
    .await;
    assert_ne!(out.code, 0, "bind on edit does not extend to admin");
    ok(
        &bin,
        &lead,
        &["apply", "-f", "-"],
        Some(&role("secret-reader", "secrets")),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_process_api() {
    let sim = sim().await;
    sim.create(
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ztka-system"}}),
    )
    .await
    .unwrap();
    sim.create(json!({"apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": {"name": "alice-1f2e", "namespace": "ztka-system",
            "labels": {"app.kubernetes.io/managed-by": "ztka"}}}))
        .await
        .unwrap();
    sim.create(json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": "ztka:alice", "labels": {"app.kubernetes.io/managed-by": "ztka"}},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
        "subjects": [{"kind": "ServiceAccount", "name": "alice-1f2e", "namespace": "ztka-system"}]}))
        .await
        .unwrap();
    let sas = sim
        .list(
            "v1",
            "ServiceAccount",
            "ztka-system",
            "app.kubernetes.io/managed-by=ztka",
        )
        .await
        .unwrap();
    assert_eq!(sas.len(), 1);
    let crbs = sim
        .list(
            "rbac.authorization.k8s.io/v1",
            "ClusterRoleBinding",
            "",
            "app.kubernetes.io/managed-by=ztka",
        )
        .await
        .unwrap();
    assert_eq!(crbs[0]["metadata"]["name"], "ztka:alice");

    let token = sim
        .create_token("ztka-system", "alice-1f2e", 600)
        .await
        .unwrap();
    let (code, _) = sim
        .request_as(&token, "GET", "/api/v1/namespaces/default/pods", None)
        .await
        .unwrap();
    assert_eq!(code, 200, "view allows listing pods");
    let (code, body) = sim
        .request_as(&token, "GET", "/api/v1/namespaces/default/secrets", None)
        .await
        .unwrap();
    assert_eq!(code, 403);
    assert_eq!(body["reason"], "Forbidden");

    // Optimistic concurrency: a stale resourceVersion is a conflict.
    let cm = sim
        .create(json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "c", "namespace": "default"}, "data": {"a": "1"}}))
        .await
        .unwrap();
    let mut stale = cm.clone();
    stale["data"]["a"] = json!("2");
    let path = "/api/v1/namespaces/default/configmaps/c";
    let (code, _) = sim.request("PUT", path, Some(&stale)).await.unwrap();
    assert_eq!(code, 200);
    let (code, body) = sim.request("PUT", path, Some(&stale)).await.unwrap();
    assert_eq!(code, 409);
    assert_eq!(body["reason"], "Conflict");

    // The request log shows who reached the server.
    let seen = sim.requests();
    assert!(
        seen.iter()
            .any(|r| r.user == "system:serviceaccount:ztka-system:alice-1f2e"
                && r.method == "GET"
                && r.uri == "/api/v1/namespaces/default/secrets"
                && r.status == 403)
    );
    sim.clear_requests();
    assert!(sim.requests().is_empty());

    // Malformed bodies are clear 4xx answers, and the server keeps serving.
    let bad = [
        (
            "/api/v1/namespaces/default/configmaps",
            json!({"metadata": "x"}),
        ),
        (
            "/apis/apps/v1/namespaces/default/deployments",
            json!({"metadata": {"name": "d"}, "spec": {"template": "x"}}),
        ),
        ("/api/v1/namespaces/default/pods", json!([1, 2])),
        (
            "/api/v1/namespaces/default/serviceaccounts/default/token",
            json!([1]),
        ),
    ];
    for (path, body) in bad {
        let (code, _) = sim.request("POST", path, Some(&body)).await.unwrap();
        assert!((200..500).contains(&code), "{path}: {code}");
    }
    let (code, _) = sim
        .request(
            "PATCH",
            "/api/v1/namespaces/default/configmaps/c",
            Some(&json!({"metadata": 7})),
        )
        .await
        .unwrap();
    assert_eq!(code, 422);
    let (code, _) = sim.request("GET", "/version", None).await.unwrap();
    assert_eq!(code, 200);

    sim.set_latency(Duration::from_millis(200));
    let started = std::time::Instant::now();
    sim.request("GET", "/version", None).await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(200));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_forward_round_trips_bytes() {
    let sim = sim().await;
    sim.create(pod("default", "echo", json!({}))).await.unwrap();
    for bin in kubectls() {
        port_forward_round_trip(&bin, sim.kubeconfig_path(), &[], "pod/echo", 8080, 2).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_scale_expose_and_get_all() {
    let sim = sim().await;
    let kc = sim.kubeconfig_path();
    for (i, bin) in kubectls().into_iter().enumerate() {
        let name = format!("app{i}");
        let label = format!("app={name}");
        ok(
            &bin,
            kc,
            &[
                "create",
                "deployment",
                &name,
                "--image=nginx",
                "--replicas=2",
            ],
            None,
        )
        .await;
        ok(
            &bin,
            kc,
            &[
                "rollout",
                "status",
                &format!("deploy/{name}"),
                "--timeout=10s",
            ],
            None,
        )
        .await;
        ok(&bin, kc, &["scale", "deploy", &name, "--replicas=3"], None).await;
        assert_eq!(
            sim.list("v1", "Pod", "default", &label)
                .await
                .unwrap()
                .len(),
            3
        );
        ok(&bin, kc, &["scale", "deploy", &name, "--replicas=1"], None).await;
        assert_eq!(
            sim.list("v1", "Pod", "default", &label)
                .await
                .unwrap()
                .len(),
            1
        );
        ok(&bin, kc, &["expose", "deploy", &name, "--port=80"], None).await;
        let svc = sim
            .get("v1", "Service", "default", &name)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(svc["spec"]["ports"][0]["port"], 80);
        let all = ok(&bin, kc, &["get", "all"], None).await;
        assert!(
            all.contains(&format!("deployment.apps/{name}"))
                && all.contains(&format!("service/{name}")),
            "{all}"
        );
        let out = kubectl(&bin, kc, &["delete", "namespace", "default"], None).await;
        assert!(
            out.stderr.contains("this namespace may not be deleted"),
            "{}",
            out.stderr
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_resumes_from_a_resource_version_with_bookmarks() {
    let sim = sim().await;
    let cm = |name: &str| {
        json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": "default"}})
    };
    let before = sim.create(cm("before")).await.unwrap();
    let rv = before["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_owned();
    sim.create(cm("after")).await.unwrap();
    sim.delete("v1", "ConfigMap", "default", "before")
        .await
        .unwrap();
    let path = format!(
        "/api/v1/namespaces/default/configmaps?watch=true&resourceVersion={rv}&allowWatchBookmarks=true&timeoutSeconds=2"
    );
    let started = std::time::Instant::now();
    let (code, body) = sim.request("GET", &path, None).await.unwrap();
    assert_eq!(code, 200);
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "timeoutSeconds ends the watch"
    );
    let events: Vec<Value> = body
        .as_str()
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let summary: Vec<(String, String)> = events
        .iter()
        .filter(|e| e["type"] != "BOOKMARK")
        .map(|e| {
            (
                e["type"].as_str().unwrap().to_owned(),
                e["object"]["metadata"]["name"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            ("ADDED".to_owned(), "after".to_owned()),
            ("DELETED".to_owned(), "before".to_owned())
        ]
    );
    assert!(events.iter().any(|e| e["type"] == "BOOKMARK"), "{events:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cp_into_and_out_of_a_pod() {
    let sim = sim().await;
    sim.create(pod("default", "box", json!({}))).await.unwrap();
    let kc = sim.kubeconfig_path();
    let local = sim.dir().join("local");
    std::fs::create_dir_all(local.join("dir")).unwrap();
    std::fs::write(local.join("dir/a.txt"), "first file\n").unwrap();
    for (i, bin) in kubectls().into_iter().enumerate() {
        let remote = format!("box:/data{i}");
        ok(
            &bin,
            kc,
            &["cp", local.join("dir").to_str().unwrap(), &remote],
            None,
        )
        .await;
        let cat = ok(
            &bin,
            kc,
            &["exec", "box", "--", "cat", &format!("/data{i}/a.txt")],
            None,
        )
        .await;
        assert_eq!(cat, "first file\n");
        let back = local.join(format!("back{i}"));
        ok(&bin, kc, &["cp", &remote, back.to_str().unwrap()], None).await;
        assert_eq!(
            std::fs::read_to_string(back.join("a.txt")).unwrap(),
            "first file\n"
        );
    }
}
