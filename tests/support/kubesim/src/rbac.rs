//! RBAC evaluation over the stored Roles, ClusterRoles and their bindings, including the
//! escalation checks the real server applies when roles and bindings are written.

use serde_json::{Value, json};

use crate::store::Store;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub uid: String,
    pub groups: Vec<String>,
}

impl User {
    pub fn is_superuser(&self) -> bool {
        self.groups.iter().any(|g| g == "system:masters")
    }

    pub fn groups_display(&self) -> String {
        let quoted: Vec<String> = self.groups.iter().map(|g| format!("{g:?}")).collect();
        format!("[{}]", quoted.join(" "))
    }
}

/// What a request wants to do, in RBAC terms.
#[derive(Debug, Clone, Default)]
pub struct Attributes {
    pub verb: String,
    pub group: String,
    pub resource: String,
    pub subresource: String,
    pub namespace: String,
    pub name: String,
    /// Set for non-resource requests.
    pub path: Option<String>,
}

impl Attributes {
    pub fn resource_with_sub(&self) -> String {
        if self.subresource.is_empty() {
            self.resource.clone()
        } else {
            format!("{}/{}", self.resource, self.subresource)
        }
    }

    /// The real server's wording of a denial.
    pub fn forbidden_message(&self, user: &User) -> String {
        if let Some(path) = &self.path {
            return format!(
                "forbidden: User {:?} cannot {} path {:?}",
                user.name, self.verb, path
            );
        }
        let qualified = if self.group.is_empty() {
            self.resource.clone()
        } else {
            format!("{}.{}", self.resource, self.group)
        };
        let qualified = if self.subresource.is_empty() {
            qualified
        } else {
            format!("{qualified}/{}", self.subresource)
        };
        let object = if self.name.is_empty() {
            qualified
        } else {
            format!("{qualified} {:?}", self.name)
        };
        let scope = if self.namespace.is_empty() {
            "at the cluster scope".to_owned()
        } else {
            format!("in the namespace {:?}", self.namespace)
        };
        format!(
            "{object} is forbidden: User {:?} cannot {} resource {:?} in API group {:?} {scope}",
            user.name,
            self.verb,
            self.resource_with_sub(),
            self.group
        )
    }
}

fn strs(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rule {
    pub verbs: Vec<String>,
    pub api_groups: Vec<String>,
    pub resources: Vec<String>,
    pub resource_names: Vec<String>,
    pub non_resource_urls: Vec<String>,
}

impl Rule {
    pub fn from_json(v: &Value) -> Rule {
        Rule {
            verbs: strs(v.get("verbs")),
            api_groups: strs(v.get("apiGroups")),
            resources: strs(v.get("resources")),
            resource_names: strs(v.get("resourceNames")),
            non_resource_urls: strs(v.get("nonResourceURLs")),
        }
    }

    pub fn to_json(&self) -> Value {
        let mut v = json!({"verbs": self.verbs});
        if !self.non_resource_urls.is_empty() {
            v["nonResourceURLs"] = json!(self.non_resource_urls);
        } else {
            v["apiGroups"] = json!(self.api_groups);
            v["resources"] = json!(self.resources);
            if !self.resource_names.is_empty() {
                v["resourceNames"] = json!(self.resource_names);
            }
        }
        v
    }

    fn has(list: &[String], want: &str) -> bool {
        list.iter().any(|x| x == "*" || x == want)
    }

    fn resource_matches(&self, resource: &str, sub: &str) -> bool {
        let combined = if sub.is_empty() {
            resource.to_owned()
        } else {
            format!("{resource}/{sub}")
        };
        self.resources
            .iter()
            .any(|r| r == "*" || *r == combined || (!sub.is_empty() && *r == format!("*/{sub}")))
    }

    pub fn allows(&self, a: &Attributes) -> bool {
        if !Self::has(&self.verbs, &a.verb) {
            return false;
        }
        if let Some(path) = &a.path {
            return self.non_resource_urls.iter().any(|u| {
                u == path || u == "*" || u.strip_suffix('*').is_some_and(|p| path.starts_with(p))
            });
        }
        Self::has(&self.api_groups, &a.group)
            && self.resource_matches(&a.resource, &a.subresource)
            && (self.resource_names.is_empty() || self.resource_names.contains(&a.name))
    }
}

fn subject_matches(subject: &Value, user: &User, binding_ns: &str) -> bool {
    let kind = subject.get("kind").and_then(Value::as_str).unwrap_or("");
    let name = subject.get("name").and_then(Value::as_str).unwrap_or("");
    match kind {
        "User" => user.name == name,
        "Group" => user.groups.iter().any(|g| g == name),
        "ServiceAccount" => {
            let ns = subject
                .get("namespace")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .unwrap_or(binding_ns);
            user.name == format!("system:serviceaccount:{ns}:{name}")
        }
        _ => false,
    }
}

fn role_rules(store: &Store, role_ref: &Value, binding_ns: &str) -> Vec<Rule> {
    let kind = role_ref.get("kind").and_then(Value::as_str).unwrap_or("");
    let name = role_ref.get("name").and_then(Value::as_str).unwrap_or("");
    let (resource, ns) = match kind {
        "ClusterRole" => ("rbac.authorization.k8s.io/clusterroles", ""),
        "Role" => ("rbac.authorization.k8s.io/roles", binding_ns),
        _ => return Vec::new(),
    };
    let key = crate::store::Key {
        resource: resource.to_owned(),
        namespace: ns.to_owned(),
        name: name.to_owned(),
    };
    store
        .objects
        .get(&key)
        .and_then(|r| r.get("rules"))
        .and_then(Value::as_array)
        .map(|rules| rules.iter().map(Rule::from_json).collect())
        .unwrap_or_default()
}

/// Every rule that applies to `user` in `namespace` ("" = cluster-wide rules only).
pub fn rules_for(store: &Store, user: &User, namespace: &str) -> Vec<Rule> {
    let mut out = Vec::new();
    if user.is_superuser() {
        out.push(Rule {
            verbs: vec!["*".into()],
            api_groups: vec!["*".into()],
            resources: vec!["*".into()],
            ..Rule::default()
        });
        out.push(Rule {
            verbs: vec!["*".into()],
            non_resource_urls: vec!["*".into()],
            ..Rule::default()
        });
    }
    let bindings = store
        .list("rbac.authorization.k8s.io/clusterrolebindings", None)
        .into_iter()
        .map(|(_, b)| (b, ""))
        .chain(if namespace.is_empty() {
            Vec::new()
        } else {
            store
                .list("rbac.authorization.k8s.io/rolebindings", Some(namespace))
                .into_iter()
                .map(|(_, b)| (b, namespace))
                .collect()
        });
    for (binding, ns) in bindings {
        let subjects = binding.get("subjects").and_then(Value::as_array);
        if !subjects.is_some_and(|s| s.iter().any(|s| subject_matches(s, user, ns))) {
            continue;
        }
        if let Some(role_ref) = binding.get("roleRef") {
            out.extend(role_rules(store, role_ref, ns));
        }
    }
    out
}

pub fn authorize(store: &Store, user: &User, a: &Attributes) -> bool {
    if user.is_superuser() {
        return true;
    }
    rules_for(store, user, &a.namespace)
        .iter()
        .any(|r| r.allows(a))
}

/// Rules of `servant` not covered by `owner`, broken into the smallest pieces, the way the
/// real server's escalation check reports them.
pub fn uncovered(owner: &[Rule], servant: &[Rule]) -> Vec<Rule> {
    let mut missing = Vec::new();
    for rule in servant {
        for verb in &rule.verbs {
            if !rule.non_resource_urls.is_empty() {
                for url in &rule.non_resource_urls {
                    let covered = owner.iter().any(|o| {
                        Rule::has(&o.verbs, verb)
                            && o.non_resource_urls.iter().any(|u| {
                                u == url
                                    || u == "*"
                                    || u.strip_suffix('*').is_some_and(|p| url.starts_with(p))
                            })
                    });
                    if !covered {
                        missing.push(Rule {
                            verbs: vec![verb.clone()],
                            non_resource_urls: vec![url.clone()],
                            ..Rule::default()
                        });
                    }
                }
                continue;
            }
            for group in &rule.api_groups {
                for resource in &rule.resources {
                    let names: Vec<String> = if rule.resource_names.is_empty() {
                        vec![String::new()]
                    } else {
                        rule.resource_names.clone()
                    };
                    for name in names {
                        let covered = owner.iter().any(|o| {
                            Rule::has(&o.verbs, verb)
                                && Rule::has(&o.api_groups, group)
                                && (o.resources.iter().any(|r| r == "*" || r == resource)
                                    || resource.split_once('/').is_some_and(|(_, sub)| {
                                        o.resources.iter().any(|r| *r == format!("*/{sub}"))
                                    }))
                                && (o.resource_names.is_empty()
                                    || (!name.is_empty() && o.resource_names.contains(&name)))
                        });
                        if !covered {
                            missing.push(Rule {
                                verbs: vec![verb.clone()],
                                api_groups: vec![group.clone()],
                                resources: vec![resource.clone()],
                                resource_names: if name.is_empty() {
                                    Vec::new()
                                } else {
                                    vec![name]
                                },
                                non_resource_urls: Vec::new(),
                            });
                        }
                    }
                }
            }
        }
    }
    missing
}

/// `{APIGroups:[""], Resources:["pods"], Verbs:["get"]}`, the real server's rendering.
pub fn describe(rules: &[Rule]) -> String {
    let q = |l: &[String]| {
        l.iter()
            .map(|s| format!("{s:?}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    rules
        .iter()
        .map(|r| {
            if r.non_resource_urls.is_empty() {
                let names = if r.resource_names.is_empty() {
                    String::new()
                } else {
                    format!(", ResourceNames:[{}]", q(&r.resource_names))
                };
                format!(
                    "{{APIGroups:[{}], Resources:[{}]{names}, Verbs:[{}]}}",
                    q(&r.api_groups),
                    q(&r.resources),
                    q(&r.verbs)
                )
            } else {
                format!(
                    "{{NonResourceURLs:[{}], Verbs:[{}]}}",
                    q(&r.non_resource_urls),
                    q(&r.verbs)
                )
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(v: Value) -> Rule {
        Rule::from_json(&v)
    }

    #[test]
    fn subresources_and_names() {
        let r = rule(
            json!({"verbs": ["get"], "apiGroups": [""], "resources": ["pods/log"], "resourceNames": ["a"]}),
        );
        let mut a = Attributes {
            verb: "get".into(),
            resource: "pods".into(),
            subresource: "log".into(),
            namespace: "d".into(),
            name: "a".into(),
            ..Attributes::default()
        };
        assert!(r.allows(&a));
        a.name = "b".into();
        assert!(!r.allows(&a));
        a.subresource.clear();
        a.name = "a".into();
        assert!(!r.allows(&a), "pods/log does not grant pods");
    }

    #[test]
    fn coverage() {
        let owner = vec![rule(
            json!({"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods"]}),
        )];
        let ok = vec![rule(
            json!({"verbs": ["get"], "apiGroups": [""], "resources": ["pods"], "resourceNames": ["x"]}),
        )];
        assert!(uncovered(&owner, &ok).is_empty());
        let bad = vec![rule(
            json!({"verbs": ["get", "delete"], "apiGroups": [""], "resources": ["pods"]}),
        )];
        let missing = uncovered(&owner, &bad);
        assert_eq!(
            describe(&missing),
            r#"{APIGroups:[""], Resources:["pods"], Verbs:["delete"]}"#
        );
    }
}
