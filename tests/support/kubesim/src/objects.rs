//! Object life cycle: create, update, delete with garbage collection, and the built-in
//! behaviours that stand in for controllers (running pods, deployments, namespaces).

use rand::Rng;
use serde_json::{Value, json};

use crate::resources::{self, ResourceType};
use crate::store::{Key, Store, now_rfc3339, status};

#[derive(Debug)]
pub struct ApiError {
    pub code: u16,
    pub body: Value,
}

impl ApiError {
    pub fn new(code: u16, reason: &str, message: &str) -> Self {
        ApiError {
            code,
            body: status(code, reason, message, None),
        }
    }

    pub fn bad_request(message: &str) -> Self {
        Self::new(400, "BadRequest", message)
    }

    fn about(code: u16, reason: &str, message: String, rt: &ResourceType, name: &str) -> Self {
        let mut details = json!({"name": name, "kind": rt.name});
        if !rt.group.is_empty() {
            details["group"] = json!(rt.group);
        }
        ApiError {
            code,
            body: status(code, reason, &message, Some(details)),
        }
    }

    pub fn not_found(rt: &ResourceType, name: &str) -> Self {
        Self::about(
            404,
            "NotFound",
            format!("{} {name:?} not found", rt.qualified()),
            rt,
            name,
        )
    }

    pub fn already_exists(rt: &ResourceType, name: &str) -> Self {
        Self::about(
            409,
            "AlreadyExists",
            format!("{} {name:?} already exists", rt.qualified()),
            rt,
            name,
        )
    }

    pub fn conflict(rt: &ResourceType, name: &str) -> Self {
        Self::about(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} {name:?}: the object has been modified; please apply your changes to the latest version and try again",
                rt.qualified()
            ),
            rt,
            name,
        )
    }

    pub fn invalid(rt: &ResourceType, name: &str, why: &str) -> Self {
        Self::about(
            422,
            "Invalid",
            format!("{} {name:?} is invalid: {why}", rt.kind),
            rt,
            name,
        )
    }
}

fn rand_suffix(n: usize) -> String {
    const CHARS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::rng();
    (0..n)
        .map(|_| CHARS[rng.random_range(0..CHARS.len())] as char)
        .collect()
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.chars().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.' || c == ':'
        })
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
}

pub fn rt_of(resource_key: &str) -> Option<&'static ResourceType> {
    let (group, name) = resource_key.split_once('/')?;
    resources::RESOURCES
        .iter()
        .find(|r| r.group == group && r.name == name)
}

/// Fields the simulator writes into must be objects when present; anything else is a 422,
/// never a panic.
fn check_shape(rt: &ResourceType, obj: &Value) -> Result<(), ApiError> {
    const OBJECTS: &[&str] = &[
        "/metadata",
        "/metadata/labels",
        "/metadata/annotations",
        "/spec",
        "/status",
        "/data",
        "/stringData",
        "/spec/selector",
        "/spec/template",
        "/spec/template/metadata",
        "/spec/template/metadata/labels",
        "/spec/template/spec",
    ];
    for path in OBJECTS {
        if let Some(v) = obj.pointer(path)
            && !v.is_object()
            && !v.is_null()
        {
            let name = obj
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or("");
            let field = path.trim_start_matches('/').replace('/', ".");
            return Err(ApiError::invalid(
                rt,
                name,
                &format!("{field}: Invalid value: must be an object"),
            ));
        }
    }
    Ok(())
}

/// Creates an object in the store and publishes its ADDED event.
pub fn create(
    store: &mut Store,
    rt: &'static ResourceType,
    namespace: &str,
    mut obj: Value,
) -> Result<Value, ApiError> {
    if !obj.is_object() {
        return Err(ApiError::bad_request("the body must be a JSON object"));
    }
    check_shape(rt, &obj)?;
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj["metadata"] = json!({});
    }
    let body_ns = obj
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    if rt.namespaced && !body_ns.is_empty() && body_ns != namespace {
        return Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        ));
    }
    let mut name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    if name.is_empty() {
        if let Some(prefix) = obj
            .pointer("/metadata/generateName")
            .and_then(Value::as_str)
        {
            name = format!("{prefix}{}", rand_suffix(5));
        } else {
            return Err(ApiError::invalid(
                rt,
                "",
                "metadata.name: Required value: name or generateName is required",
            ));
        }
    }
    if !valid_name(&name) {
        return Err(ApiError::invalid(
            rt,
            &name,
            "metadata.name: Invalid value: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.'",
        ));
    }
    if rt.namespaced {
        let ns_key = Key {
            resource: "/namespaces".into(),
            namespace: String::new(),
            name: namespace.to_owned(),
        };
        if !store.objects.contains_key(&ns_key) {
            let ns_rt = resources::lookup("", "v1", "namespaces");
            return Err(match ns_rt {
                Some(ns_rt) => ApiError::not_found(ns_rt, namespace),
                None => ApiError::bad_request("no namespaces"),
            });
        }
    }
    let key = Key::new(rt, namespace, &name);
    if store.objects.contains_key(&key) {
        return Err(ApiError::already_exists(rt, &name));
    }
    let rv = store.next_rv();
    obj["apiVersion"] = json!(rt.api_version());
    obj["kind"] = json!(rt.kind);
    let meta = &mut obj["metadata"];
    meta["name"] = json!(name);
    if rt.namespaced {
        meta["namespace"] = json!(namespace);
    } else if let Some(m) = meta.as_object_mut() {
        m.remove("namespace");
    }
    meta["uid"] = json!(uuid::Uuid::new_v4().to_string());
    meta["resourceVersion"] = json!(rv.to_string());
    meta["creationTimestamp"] = json!(now_rfc3339());
    if let Some(m) = meta.as_object_mut() {
        m.remove("deletionTimestamp");
    }
    if obj.get("spec").is_some() {
        obj["metadata"]["generation"] = json!(1);
    }
    defaults(rt, &mut obj);
    store.objects.insert(key.clone(), obj.clone());
    store.publish("ADDED", &key, obj.clone());
    after_create(store, rt, namespace, &obj);
    Ok(obj)
}

fn defaults(rt: &ResourceType, obj: &mut Value) {
    match rt.name {
        "namespaces" => {
            obj["spec"] = json!({"finalizers": ["kubernetes"]});
            obj["status"] = json!({"phase": "Active"});
            let name = obj["metadata"]["name"].clone();
            if let Some(labels) = obj["metadata"]
                .get_mut("labels")
                .and_then(Value::as_object_mut)
            {
                labels.insert("kubernetes.io/metadata.name".into(), name);
            } else {
                obj["metadata"]["labels"] = json!({"kubernetes.io/metadata.name": name});
            }
        }
        "pods" => {
            let containers: Vec<Value> = obj
                .pointer("/spec/containers")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let now = now_rfc3339();
            let statuses: Vec<Value> = containers
                .iter()
                .map(|c| {
                    json!({"name": c.get("name"), "image": c.get("image"), "imageID": "",
                        "ready": true, "started": true, "restartCount": 0,
                        "containerID": format!("containerd://{}", crate::random_token()),
                        "state": {"running": {"startedAt": now}}})
                })
                .collect();
            if obj.pointer("/spec/nodeName").is_none() {
                obj["spec"]["nodeName"] = json!("kubesim-node");
            }
            let mut rng = rand::rng();
            obj["status"] = json!({
                "phase": "Running", "hostIP": "10.0.0.1",
                "podIP": format!("10.244.{}.{}", rng.random_range(0..255), rng.random_range(1..255)),
                "startTime": now, "qosClass": "BestEffort",
                "conditions": [
                    {"type": "Initialized", "status": "True", "lastTransitionTime": now},
                    {"type": "Ready", "status": "True", "lastTransitionTime": now},
                    {"type": "ContainersReady", "status": "True", "lastTransitionTime": now},
                    {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
                ],
                "containerStatuses": statuses,
            });
        }
        "services" => {
            if obj.pointer("/spec/type").is_none() {
                obj["spec"]["type"] = json!("ClusterIP");
            }
            if obj.pointer("/spec/clusterIP").is_none() {
                let mut rng = rand::rng();
                let ip = format!(
                    "10.96.{}.{}",
                    rng.random_range(0..255),
                    rng.random_range(1..255)
                );
                obj["spec"]["clusterIP"] = json!(ip);
                obj["spec"]["clusterIPs"] = json!([ip]);
            }
        }
        "secrets" => {
            if let Some(string_data) = obj.get("stringData").and_then(Value::as_object).cloned() {
                use base64::Engine;
                for (k, v) in string_data {
                    let s = v.as_str().unwrap_or_default();
                    obj["data"][k] =
                        json!(base64::engine::general_purpose::STANDARD.encode(s.as_bytes()));
                }
                if let Some(m) = obj.as_object_mut() {
                    m.remove("stringData");
                }
            }
            if obj.get("type").is_none() {
                obj["type"] = json!("Opaque");
            }
        }
        "deployments" | "replicasets" => {
            let replicas = obj
                .pointer("/spec/replicas")
                .and_then(Value::as_u64)
                .unwrap_or(1);
            obj["spec"]["replicas"] = json!(replicas);
            obj["status"] = json!({"observedGeneration": 1, "replicas": replicas,
                "readyReplicas": replicas, "availableReplicas": replicas,
                "updatedReplicas": replicas, "fullyLabeledReplicas": replicas});
        }
        _ => {}
    }
}

fn owner_ref(owner: &Value) -> Value {
    json!([{
        "apiVersion": owner["apiVersion"], "kind": owner["kind"],
        "name": owner["metadata"]["name"], "uid": owner["metadata"]["uid"],
        "controller": true, "blockOwnerDeletion": true,
    }])
}

/// What controllers would do next: default service accounts, replica sets and pods.
fn after_create(store: &mut Store, rt: &ResourceType, namespace: &str, obj: &Value) {
    let name = obj["metadata"]["name"].as_str().unwrap_or("").to_owned();
    let lookup = |n: &str| resources::lookup(if n == "replicasets" { "apps" } else { "" }, "v1", n);
    match rt.name {
        "namespaces" => {
            if let Some(sa) = lookup("serviceaccounts") {
                let _ = create(store, sa, &name, json!({"metadata": {"name": "default"}}));
            }
        }
        "deployments" => new_replica_set(store, namespace, obj),
        "pods" => {
            let Some(ev_rt) = lookup("events") else {
                return;
            };
            let image = obj
                .pointer("/spec/containers/0/image")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned();
            let container = obj
                .pointer("/spec/containers/0/name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned();
            let now = now_rfc3339();
            let steps = [
                (
                    "Scheduled",
                    "default-scheduler",
                    format!("Successfully assigned {namespace}/{name} to kubesim-node"),
                ),
                (
                    "Pulled",
                    "kubelet",
                    format!("Container image {image:?} already present on machine"),
                ),
                (
                    "Created",
                    "kubelet",
                    format!("Created container: {container}"),
                ),
                (
                    "Started",
                    "kubelet",
                    format!("Started container {container}"),
                ),
            ];
            for (reason, component, message) in steps {
                let ev = json!({
                    "metadata": {"name": format!("{name}.{:016x}", store.rv + 1)},
                    "involvedObject": {"apiVersion": "v1", "kind": "Pod", "name": name,
                        "namespace": namespace, "uid": obj["metadata"]["uid"]},
                    "reason": reason, "message": message, "type": "Normal", "count": 1,
                    "source": {"component": component}, "reportingComponent": component,
                    "firstTimestamp": now, "lastTimestamp": now,
                });
                let _ = create(store, ev_rt, namespace, ev);
            }
        }
        "replicasets" => {
            let replicas = obj["spec"]["replicas"].as_u64().unwrap_or(1);
            let template = obj.pointer("/spec/template").cloned().unwrap_or(json!({}));
            if let Some(pod_rt) = lookup("pods") {
                for _ in 0..replicas {
                    let mut pod = json!({
                        "metadata": {"name": format!("{name}-{}", rand_suffix(5)),
                            "labels": template.pointer("/metadata/labels").cloned().unwrap_or(json!({})),
                            "ownerReferences": owner_ref(obj)},
                        "spec": template.get("spec").cloned().unwrap_or(json!({"containers": []})),
                    });
                    if let Some(a) = template.pointer("/metadata/annotations") {
                        pod["metadata"]["annotations"] = a.clone();
                    }
                    let _ = create(store, pod_rt, namespace, pod);
                }
            }
        }
        _ => {}
    }
}

/// The deployment controller's ReplicaSet for the deployment's current template.
fn new_replica_set(store: &mut Store, namespace: &str, obj: &Value) {
    let name = obj["metadata"]["name"].as_str().unwrap_or("").to_owned();
    let template = obj.pointer("/spec/template").cloned().unwrap_or(json!({}));
    let hash = rand_suffix(10);
    let mut labels = template
        .pointer("/metadata/labels")
        .cloned()
        .unwrap_or(json!({}));
    labels["pod-template-hash"] = json!(hash);
    let mut rs_template = template;
    rs_template["metadata"]["labels"] = labels.clone();
    let rs = json!({
        "metadata": {"name": format!("{name}-{hash}"), "labels": labels,
            "ownerReferences": owner_ref(obj)},
        "spec": {"replicas": obj["spec"]["replicas"], "template": rs_template,
            "selector": {"matchLabels": labels}},
    });
    if let Some(rs_rt) = resources::lookup("apps", "v1", "replicasets") {
        let _ = create(store, rs_rt, namespace, rs);
    }
}

/// Replaces an object, checking the resourceVersion the client sent.
pub fn update(
    store: &mut Store,
    rt: &'static ResourceType,
    namespace: &str,
    name: &str,
    mut obj: Value,
    status_only: bool,
) -> Result<Value, ApiError> {
    let key = Key::new(rt, namespace, name);
    let Some(current) = store.objects.get(&key).cloned() else {
        return Err(ApiError::not_found(rt, name));
    };
    if !obj.is_object() {
        return Err(ApiError::bad_request("the body must be a JSON object"));
    }
    check_shape(rt, &obj)?;
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj["metadata"] = json!({});
    }
    let sent_rv = obj
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .unwrap_or("");
    if !sent_rv.is_empty() && Some(sent_rv) != current["metadata"]["resourceVersion"].as_str() {
        return Err(ApiError::conflict(rt, name));
    }
    let body_name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or(name);
    if body_name != name {
        return Err(ApiError::bad_request(
            "the name of the object does not match the name on the URL",
        ));
    }
    if status_only {
        let mut next = current.clone();
        next["status"] = obj.get("status").cloned().unwrap_or(Value::Null);
        obj = next;
    } else if rt.name != "namespaces" && rt.name != "pods" {
        // The status of most kinds is written by controllers, not by updates of the main
        // resource; the simulator keeps what it computed.
        if let Some(s) = current.get("status") {
            obj["status"] = s.clone();
        }
    } else if obj.get("status").is_none()
        && let Some(s) = current.get("status")
    {
        obj["status"] = s.clone();
    }
    obj["apiVersion"] = json!(rt.api_version());
    obj["kind"] = json!(rt.kind);
    for field in ["uid", "creationTimestamp", "namespace", "ownerReferences"] {
        if let Some(v) = current["metadata"].get(field)
            && (field != "ownerReferences" || obj["metadata"].get(field).is_none())
        {
            obj["metadata"][field] = v.clone();
        }
    }
    obj["metadata"]["name"] = json!(name);
    let generation = current["metadata"]["generation"].as_u64().unwrap_or(0);
    if current.get("spec").is_some() || obj.get("spec").is_some() {
        let bump = u64::from(current.get("spec") != obj.get("spec"));
        obj["metadata"]["generation"] = json!(generation.max(1) + bump);
    }
    if rt.name == "secrets" {
        defaults(rt, &mut obj);
    }
    if matches!(rt.name, "deployments" | "replicasets") && !status_only {
        let replicas = obj
            .pointer("/spec/replicas")
            .and_then(Value::as_u64)
            .unwrap_or(1);
        obj["status"]["replicas"] = json!(replicas);
        obj["status"]["readyReplicas"] = json!(replicas);
        obj["status"]["availableReplicas"] = json!(replicas);
        obj["status"]["updatedReplicas"] = json!(replicas);
        obj["status"]["observedGeneration"] = obj["metadata"]["generation"].clone();
    }
    if obj == current {
        return Ok(current);
    }
    let rv = store.next_rv();
    obj["metadata"]["resourceVersion"] = json!(rv.to_string());
    store.objects.insert(key.clone(), obj.clone());
    store.publish("MODIFIED", &key, obj.clone());
    if rt.name == "deployments"
        && current.pointer("/spec/template") != obj.pointer("/spec/template")
    {
        roll_out(store, namespace, &obj);
    } else if matches!(rt.name, "deployments" | "replicasets")
        && current.pointer("/spec/replicas") != obj.pointer("/spec/replicas")
    {
        reconcile(store, rt, namespace, &obj);
    }
    Ok(obj)
}

fn owned_by<'a>(
    store: &'a Store,
    resource: &str,
    ns: &str,
    owner: &Value,
) -> Vec<(&'a Key, &'a Value)> {
    let uid = &owner["metadata"]["uid"];
    store
        .list(resource, Some(ns))
        .into_iter()
        .filter(|(_, o)| {
            o.pointer("/metadata/ownerReferences")
                .and_then(Value::as_array)
                .is_some_and(|refs| refs.iter().any(|r| r["uid"] == *uid))
        })
        .collect()
}

/// A new template: scale the old replica sets to zero and start a new one (an instant
/// "Recreate").
fn roll_out(store: &mut Store, ns: &str, deployment: &Value) {
    let Some(rs_rt) = resources::lookup("apps", "v1", "replicasets") else {
        return;
    };
    let old: Vec<Value> = owned_by(store, "apps/replicasets", ns, deployment)
        .into_iter()
        .map(|(_, o)| o.clone())
        .collect();
    for mut rs in old {
        rs["spec"]["replicas"] = json!(0);
        let name = rs["metadata"]["name"].as_str().unwrap_or("").to_owned();
        let _ = update(store, rs_rt, ns, &name, rs, false);
    }
    new_replica_set(store, ns, deployment);
}

/// What the deployment and replica set controllers do when `spec.replicas` changes.
fn reconcile(store: &mut Store, rt: &'static ResourceType, ns: &str, obj: &Value) {
    let replicas = obj
        .pointer("/spec/replicas")
        .and_then(Value::as_u64)
        .unwrap_or(1);
    if rt.name == "deployments" {
        // Only the replica set of the current template follows the deployment's count.
        let sets: Vec<Value> = owned_by(store, "apps/replicasets", ns, obj)
            .into_iter()
            .map(|(_, o)| o.clone())
            .filter(|rs| rs.pointer("/spec/template/spec") == obj.pointer("/spec/template/spec"))
            .collect();
        let Some(rs_rt) = resources::lookup("apps", "v1", "replicasets") else {
            return;
        };
        for mut rs in sets {
            rs["spec"]["replicas"] = json!(replicas);
            let name = rs["metadata"]["name"].as_str().unwrap_or("").to_owned();
            let _ = update(store, rs_rt, ns, &name, rs, false);
        }
        return;
    }
    let Some(pod_rt) = resources::lookup("", "v1", "pods") else {
        return;
    };
    let pods: Vec<String> = owned_by(store, "/pods", ns, obj)
        .into_iter()
        .map(|(k, _)| k.name.clone())
        .collect();
    let have = pods.len() as u64;
    if have > replicas {
        for name in pods.iter().skip(replicas as usize) {
            let _ = delete(store, pod_rt, ns, name, false);
        }
    } else {
        let template = obj.pointer("/spec/template").cloned().unwrap_or(json!({}));
        let name = obj["metadata"]["name"].as_str().unwrap_or("").to_owned();
        for _ in have..replicas {
            let pod = json!({
                "metadata": {"name": format!("{name}-{}", rand_suffix(5)),
                    "labels": template.pointer("/metadata/labels").cloned().unwrap_or(json!({})),
                    "ownerReferences": owner_ref(obj)},
                "spec": template.get("spec").cloned().unwrap_or(json!({"containers": []})),
            });
            let _ = create(store, pod_rt, ns, pod);
        }
    }
}

/// The autoscaling/v1 Scale view of a deployment or replica set.
pub fn scale_of(obj: &Value) -> Value {
    let labels = obj
        .pointer("/spec/selector/matchLabels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    let meta = &obj["metadata"];
    json!({
        "apiVersion": "autoscaling/v1", "kind": "Scale",
        "metadata": {"name": meta["name"], "namespace": meta["namespace"], "uid": meta["uid"],
            "resourceVersion": meta["resourceVersion"], "creationTimestamp": meta["creationTimestamp"]},
        "spec": {"replicas": obj.pointer("/spec/replicas").cloned().unwrap_or(json!(1))},
        "status": {"replicas": obj.pointer("/status/replicas").cloned().unwrap_or(json!(0)), "selector": labels},
    })
}

/// Deletes an object at once, then its dependents (unless orphaned) and, for a namespace,
/// everything in it.
pub fn delete(
    store: &mut Store,
    rt: &'static ResourceType,
    namespace: &str,
    name: &str,
    orphan: bool,
) -> Result<Value, ApiError> {
    if rt.name == "namespaces" && matches!(name, "default" | "kube-system" | "kube-public") {
        return Err(ApiError {
            code: 403,
            body: status(
                403,
                "Forbidden",
                &format!("namespaces {name:?} is forbidden: this namespace may not be deleted"),
                Some(json!({"name": name, "kind": "namespaces"})),
            ),
        });
    }
    let key = Key::new(rt, namespace, name);
    let Some(mut obj) = store.objects.remove(&key) else {
        return Err(ApiError::not_found(rt, name));
    };
    if rt.name == "namespaces" {
        let inside: Vec<Key> = store
            .objects
            .keys()
            .filter(|k| k.namespace == name)
            .cloned()
            .collect();
        for k in inside {
            if let Some(child_rt) = rt_of(&k.resource) {
                let _ = delete(store, child_rt, &k.namespace, &k.name, true);
            }
        }
    }
    let rv = store.next_rv();
    obj["metadata"]["resourceVersion"] = json!(rv.to_string());
    obj["metadata"]["deletionTimestamp"] = json!(now_rfc3339());
    store.publish("DELETED", &key, obj.clone());
    if !orphan {
        let uid = obj["metadata"]["uid"].clone();
        let dependents: Vec<Key> = store
            .objects
            .iter()
            .filter(|(_, o)| {
                o.pointer("/metadata/ownerReferences")
                    .and_then(Value::as_array)
                    .is_some_and(|refs| refs.iter().any(|r| r["uid"] == uid))
            })
            .map(|(k, _)| k.clone())
            .collect();
        for k in dependents {
            if let Some(child_rt) = rt_of(&k.resource) {
                let _ = delete(store, child_rt, &k.namespace, &k.name, false);
            }
        }
    }
    Ok(obj)
}

/// The namespaces, service accounts and RBAC roles every new cluster has.
pub fn bootstrap(store: &mut Store) {
    let get = |g: &str, n: &str| resources::lookup(g, "v1", n);
    let (Some(ns), Some(cr), Some(crb), Some(svc)) = (
        get("", "namespaces"),
        get("rbac.authorization.k8s.io", "clusterroles"),
        get("rbac.authorization.k8s.io", "clusterrolebindings"),
        get("", "services"),
    ) else {
        return;
    };
    for n in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        let _ = create(store, ns, "", json!({"metadata": {"name": n}}));
    }
    let _ = create(
        store,
        svc,
        "default",
        json!({"metadata": {"name": "kubernetes", "labels": {"component": "apiserver", "provider": "kubernetes"}},
            "spec": {"clusterIP": "10.96.0.1", "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": 6443}]}}),
    );
    let bootstrap_label = json!({"kubernetes.io/bootstrapping": "rbac-defaults"});
    let read = json!(["get", "list", "watch"]);
    let all = json!([
        "create",
        "delete",
        "deletecollection",
        "get",
        "list",
        "patch",
        "update",
        "watch"
    ]);
    let core = json!([
        "pods",
        "pods/log",
        "pods/status",
        "services",
        "configmaps",
        "serviceaccounts",
        "events",
        "namespaces"
    ]);
    let apps = json!([
        "deployments",
        "deployments/status",
        "replicasets",
        "replicasets/status"
    ]);
    let roles = [
        (
            "cluster-admin",
            json!([
            {"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]},
            {"nonResourceURLs": ["*"], "verbs": ["*"]}]),
        ),
        (
            "admin",
            json!([
            {"apiGroups": [""], "resources": ["pods", "pods/log", "pods/exec", "pods/attach", "pods/portforward", "services", "configmaps", "secrets", "serviceaccounts", "events"], "verbs": all},
            {"apiGroups": [""], "resources": ["serviceaccounts/token"], "verbs": ["create"]},
            {"apiGroups": ["apps"], "resources": apps, "verbs": all},
            {"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["roles", "rolebindings"], "verbs": all}]),
        ),
        (
            "edit",
            json!([
            {"apiGroups": [""], "resources": ["pods", "pods/log", "pods/exec", "pods/attach", "pods/portforward", "services", "configmaps", "secrets", "serviceaccounts", "events"], "verbs": all},
            {"apiGroups": ["apps"], "resources": apps, "verbs": all}]),
        ),
        (
            "view",
            json!([
            {"apiGroups": [""], "resources": core, "verbs": read},
            {"apiGroups": ["apps"], "resources": apps, "verbs": read}]),
        ),
        (
            "system:discovery",
            json!([
            {"nonResourceURLs": ["/api", "/api/*", "/apis", "/apis/*", "/healthz", "/livez", "/readyz", "/openapi", "/openapi/*", "/version", "/version/"], "verbs": ["get"]}]),
        ),
        (
            "system:basic-user",
            json!([
            {"apiGroups": ["authorization.k8s.io"], "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"], "verbs": ["create"]},
            {"apiGroups": ["authentication.k8s.io"], "resources": ["selfsubjectreviews"], "verbs": ["create"]}]),
        ),
    ];
    for (name, rules) in roles {
        let _ = create(
            store,
            cr,
            "",
            json!({"metadata": {"name": name, "labels": bootstrap_label}, "rules": rules}),
        );
    }
    let bindings = [
        ("cluster-admin", "cluster-admin", "system:masters"),
        (
            "system:discovery",
            "system:discovery",
            "system:authenticated",
        ),
        (
            "system:basic-user",
            "system:basic-user",
            "system:authenticated",
        ),
    ];
    for (name, role, group) in bindings {
        let _ = create(
            store,
            crb,
            "",
            json!({"metadata": {"name": name, "labels": bootstrap_label},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
                "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": group}]}),
        );
    }
}
