//! Just enough protobuf to read the request bodies kubectl's typed clients send
//! (`application/vnd.kubernetes.protobuf`, e.g. `kubectl create namespace|serviceaccount|
//! deployment|role|rolebinding|token`, `kubectl expose`, `kubectl auth can-i`): the fields
//! those commands set, not every field of every kind. Answers are JSON, which those clients
//! accept too.

use serde_json::{Value, json};

const MAGIC: &[u8] = b"k8s\0";

/// Field number → raw values (varints as u64, length-delimited as bytes).
enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
}

fn varint(buf: &[u8], pos: &mut usize) -> Option<u64> {
    let mut out = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*pos)?;
        *pos += 1;
        out |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(out);
        }
    }
    None
}

fn fields(buf: &[u8]) -> Option<Vec<(u64, Field<'_>)>> {
    let mut pos = 0;
    let mut out = Vec::new();
    while pos < buf.len() {
        let tag = varint(buf, &mut pos)?;
        let (num, wire) = (tag >> 3, tag & 7);
        match wire {
            0 => out.push((num, Field::Varint(varint(buf, &mut pos)?))),
            1 => pos += 8,
            5 => pos += 4,
            2 => {
                let len = usize::try_from(varint(buf, &mut pos)?).ok()?;
                let data = buf.get(pos..pos.checked_add(len)?)?;
                pos += len;
                out.push((num, Field::Bytes(data)));
            }
            _ => return None,
        }
    }
    Some(out)
}

fn msg(buf: &[u8], num: u64) -> Option<&[u8]> {
    fields(buf)?.into_iter().find_map(|(n, f)| match f {
        Field::Bytes(b) if n == num => Some(b),
        _ => None,
    })
}

fn string(buf: &[u8], num: u64) -> String {
    msg(buf, num)
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .unwrap_or_default()
}

fn strings(buf: &[u8], num: u64) -> Vec<String> {
    fields(buf)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(n, f)| match f {
            Field::Bytes(b) if n == num => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        })
        .collect()
}

fn number(buf: &[u8], num: u64) -> Option<u64> {
    fields(buf)?.into_iter().find_map(|(n, f)| match f {
        Field::Varint(v) if n == num => Some(v),
        _ => None,
    })
}

fn map(buf: &[u8], num: u64, bytes_values: bool) -> Option<Value> {
    let mut out = serde_json::Map::new();
    for (n, f) in fields(buf)? {
        if let (true, Field::Bytes(entry)) = (n == num, f) {
            let value = msg(entry, 2).unwrap_or_default();
            let value = if bytes_values {
                use base64::Engine;
                base64::engine::general_purpose::STANDARD.encode(value)
            } else {
                String::from_utf8_lossy(value).into_owned()
            };
            out.insert(string(entry, 1), json!(value));
        }
    }
    (!out.is_empty()).then_some(Value::Object(out))
}

fn messages(buf: &[u8], num: u64) -> Vec<&[u8]> {
    fields(buf)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(n, f)| match f {
            Field::Bytes(b) if n == num => Some(b),
            _ => None,
        })
        .collect()
}

fn object_meta(meta: &[u8]) -> Value {
    let mut v = json!({});
    for (key, num) in [("name", 1), ("generateName", 2), ("namespace", 3)] {
        let s = string(meta, num);
        if !s.is_empty() {
            v[key] = json!(s);
        }
    }
    if let Some(labels) = map(meta, 11, false) {
        v["labels"] = labels;
    }
    if let Some(annotations) = map(meta, 12, false) {
        v["annotations"] = annotations;
    }
    v
}

fn rules(raw: &[u8]) -> Value {
    let rules: Vec<Value> = messages(raw, 2)
        .into_iter()
        .map(|r| {
            let mut v = json!({"verbs": strings(r, 1)});
            for (key, num) in [
                ("apiGroups", 2),
                ("resources", 3),
                ("resourceNames", 4),
                ("nonResourceURLs", 5),
            ] {
                let l = strings(r, num);
                if !l.is_empty() {
                    v[key] = json!(l);
                }
            }
            v
        })
        .collect();
    json!(rules)
}

/// The API server's default for an unset port protocol.
fn or_tcp(protocol: String) -> String {
    if protocol.is_empty() {
        "TCP".to_owned()
    } else {
        protocol
    }
}

fn label_selector(sel: &[u8]) -> Value {
    json!({"matchLabels": map(sel, 1, false).unwrap_or(json!({}))})
}

fn container(c: &[u8]) -> Value {
    let mut v = json!({"name": string(c, 1), "image": string(c, 2)});
    for (key, num) in [("command", 3), ("args", 4)] {
        let l = strings(c, num);
        if !l.is_empty() {
            v[key] = json!(l);
        }
    }
    let ports: Vec<Value> = messages(c, 6)
        .into_iter()
        .map(|p| {
            let mut v = json!({"containerPort": number(p, 3).unwrap_or(0),
                "protocol": or_tcp(string(p, 4))});
            let name = string(p, 1);
            if !name.is_empty() {
                v["name"] = json!(name);
            }
            v
        })
        .collect();
    if !ports.is_empty() {
        v["ports"] = json!(ports);
    }
    let env: Vec<Value> = messages(c, 7)
        .into_iter()
        .map(|e| json!({"name": string(e, 1), "value": string(e, 2)}))
        .collect();
    if !env.is_empty() {
        v["env"] = json!(env);
    }
    v
}

fn pod_template(t: &[u8]) -> Value {
    let spec = msg(t, 2).unwrap_or_default();
    let containers: Vec<Value> = messages(spec, 2).into_iter().map(container).collect();
    json!({"metadata": object_meta(msg(t, 1).unwrap_or_default()),
        "spec": {"containers": containers}})
}

/// Decodes a protobuf-encoded request body of a known kind into its JSON form.
pub fn decode(body: &[u8]) -> Option<Value> {
    let unknown = body.strip_prefix(MAGIC)?;
    let type_meta = msg(unknown, 1)?;
    let api_version = string(type_meta, 1);
    let kind = string(type_meta, 2);
    let raw = msg(unknown, 2).unwrap_or_default();
    let spec = msg(raw, 2).unwrap_or_default();
    let meta = msg(raw, 1).unwrap_or_default();
    let mut v = json!({"apiVersion": api_version, "kind": kind, "metadata": object_meta(meta)});
    match kind.as_str() {
        "Namespace" | "ServiceAccount" => {}
        "ConfigMap" => {
            if let Some(data) = map(raw, 2, false) {
                v["data"] = data;
            }
        }
        "Secret" => {
            if let Some(data) = map(raw, 2, true) {
                v["data"] = data;
            }
            let t = string(raw, 3);
            if !t.is_empty() {
                v["type"] = json!(t);
            }
            if let Some(data) = map(raw, 4, false) {
                v["stringData"] = data;
            }
        }
        "Role" | "ClusterRole" => v["rules"] = rules(raw),
        "Pod" => v["spec"] = pod_template(raw)["spec"].clone(),
        "Deployment" | "ReplicaSet" => {
            v["spec"] = json!({
                "replicas": number(spec, 1).unwrap_or(1),
                "selector": label_selector(msg(spec, 2).unwrap_or_default()),
                "template": pod_template(msg(spec, 3).unwrap_or_default()),
            });
        }
        "Service" => {
            let ports: Vec<Value> = messages(spec, 1)
                .into_iter()
                .map(|p| {
                    let target = msg(p, 4).unwrap_or_default();
                    let target = match number(target, 1) {
                        Some(1) => json!(string(target, 3)),
                        _ => json!(number(target, 2).unwrap_or(0)),
                    };
                    let mut v = json!({"protocol": or_tcp(string(p, 2)), "port": number(p, 3).unwrap_or(0),
                        "targetPort": target});
                    let name = string(p, 1);
                    if !name.is_empty() {
                        v["name"] = json!(name);
                    }
                    v
                })
                .collect();
            v["spec"] = json!({"ports": ports});
            if let Some(sel) = map(spec, 2, false) {
                v["spec"]["selector"] = sel;
            }
            for (key, num) in [("clusterIP", 3), ("type", 4)] {
                let x = string(spec, num);
                if !x.is_empty() {
                    v["spec"][key] = json!(x);
                }
            }
        }
        "RoleBinding" | "ClusterRoleBinding" => {
            let subjects: Vec<Value> = messages(raw, 2)
                .into_iter()
                .map(|s| {
                    let mut v = json!({"kind": string(s, 1), "name": string(s, 3)});
                    for (key, num) in [("apiGroup", 2), ("namespace", 4)] {
                        let x = string(s, num);
                        if !x.is_empty() {
                            v[key] = json!(x);
                        }
                    }
                    v
                })
                .collect();
            v["subjects"] = json!(subjects);
            let rr = msg(raw, 3).unwrap_or_default();
            v["roleRef"] =
                json!({"apiGroup": string(rr, 1), "kind": string(rr, 2), "name": string(rr, 3)});
        }
        "SelfSubjectAccessReview" => {
            if let Some(ra) = msg(spec, 1) {
                v["spec"]["resourceAttributes"] = json!({
                    "namespace": string(ra, 1), "verb": string(ra, 2), "group": string(ra, 3),
                    "version": string(ra, 4), "resource": string(ra, 5),
                    "subresource": string(ra, 6), "name": string(ra, 7)});
            }
            if let Some(na) = msg(spec, 2) {
                v["spec"]["nonResourceAttributes"] =
                    json!({"path": string(na, 1), "verb": string(na, 2)});
            }
        }
        "SelfSubjectRulesReview" => v["spec"] = json!({"namespace": string(spec, 1)}),
        "TokenRequest" => {
            v["spec"] = json!({"audiences": strings(spec, 1)});
            if let Some(secs) = number(spec, 4) {
                v["spec"]["expirationSeconds"] = json!(secs);
            }
        }
        "SelfSubjectReview" => {}
        _ => return None,
    }
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ld(num: u8, data: &[u8]) -> Vec<u8> {
        let mut v = vec![(num << 3) | 2, u8::try_from(data.len()).unwrap()];
        v.extend_from_slice(data);
        v
    }

    #[test]
    fn access_review() {
        let ra = [ld(1, b"default"), ld(2, b"list"), ld(5, b"pods")].concat();
        let raw = ld(2, &ld(1, &ra));
        let tm = [
            ld(1, b"authorization.k8s.io/v1"),
            ld(2, b"SelfSubjectAccessReview"),
        ]
        .concat();
        let body = [MAGIC.to_vec(), ld(1, &tm), ld(2, &raw)].concat();
        let v = decode(&body).unwrap();
        assert_eq!(v["spec"]["resourceAttributes"]["verb"], "list");
        assert_eq!(v["spec"]["resourceAttributes"]["resource"], "pods");
        assert_eq!(v["spec"]["resourceAttributes"]["namespace"], "default");
    }
}
