//! The install manifest an admin applies to import a cluster: the `ztka-system` namespace,
//! the agent's service account and its least-privilege RBAC, the three ClusterRoles that
//! users' just-in-time service accounts are bound to, the bootstrap Secret and the agent
//! Deployment.
//!
//! The agent may manage service accounts and their tokens in `ztka-system`, create and delete
//! bindings, `bind` exactly the three ztka ClusterRoles, and read namespaces. It cannot read
//! Secrets (other than its own identity Secret) or bind any other role, so a compromised agent
//! cannot hand out cluster-admin.

use serde_json::{Value, json};

pub const NAMESPACE: &str = "ztka-system";
pub const AGENT_NAME: &str = "ztka-agent";
pub const AGENT_ROLE: &str = "ztka:agent";
pub const BOOTSTRAP_SECRET: &str = "ztka-agent-bootstrap";
pub const IDENTITY_SECRET: &str = "ztka-agent-identity";
pub const FULL_ACCESS_ROLE: &str = "ztka:full-access";
pub const READ_ONLY_ROLE: &str = "ztka:read-only";
pub const NAMESPACE_ADMIN_ROLE: &str = "ztka:namespace-admin";
/// Labels on everything ztka creates in a cluster.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "ztka";
/// Port of the agent's plain-HTTP health endpoints inside the pod.
pub const AGENT_HEALTH_PORT: u16 = 8081;
/// Where the Deployment mounts the bootstrap Secret.
pub const BOOTSTRAP_MOUNT: &str = "/var/run/ztka/bootstrap";

/// What goes into one cluster's manifest.
pub struct ManifestInput<'a> {
    pub cluster: &'a str,
    pub token: &'a str,
    pub server_url: &'a str,
    /// PEM of the CA the agent trusts for the server's certificate.
    pub server_ca: &'a str,
    pub image: &'a str,
}

/// The manifest as one multi-document YAML text.
pub fn render(input: &ManifestInput<'_>) -> Result<String, String> {
    serde_saphyr::to_string_multiple(&objects(input)).map_err(|e| e.to_string())
}

/// Every object of the manifest, in apply order.
pub fn objects(input: &ManifestInput<'_>) -> Vec<Value> {
    let mut out = vec![
        json!({
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": meta(NAMESPACE, None),
        }),
        json!({
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": meta(AGENT_NAME, Some(NAMESPACE)),
        }),
    ];
    out.extend(user_cluster_roles());
    out.extend(agent_rbac());
    out.push(json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": meta(BOOTSTRAP_SECRET, Some(NAMESPACE)),
        "type": "Opaque",
        "stringData": {"token": input.token, "ca.crt": input.server_ca},
    }));
    out.push(json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": meta(IDENTITY_SECRET, Some(NAMESPACE)),
        "type": "Opaque",
    }));
    out.push(deployment(input));
    out
}

fn meta(name: &str, namespace: Option<&str>) -> Value {
    let mut m = json!({
        "name": name,
        "labels": {MANAGED_BY_LABEL: MANAGED_BY},
    });
    if let Some(ns) = namespace {
        m["namespace"] = json!(ns);
    }
    m
}

fn rule(groups: &[&str], resources: &[&str], verbs: &[&str]) -> Value {
    json!({"apiGroups": groups, "resources": resources, "verbs": verbs})
}

const READ: &[&str] = &["get", "list", "watch"];

/// Discovery and health endpoints every ztka role may read.
fn discovery_rule() -> Value {
    json!({
        "nonResourceURLs": ["/api", "/api/*", "/apis", "/apis/*", "/version", "/healthz",
                            "/livez", "/readyz", "/openapi", "/openapi/*"],
        "verbs": ["get"],
    })
}

/// The roles users' service accounts are bound to. Read-only lists what it allows instead
/// of denying (RBAC has no deny): everything readable except Secrets, and none of the
/// `exec`, `attach`, `portforward` or `proxy` subresources.
pub fn user_cluster_roles() -> Vec<Value> {
    let read_only_rules = vec![
        rule(
            &[""],
            &[
                "bindings",
                "componentstatuses",
                "configmaps",
                "endpoints",
                "events",
                "limitranges",
                "namespaces",
                "namespaces/status",
                "nodes",
                "nodes/status",
                "persistentvolumeclaims",
                "persistentvolumeclaims/status",
                "persistentvolumes",
                "pods",
                "pods/log",
                "pods/status",
                "replicationcontrollers",
                "replicationcontrollers/scale",
                "replicationcontrollers/status",
                "resourcequotas",
                "resourcequotas/status",
                "serviceaccounts",
                "services",
                "services/status",
            ],
            READ,
        ),
        rule(
            &[
                "admissionregistration.k8s.io",
                "apiextensions.k8s.io",
                "apiregistration.k8s.io",
                "apps",
                "autoscaling",
                "batch",
                "certificates.k8s.io",
                "coordination.k8s.io",
                "discovery.k8s.io",
                "events.k8s.io",
                "flowcontrol.apiserver.k8s.io",
                "metrics.k8s.io",
                "networking.k8s.io",
                "node.k8s.io",
                "policy",
                "rbac.authorization.k8s.io",
                "scheduling.k8s.io",
                "storage.k8s.io",
            ],
            &["*"],
            READ,
        ),
        discovery_rule(),
    ];
    vec![
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": meta(FULL_ACCESS_ROLE, None),
            "rules": [
                rule(&["*"], &["*"], &["*"]),
                {"nonResourceURLs": ["*"], "verbs": ["*"]},
            ],
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": meta(READ_ONLY_ROLE, None),
            "rules": read_only_rules,
        }),
        // Bound only through RoleBindings, so it reaches namespaced resources of those
        // namespaces and nothing cluster-wide.
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": meta(NAMESPACE_ADMIN_ROLE, None),
            "rules": [rule(&["*"], &["*"], &["*"])],
        }),
    ]
}

/// The agent's own permissions: a ClusterRole for bindings and namespaces, and a Role in
/// `ztka-system` for service accounts, their tokens and its identity Secret.
pub fn agent_rbac() -> Vec<Value> {
    let rbac = "rbac.authorization.k8s.io";
    let binding_verbs = &["get", "list", "create", "delete"];
    let subject = json!([{"kind": "ServiceAccount", "name": AGENT_NAME, "namespace": NAMESPACE}]);
    vec![
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": meta(AGENT_ROLE, None),
            "rules": [
                rule(&[rbac], &["clusterrolebindings", "rolebindings"], binding_verbs),
                {
                    "apiGroups": [rbac],
                    "resources": ["clusterroles"],
                    "verbs": ["bind"],
                    "resourceNames": [FULL_ACCESS_ROLE, READ_ONLY_ROLE, NAMESPACE_ADMIN_ROLE],
                },
                rule(&[""], &["namespaces"], &["get", "list"]),
            ],
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": meta(AGENT_ROLE, None),
            "roleRef": {"apiGroup": rbac, "kind": "ClusterRole", "name": AGENT_ROLE},
            "subjects": subject,
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": meta(AGENT_ROLE, Some(NAMESPACE)),
            "rules": [
                rule(&[""], &["serviceaccounts"], &["get", "list", "create", "update", "patch", "delete"]),
                rule(&[""], &["serviceaccounts/token"], &["create"]),
                {
                    "apiGroups": [""],
                    "resources": ["secrets"],
                    "verbs": ["get", "update", "patch"],
                    "resourceNames": [IDENTITY_SECRET],
                },
            ],
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": meta(AGENT_ROLE, Some(NAMESPACE)),
            "roleRef": {"apiGroup": rbac, "kind": "Role", "name": AGENT_ROLE},
            "subjects": subject,
        }),
    ]
}

fn deployment(input: &ManifestInput<'_>) -> Value {
    let labels = json!({"app.kubernetes.io/name": AGENT_NAME, MANAGED_BY_LABEL: MANAGED_BY});
    let probe = |path: &str, period: u32| {
        json!({
            "httpGet": {"path": path, "port": AGENT_HEALTH_PORT},
            "periodSeconds": period,
            "timeoutSeconds": 2,
            "failureThreshold": 3,
        })
    };
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta(AGENT_NAME, Some(NAMESPACE)),
        "spec": {
            "replicas": 1,
            // One agent per cluster: a new pod's tunnel replaces the old one anyway.
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": {"app.kubernetes.io/name": AGENT_NAME}},
            "template": {
                "metadata": {
                    "labels": labels,
                    "annotations": {"ztka.dev/cluster": input.cluster},
                },
                "spec": {
                    "serviceAccountName": AGENT_NAME,
                    "automountServiceAccountToken": true,
                    "securityContext": {
                        "runAsNonRoot": true,
                        "runAsUser": 65532,
                        "runAsGroup": 65532,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [{
                        "name": "agent",
                        "image": input.image,
                        "imagePullPolicy": "IfNotPresent",
                        "args": ["agent", format!("--health-listen=0.0.0.0:{AGENT_HEALTH_PORT}")],
                        "env": [
                            {"name": "ZTKA_SERVER", "value": input.server_url},
                            {"name": "ZTKA_TOKEN_FILE", "value": format!("{BOOTSTRAP_MOUNT}/token")},
                            {"name": "ZTKA_SERVER_CA", "value": format!("{BOOTSTRAP_MOUNT}/ca.crt")},
                            {"name": "ZTKA_LOG_FORMAT", "value": "json"},
                        ],
                        "ports": [{"name": "health", "containerPort": AGENT_HEALTH_PORT}],
                        "livenessProbe": probe("/healthz", 20),
                        "readinessProbe": probe("/readyz", 10),
                        "resources": {
                            "requests": {"cpu": "50m", "memory": "64Mi"},
                            "limits": {"memory": "256Mi"},
                        },
                        "securityContext": {
                            "allowPrivilegeEscalation": false,
                            "readOnlyRootFilesystem": true,
                            "capabilities": {"drop": ["ALL"]},
                        },
                        "volumeMounts": [{"name": "bootstrap", "mountPath": BOOTSTRAP_MOUNT, "readOnly": true}],
                    }],
                    "volumes": [{"name": "bootstrap", "secret": {"secretName": BOOTSTRAP_SECRET}}],
                },
            },
        },
    })
}

/// The one-line install command shown next to the manifest. It fetches the manifest by its
/// token and pins the server's public key, so it is safe before the CA is trusted.
pub fn install_command(server_url: &str, token: &str, server_key_pin: &str) -> String {
    format!(
        "curl -fsS -k --pinnedpubkey 'sha256//{server_key_pin}' {server_url}/agent/v1/manifests/{token} | kubectl apply -f -"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input() -> ManifestInput<'static> {
        ManifestInput {
            cluster: "prod",
            token: "ztkab_x_y",
            server_url: "https://ztka.example.com",
            server_ca: "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
            image: "example/ztka:1",
        }
    }

    #[test]
    fn renders_parseable_yaml_with_every_object() {
        let text = render(&input()).unwrap();
        let docs: Vec<Value> = serde_saphyr::from_multiple(&text).unwrap();
        let kinds: Vec<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
        assert_eq!(
            kinds,
            [
                "Namespace",
                "ServiceAccount",
                "ClusterRole",
                "ClusterRole",
                "ClusterRole",
                "ClusterRole",
                "ClusterRoleBinding",
                "Role",
                "RoleBinding",
                "Secret",
                "Secret",
                "Deployment"
            ]
        );
        assert_eq!(docs, objects(&input()));
    }

    #[test]
    fn the_agent_runs_unprivileged_with_requests_probes_and_its_token() {
        let docs = objects(&input());
        let deployment = docs.iter().find(|d| d["kind"] == "Deployment").unwrap();
        let pod = &deployment["spec"]["template"]["spec"];
        assert_eq!(pod["serviceAccountName"], "ztka-agent");
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
        assert_eq!(pod["securityContext"]["runAsUser"], 65532);
        let agent = &pod["containers"][0];
        assert_eq!(agent["image"], "example/ztka:1");
        assert_eq!(agent["args"][0], "agent");
        let c = &agent["securityContext"];
        assert_eq!(c["allowPrivilegeEscalation"], false);
        assert_eq!(c["readOnlyRootFilesystem"], true);
        assert_eq!(c["capabilities"]["drop"], json!(["ALL"]));
        assert!(agent["resources"]["requests"]["cpu"].is_string());
        assert!(agent["resources"]["requests"]["memory"].is_string());
        assert!(agent["resources"]["limits"]["memory"].is_string());
        for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
            assert_eq!(agent[probe]["httpGet"]["path"], path);
            assert_eq!(agent[probe]["httpGet"]["port"], AGENT_HEALTH_PORT);
        }
        assert!(
            agent["args"]
                .as_array()
                .unwrap()
                .iter()
                .any(|a| a == &json!(format!("--health-listen=0.0.0.0:{AGENT_HEALTH_PORT}")))
        );
        // The bootstrap Secret carries the token and the CA the agent mounts.
        let secret = docs
            .iter()
            .find(|d| d["kind"] == "Secret" && d["metadata"]["name"] == BOOTSTRAP_SECRET)
            .unwrap();
        assert_eq!(secret["stringData"]["token"], "ztkab_x_y");
        assert!(
            secret["stringData"]["ca.crt"]
                .as_str()
                .unwrap()
                .contains("BEGIN CERTIFICATE")
        );
        let env = agent["env"].as_array().unwrap();
        let var = |name: &str| env.iter().find(|e| e["name"] == name).unwrap()["value"].clone();
        assert_eq!(var("ZTKA_SERVER"), "https://ztka.example.com");
        assert_eq!(var("ZTKA_TOKEN_FILE"), format!("{BOOTSTRAP_MOUNT}/token"));
    }

    #[test]
    fn read_only_never_reaches_secrets_or_streams() {
        let roles = user_cluster_roles();
        let text = serde_json::to_string(&roles[1]).unwrap();
        for forbidden in ["secrets", "exec", "attach", "portforward", "proxy"] {
            assert!(!text.contains(forbidden), "read-only mentions {forbidden}");
        }
    }

    #[test]
    fn agent_cannot_bind_other_roles() {
        let rbac = agent_rbac();
        let bind = rbac[0]["rules"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["verbs"] == json!(["bind"]))
            .unwrap();
        assert_eq!(
            bind["resourceNames"],
            json!([FULL_ACCESS_ROLE, READ_ONLY_ROLE, NAMESPACE_ADMIN_ROLE])
        );
        assert!(!serde_json::to_string(&rbac).unwrap().contains("escalate"));
    }
}
