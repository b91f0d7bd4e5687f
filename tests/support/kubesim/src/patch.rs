//! JSON merge patch (RFC 7386), JSON patch (RFC 6902) and a strategic-merge patch that merges
//! lists of objects by their `name` (or port) key, as far as kubectl needs.

use serde_json::{Map, Value};

pub fn merge(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(t) = target {
        for (k, v) in p {
            if v.is_null() {
                t.remove(k);
            } else {
                merge(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
}

const MERGE_KEYS: &[&str] = &["name", "containerPort", "port", "mountPath", "ip", "type"];

fn merge_key(items: &[Value]) -> Option<&'static str> {
    MERGE_KEYS.iter().copied().find(|k| {
        !items.is_empty()
            && items
                .iter()
                .all(|i| i.is_object() && i.get(*k).is_some_and(|v| !v.is_null()))
    })
}

pub fn strategic(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if p.get("$patch").and_then(Value::as_str) == Some("replace") {
        let mut clean = patch.clone();
        if let Some(o) = clean.as_object_mut() {
            o.remove("$patch");
        }
        *target = clean;
        return;
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(t) = target else { return };
    for (k, v) in p {
        if k.starts_with('$') {
            continue;
        }
        match v {
            Value::Null => {
                t.remove(k);
            }
            Value::Array(items) => {
                let existing = t.get_mut(k);
                match (existing, merge_key(items)) {
                    (Some(Value::Array(cur)), Some(key)) if merge_key(cur) == Some(key) => {
                        for item in items {
                            let id = item.get(key).cloned();
                            let delete =
                                item.get("$patch").and_then(Value::as_str) == Some("delete");
                            let pos = cur.iter().position(|c| c.get(key).cloned() == id);
                            match (pos, delete) {
                                (Some(i), true) => {
                                    cur.remove(i);
                                }
                                (None, true) => {}
                                (Some(i), false) => strategic(&mut cur[i], item),
                                (None, false) => {
                                    let mut fresh = Value::Object(Map::new());
                                    strategic(&mut fresh, item);
                                    cur.push(fresh);
                                }
                            }
                        }
                    }
                    _ => {
                        let cleaned: Vec<Value> = items
                            .iter()
                            .map(|i| {
                                let mut fresh = Value::Object(Map::new());
                                if i.is_object() {
                                    strategic(&mut fresh, i);
                                    fresh
                                } else {
                                    i.clone()
                                }
                            })
                            .collect();
                        t.insert(k.clone(), Value::Array(cleaned));
                    }
                }
            }
            Value::Object(_) => strategic(t.entry(k.clone()).or_insert(Value::Null), v),
            _ => {
                t.insert(k.clone(), v.clone());
            }
        }
    }
}

fn unescape(token: &str) -> String {
    token.replace("~1", "/").replace("~0", "~")
}

fn split_pointer(path: &str) -> Result<(Vec<String>, String), String> {
    if !path.starts_with('/') {
        return Err(format!("invalid JSON pointer {path:?}"));
    }
    let mut parts: Vec<String> = path[1..].split('/').map(unescape).collect();
    let last = parts.pop().unwrap_or_default();
    Ok((parts, last))
}

fn parent<'a>(doc: &'a mut Value, parts: &[String]) -> Result<&'a mut Value, String> {
    let mut cur = doc;
    for p in parts {
        cur = match cur {
            Value::Object(m) => m.get_mut(p).ok_or_else(|| format!("missing path /{p}"))?,
            Value::Array(a) => {
                let i: usize = p.parse().map_err(|_| format!("bad index {p}"))?;
                a.get_mut(i)
                    .ok_or_else(|| format!("index {i} out of range"))?
            }
            _ => return Err(format!("cannot traverse into /{p}")),
        };
    }
    Ok(cur)
}

fn get_path(doc: &Value, path: &str) -> Result<Value, String> {
    doc.pointer(path)
        .cloned()
        .ok_or_else(|| format!("missing path {path}"))
}

fn add(doc: &mut Value, path: &str, value: Value) -> Result<(), String> {
    if path.is_empty() {
        *doc = value;
        return Ok(());
    }
    let (parts, last) = split_pointer(path)?;
    match parent(doc, &parts)? {
        Value::Object(m) => {
            m.insert(last, value);
            Ok(())
        }
        Value::Array(a) => {
            if last == "-" {
                a.push(value);
            } else {
                let i: usize = last.parse().map_err(|_| format!("bad index {last}"))?;
                if i > a.len() {
                    return Err(format!("index {i} out of range"));
                }
                a.insert(i, value);
            }
            Ok(())
        }
        _ => Err(format!("cannot add at {path}")),
    }
}

fn remove(doc: &mut Value, path: &str) -> Result<Value, String> {
    let (parts, last) = split_pointer(path)?;
    match parent(doc, &parts)? {
        Value::Object(m) => m
            .remove(&last)
            .ok_or_else(|| format!("missing path {path}")),
        Value::Array(a) => {
            let i: usize = last.parse().map_err(|_| format!("bad index {last}"))?;
            if i >= a.len() {
                return Err(format!("index {i} out of range"));
            }
            Ok(a.remove(i))
        }
        _ => Err(format!("cannot remove {path}")),
    }
}

pub fn json_patch(doc: &mut Value, ops: &Value) -> Result<(), String> {
    let ops = ops.as_array().ok_or("a JSON patch must be an array")?;
    for op in ops {
        let kind = op.get("op").and_then(Value::as_str).unwrap_or("");
        let path = op.get("path").and_then(Value::as_str).unwrap_or("");
        let value = op.get("value").cloned().unwrap_or(Value::Null);
        let from = op.get("from").and_then(Value::as_str).unwrap_or("");
        match kind {
            "add" => add(doc, path, value)?,
            "remove" => {
                remove(doc, path)?;
            }
            "replace" => {
                remove(doc, path)?;
                add(doc, path, value)?;
            }
            "move" => {
                let v = remove(doc, from)?;
                add(doc, path, v)?;
            }
            "copy" => {
                let v = get_path(doc, from)?;
                add(doc, path, v)?;
            }
            "test" => {
                if get_path(doc, path)? != value {
                    return Err(format!("test failed at {path}"));
                }
            }
            other => return Err(format!("unknown JSON patch operation {other:?}")),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strategic_merges_containers_by_name() {
        let mut pod = json!({"spec": {"containers": [{"name": "a", "image": "x"}, {"name": "b", "image": "y"}]}});
        strategic(
            &mut pod,
            &json!({"spec": {"$setElementOrder/containers": [{"name": "a"}, {"name": "b"}],
                "containers": [{"name": "b", "image": "z"}]}}),
        );
        assert_eq!(pod["spec"]["containers"][0]["image"], "x");
        assert_eq!(pod["spec"]["containers"][1]["image"], "z");
    }

    #[test]
    fn json_patch_ops() {
        let mut v = json!({"a": [1, 2], "b": {"c": 1}});
        json_patch(
            &mut v,
            &json!([{"op": "add", "path": "/a/-", "value": 3}, {"op": "replace", "path": "/b/c", "value": 2},
                {"op": "remove", "path": "/a/0"}, {"op": "test", "path": "/b/c", "value": 2}]),
        )
        .unwrap();
        assert_eq!(v, json!({"a": [2, 3], "b": {"c": 2}}));
    }
}
