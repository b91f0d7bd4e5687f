//! The resource types the simulator serves, and their discovery documents.

use serde_json::{Value, json};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResourceType {
    /// API group; "" for the core group.
    pub group: &'static str,
    pub version: &'static str,
    /// Plural resource name, as in URLs and RBAC rules.
    pub name: &'static str,
    pub singular: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
}

impl ResourceType {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_owned()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `pods`, or `deployments.apps`: how the real server names a resource in messages.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.name.to_owned()
        } else {
            format!("{}.{}", self.name, self.group)
        }
    }
}

const fn rt(
    group: &'static str,
    version: &'static str,
    name: &'static str,
    singular: &'static str,
    kind: &'static str,
    namespaced: bool,
    short_names: &'static [&'static str],
) -> ResourceType {
    ResourceType {
        group,
        version,
        name,
        singular,
        kind,
        namespaced,
        short_names,
    }
}

pub const RESOURCES: &[ResourceType] = &[
    rt(
        "",
        "v1",
        "namespaces",
        "namespace",
        "Namespace",
        false,
        &["ns"],
    ),
    rt("", "v1", "pods", "pod", "Pod", true, &["po"]),
    rt("", "v1", "services", "service", "Service", true, &["svc"]),
    rt(
        "",
        "v1",
        "configmaps",
        "configmap",
        "ConfigMap",
        true,
        &["cm"],
    ),
    rt("", "v1", "secrets", "secret", "Secret", true, &[]),
    rt(
        "",
        "v1",
        "serviceaccounts",
        "serviceaccount",
        "ServiceAccount",
        true,
        &["sa"],
    ),
    rt("", "v1", "events", "event", "Event", true, &["ev"]),
    rt(
        "apps",
        "v1",
        "deployments",
        "deployment",
        "Deployment",
        true,
        &["deploy"],
    ),
    rt(
        "apps",
        "v1",
        "replicasets",
        "replicaset",
        "ReplicaSet",
        true,
        &["rs"],
    ),
    rt(
        "rbac.authorization.k8s.io",
        "v1",
        "roles",
        "role",
        "Role",
        true,
        &[],
    ),
    rt(
        "rbac.authorization.k8s.io",
        "v1",
        "rolebindings",
        "rolebinding",
        "RoleBinding",
        true,
        &[],
    ),
    rt(
        "rbac.authorization.k8s.io",
        "v1",
        "clusterroles",
        "clusterrole",
        "ClusterRole",
        false,
        &[],
    ),
    rt(
        "rbac.authorization.k8s.io",
        "v1",
        "clusterrolebindings",
        "clusterrolebinding",
        "ClusterRoleBinding",
        false,
        &[],
    ),
];

/// Groups with create-only review resources, served for discovery.
/// (resource, kind, namespaced)
type Review = (&'static str, &'static str, bool);

const REVIEW_GROUPS: &[(&str, &[Review])] = &[
    (
        "authorization.k8s.io",
        &[
            ("selfsubjectaccessreviews", "SelfSubjectAccessReview", false),
            ("selfsubjectrulesreviews", "SelfSubjectRulesReview", false),
        ],
    ),
    (
        "authentication.k8s.io",
        &[("selfsubjectreviews", "SelfSubjectReview", false)],
    ),
];

pub fn lookup(group: &str, version: &str, name: &str) -> Option<&'static ResourceType> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.name == name)
}

pub fn by_kind(api_version: &str, kind: &str) -> Option<&'static ResourceType> {
    RESOURCES
        .iter()
        .find(|r| r.api_version() == api_version && r.kind == kind)
}

const VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

pub fn groups() -> Vec<&'static str> {
    let mut out: Vec<&str> = Vec::new();
    for r in RESOURCES {
        if !r.group.is_empty() && !out.contains(&r.group) {
            out.push(r.group);
        }
    }
    for (g, _) in REVIEW_GROUPS {
        out.push(g);
    }
    out
}

pub fn api_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    })
}

pub fn api_group_list() -> Value {
    let groups: Vec<Value> = groups()
        .into_iter()
        .map(|g| {
            let gv = json!({"groupVersion": format!("{g}/v1"), "version": "v1"});
            json!({"name": g, "versions": [gv.clone()], "preferredVersion": gv})
        })
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

pub fn api_group(group: &str) -> Option<Value> {
    if !groups().contains(&group) {
        return None;
    }
    let gv = json!({"groupVersion": format!("{group}/v1"), "version": "v1"});
    Some(json!({
        "kind": "APIGroup", "apiVersion": "v1", "name": group,
        "versions": [gv.clone()], "preferredVersion": gv,
    }))
}

pub fn resource_list(group: &str, version: &str) -> Option<Value> {
    let gv = if group.is_empty() {
        version.to_owned()
    } else {
        format!("{group}/{version}")
    };
    if version != "v1" {
        return None;
    }
    let mut resources = Vec::new();
    for r in RESOURCES.iter().filter(|r| r.group == group) {
        let mut doc = json!({
            "name": r.name, "singularName": r.singular, "namespaced": r.namespaced,
            "kind": r.kind, "verbs": VERBS, "shortNames": r.short_names,
        });
        if matches!(r.name, "pods" | "services" | "deployments" | "replicasets") {
            doc["categories"] = json!(["all"]);
        }
        resources.push(doc);
        let subs: &[(&str, &str, &[&str])] = match r.name {
            "pods" => &[
                ("log", "Pod", &["get"]),
                ("exec", "PodExecOptions", &["create", "get"]),
                ("attach", "PodAttachOptions", &["create", "get"]),
                ("portforward", "PodPortForwardOptions", &["create", "get"]),
                ("status", "Pod", &["get", "patch", "update"]),
            ],
            "serviceaccounts" => &[("token", "TokenRequest", &["create"])],
            "deployments" | "replicasets" => &[
                ("status", r.kind, &["get", "patch", "update"]),
                ("scale", "Scale", &["get", "patch", "update"]),
            ],
            _ => &[],
        };
        for (sub, kind, verbs) in subs {
            let mut v = json!({
                "name": format!("{}/{}", r.name, sub), "singularName": "",
                "namespaced": r.namespaced, "kind": kind, "verbs": verbs,
            });
            if *sub == "token" {
                v["group"] = json!("authentication.k8s.io");
                v["version"] = json!("v1");
            }
            if *sub == "scale" {
                v["group"] = json!("autoscaling");
                v["version"] = json!("v1");
            }
            resources.push(v);
        }
    }
    for (g, list) in REVIEW_GROUPS {
        if *g == group {
            for (name, kind, namespaced) in *list {
                resources.push(json!({
                    "name": name, "singularName": "", "namespaced": namespaced,
                    "kind": kind, "verbs": ["create"],
                }));
            }
        }
    }
    if resources.is_empty() {
        return None;
    }
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}),
    )
}

fn gv_path(group: &str) -> String {
    if group.is_empty() {
        "api/v1".to_owned()
    } else {
        format!("apis/{group}/v1")
    }
}

/// `/openapi/v3`: one entry per group-version. The documents behind them only describe the
/// PATCH operations and their `fieldValidation` parameter, which is what kubectl reads to
/// choose server-side validation for `apply` and `create`.
pub fn openapi_v3_root() -> Value {
    let mut paths = serde_json::Map::new();
    for g in std::iter::once("").chain(groups()) {
        let p = gv_path(g);
        paths.insert(
            p.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash=kubesim1")}),
        );
    }
    json!({"paths": paths})
}

pub fn openapi_v3_gv(path: &str) -> Option<Value> {
    let group = if path == "api/v1" {
        ""
    } else {
        path.strip_prefix("apis/")?.strip_suffix("/v1")?
    };
    if !group.is_empty() && !groups().contains(&group) {
        return None;
    }
    let paths = patch_paths(
        RESOURCES.iter().filter(|r| r.group == group),
        |name, ty| json!({"name": name, "in": "query", "schema": {"type": ty}}),
    );
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.33.0-kubesim"},
        "paths": paths,
        "components": {"schemas": {}},
    }))
}

/// The URL of a resource's single object, where its PATCH operation is described.
fn object_path(r: &ResourceType) -> String {
    let gv = gv_path(r.group);
    if r.namespaced {
        format!("/{gv}/namespaces/{{namespace}}/{}/{{name}}", r.name)
    } else {
        format!("/{gv}/{}/{{name}}", r.name)
    }
}

/// The PATCH parameters the documents list, with their types: kubectl reads `dryRun` from
/// them (before 1.26, `--dry-run=server` refuses kinds whose PATCH lacks it) and
/// `fieldValidation`.
const PATCH_PARAMETERS: [(&str, &str); 4] = [
    ("dryRun", "string"),
    ("fieldManager", "string"),
    ("fieldValidation", "string"),
    ("force", "boolean"),
];

/// One PATCH operation per resource, its parameters written by `parameter(name, type)`.
fn patch_paths<'a>(
    resources: impl Iterator<Item = &'a ResourceType>,
    parameter: impl Fn(&str, &str) -> Value,
) -> serde_json::Map<String, Value> {
    let mut paths = serde_json::Map::new();
    for r in resources {
        let parameters: Vec<Value> = PATCH_PARAMETERS
            .iter()
            .map(|(name, ty)| parameter(name, ty))
            .collect();
        paths.insert(
            object_path(r),
            json!({"patch": {
                "operationId": format!("patch{}", r.kind),
                "x-kubernetes-group-version-kind": {"group": r.group, "version": r.version, "kind": r.kind},
                "x-kubernetes-action": "patch",
                "parameters": parameters,
                "responses": {"200": {"description": "OK"}},
            }}),
        );
    }
    paths
}

/// `/openapi/v2` as JSON: the same PATCH operations as the v3 documents.
pub fn openapi_v2_json() -> Value {
    let paths = patch_paths(
        RESOURCES.iter(),
        |name, ty| json!({"name": name, "in": "query", "type": ty}),
    );
    json!({"swagger": "2.0",
        "info": {"title": "Kubernetes", "version": "v1.33.0-kubesim"}, "paths": paths})
}

/// The same document (`openapi_v2_json`) in gnostic's protobuf form, which older kubectl
/// (before OpenAPI v3) downloads to validate manifests (it holds no definitions, so every
/// kind is accepted as it is) and to see which kinds take `dryRun`. Field numbers from
/// gnostic's `OpenAPIv2.proto`: Document { swagger = 1, info = 2, paths = 8 }, Info
/// { title = 1, version = 2 }, Paths { path = 2 }, NamedPathItem { name = 1, value = 2 },
/// PathItem { patch = 8 }, Operation { operation_id = 5, parameters = 8,
/// vendor_extension = 13 }, ParametersItem { parameter = 1 }, Parameter
/// { non_body_parameter = 2 }, NonBodyParameter { query_parameter_sub_schema = 3 },
/// QueryParameterSubSchema { in = 2, name = 4, type = 6 }, NamedAny { name = 1,
/// value = 2 }, Any { yaml = 2 }.
pub fn openapi_v2_protobuf() -> Vec<u8> {
    /// A length-delimited field.
    fn ld(num: u8, data: &[u8]) -> Vec<u8> {
        let mut v = vec![(num << 3) | 2];
        let mut len = data.len();
        loop {
            let b = (len & 0x7f) as u8;
            len >>= 7;
            if len == 0 {
                v.push(b);
                break;
            }
            v.push(b | 0x80);
        }
        v.extend_from_slice(data);
        v
    }
    let text = |v: &Value, key: &str| v[key].as_str().unwrap_or_default().as_bytes().to_vec();
    let doc = openapi_v2_json();
    let info = [
        ld(1, &text(&doc["info"], "title")),
        ld(2, &text(&doc["info"], "version")),
    ]
    .concat();
    let mut paths = Vec::new();
    for (url, item) in doc["paths"].as_object().into_iter().flatten() {
        let patch = &item["patch"];
        let mut operation = ld(5, &text(patch, "operationId"));
        for p in patch["parameters"].as_array().into_iter().flatten() {
            let query = [
                ld(2, &text(p, "in")),
                ld(4, &text(p, "name")),
                ld(6, &text(p, "type")),
            ]
            .concat();
            operation.extend(ld(8, &ld(1, &ld(2, &ld(3, &query)))));
        }
        let gvk = &patch["x-kubernetes-group-version-kind"];
        let yaml = format!(
            "group: {}\nkind: {}\nversion: {}\n",
            gvk["group"], gvk["kind"], gvk["version"]
        );
        let extension = [
            ld(1, b"x-kubernetes-group-version-kind"),
            ld(2, &ld(2, yaml.as_bytes())),
        ]
        .concat();
        operation.extend(ld(13, &extension));
        paths.extend(ld(
            2,
            &[ld(1, url.as_bytes()), ld(2, &ld(8, &operation))].concat(),
        ));
    }
    [ld(1, &text(&doc, "swagger")), ld(2, &info), ld(8, &paths)].concat()
}
