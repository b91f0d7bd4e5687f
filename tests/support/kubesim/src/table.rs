//! `as=Table` responses, so `kubectl get` prints the columns a real server would give it.

use serde_json::{Value, json};

use crate::resources::ResourceType;
use crate::store::field_str;

pub fn wants_table(accept: &str) -> bool {
    accept
        .split(',')
        .next()
        .is_some_and(|first| first.contains("as=Table"))
}

fn age(obj: &Value) -> String {
    let created = field_str(obj, "metadata.creationTimestamp");
    let Ok(t) =
        time::OffsetDateTime::parse(&created, &time::format_description::well_known::Rfc3339)
    else {
        return "<unknown>".into();
    };
    let secs = (time::OffsetDateTime::now_utc() - t).whole_seconds().max(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 3600 * 2 => format!("{}m", s / 60),
        s if s < 86400 * 2 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

fn columns(rt: &ResourceType) -> Vec<(&'static str, &'static str)> {
    match rt.name {
        "pods" => vec![
            ("Name", "string"),
            ("Ready", "string"),
            ("Status", "string"),
            ("Restarts", "string"),
            ("Age", "string"),
        ],
        "deployments" => vec![
            ("Name", "string"),
            ("Ready", "string"),
            ("Up-to-date", "integer"),
            ("Available", "integer"),
            ("Age", "string"),
        ],
        "replicasets" => vec![
            ("Name", "string"),
            ("Desired", "integer"),
            ("Current", "integer"),
            ("Ready", "integer"),
            ("Age", "string"),
        ],
        "services" => vec![
            ("Name", "string"),
            ("Type", "string"),
            ("Cluster-IP", "string"),
            ("External-IP", "string"),
            ("Port(s)", "string"),
            ("Age", "string"),
        ],
        "configmaps" => vec![("Name", "string"), ("Data", "integer"), ("Age", "string")],
        "secrets" => vec![
            ("Name", "string"),
            ("Type", "string"),
            ("Data", "integer"),
            ("Age", "string"),
        ],
        "namespaces" => vec![("Name", "string"), ("Status", "string"), ("Age", "string")],
        "serviceaccounts" => vec![
            ("Name", "string"),
            ("Secrets", "integer"),
            ("Age", "string"),
        ],
        "events" => vec![
            ("Last Seen", "string"),
            ("Type", "string"),
            ("Reason", "string"),
            ("Object", "string"),
            ("Message", "string"),
        ],
        "rolebindings" | "clusterrolebindings" => {
            vec![("Name", "string"), ("Role", "string"), ("Age", "string")]
        }
        _ => vec![("Name", "string"), ("Created At", "date")],
    }
}

fn cells(rt: &ResourceType, o: &Value) -> Vec<Value> {
    let name = json!(field_str(o, "metadata.name"));
    let n = |p: &str| o.pointer(p).and_then(Value::as_u64).unwrap_or(0);
    let count = |p: &str| {
        o.pointer(p)
            .and_then(Value::as_object)
            .map_or(0, |m| m.len())
    };
    match rt.name {
        "pods" => {
            let statuses = o
                .pointer("/status/containerStatuses")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let ready = statuses.iter().filter(|s| s["ready"] == true).count();
            vec![
                name,
                json!(format!("{ready}/{}", statuses.len())),
                json!(field_str(o, "status.phase")),
                json!("0"),
                json!(age(o)),
            ]
        }
        "deployments" => vec![
            name,
            json!(format!(
                "{}/{}",
                n("/status/readyReplicas"),
                n("/spec/replicas")
            )),
            json!(n("/status/updatedReplicas")),
            json!(n("/status/availableReplicas")),
            json!(age(o)),
        ],
        "replicasets" => vec![
            name,
            json!(n("/spec/replicas")),
            json!(n("/status/replicas")),
            json!(n("/status/readyReplicas")),
            json!(age(o)),
        ],
        "services" => {
            let ports: Vec<String> = o
                .pointer("/spec/ports")
                .and_then(Value::as_array)
                .map(|ps| {
                    ps.iter()
                        .map(|p| {
                            format!("{}/{}", p["port"], p["protocol"].as_str().unwrap_or("TCP"))
                        })
                        .collect()
                })
                .unwrap_or_default();
            vec![
                name,
                json!(field_str(o, "spec.type")),
                json!(field_str(o, "spec.clusterIP")),
                json!("<none>"),
                json!(if ports.is_empty() {
                    "<none>".to_owned()
                } else {
                    ports.join(",")
                }),
                json!(age(o)),
            ]
        }
        "configmaps" => vec![
            name,
            json!(count("/data") + count("/binaryData")),
            json!(age(o)),
        ],
        "secrets" => vec![
            name,
            json!(field_str(o, "type")),
            json!(count("/data")),
            json!(age(o)),
        ],
        "namespaces" => vec![name, json!(field_str(o, "status.phase")), json!(age(o))],
        "serviceaccounts" => vec![name, json!(0), json!(age(o))],
        "events" => vec![
            json!(age(o)),
            json!(field_str(o, "type")),
            json!(field_str(o, "reason")),
            json!(format!(
                "{}/{}",
                field_str(o, "involvedObject.kind").to_lowercase(),
                field_str(o, "involvedObject.name")
            )),
            json!(field_str(o, "message")),
        ],
        "rolebindings" | "clusterrolebindings" => vec![
            name,
            json!(format!(
                "{}/{}",
                field_str(o, "roleRef.kind"),
                field_str(o, "roleRef.name")
            )),
            json!(age(o)),
        ],
        _ => vec![name, json!(field_str(o, "metadata.creationTimestamp"))],
    }
}

/// A meta.k8s.io/v1 Table of `items`.
pub fn table(rt: &ResourceType, items: &[Value], list_meta: Value) -> Value {
    let defs: Vec<Value> = columns(rt)
        .into_iter()
        .enumerate()
        .map(|(i, (name, ty))| {
            json!({"name": name, "type": ty, "format": if i == 0 && name == "Name" { "name" } else { "" },
                "description": "", "priority": 0})
        })
        .collect();
    let rows: Vec<Value> = items
        .iter()
        .map(|o| json!({"cells": cells(rt, o), "object": o}))
        .collect();
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": list_meta,
        "columnDefinitions": defs, "rows": rows})
}
