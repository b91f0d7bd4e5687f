//! A casbin `Adapter` over one redb table (`casbin_rules`).

use casbin::{Adapter, Filter, Model, Result};

use crate::store::{self, Store};

pub struct RedbAdapter {
    store: Store,
}

impl RedbAdapter {
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    /// Applies `op` to every rule in one transaction; true if any rule changed.
    async fn each_rule(
        &self,
        ptype: &str,
        rules: Vec<Vec<String>>,
        op: fn(&store::WriteTransaction, &str, &[String]) -> store::Result<bool>,
    ) -> Result<bool> {
        let ptype = ptype.to_owned();
        self.store
            .write(move |txn| {
                let mut any = false;
                for rule in &rules {
                    any |= op(txn, &ptype, rule)?;
                }
                Ok(any)
            })
            .await
            .map_err(io_err)
    }
}

fn io_err(e: impl std::fmt::Display) -> casbin::Error {
    casbin::Error::IoError(std::io::Error::other(e.to_string()))
}

fn section(ptype: &str) -> String {
    ptype.chars().next().map(String::from).unwrap_or_default()
}

#[async_trait::async_trait]
impl Adapter for RedbAdapter {
    async fn load_policy(&mut self, m: &mut dyn Model) -> Result<()> {
        let rules = self.store.read(store::casbin::all).await.map_err(io_err)?;
        for (ptype, rule) in rules {
            let sec = section(&ptype);
            if let Some(ast) = m
                .get_mut_model()
                .get_mut(&sec)
                .and_then(|a| a.get_mut(&ptype))
            {
                ast.get_mut_policy().insert(rule);
            }
        }
        Ok(())
    }

    async fn load_filtered_policy<'a>(&mut self, m: &mut dyn Model, f: Filter<'a>) -> Result<()> {
        let rules = self.store.read(store::casbin::all).await.map_err(io_err)?;
        for (ptype, rule) in rules {
            let sec = section(&ptype);
            let filter = if sec == "p" { &f.p } else { &f.g };
            let keep = filter
                .iter()
                .enumerate()
                .all(|(i, v)| v.is_empty() || rule.get(i).is_some_and(|r| r == v));
            if !keep {
                continue;
            }
            if let Some(ast) = m
                .get_mut_model()
                .get_mut(&sec)
                .and_then(|a| a.get_mut(&ptype))
            {
                ast.get_mut_policy().insert(rule);
            }
        }
        Ok(())
    }

    async fn save_policy(&mut self, m: &mut dyn Model) -> Result<()> {
        let mut rules = Vec::new();
        for sec in ["p", "g"] {
            if let Some(map) = m.get_model().get(sec) {
                for (ptype, ast) in map {
                    for rule in ast.get_policy() {
                        rules.push((ptype.clone(), rule.clone()));
                    }
                }
            }
        }
        self.store
            .write(move |txn| {
                store::casbin::clear(txn)?;
                for (ptype, rule) in &rules {
                    store::casbin::add(txn, ptype, rule)?;
                }
                Ok(())
            })
            .await
            .map_err(io_err)
    }

    async fn clear_policy(&mut self) -> Result<()> {
        self.store.write(store::casbin::clear).await.map_err(io_err)
    }

    fn is_filtered(&self) -> bool {
        false
    }

    async fn add_policy(&mut self, _sec: &str, ptype: &str, rule: Vec<String>) -> Result<bool> {
        self.each_rule(ptype, vec![rule], store::casbin::add).await
    }

    async fn add_policies(
        &mut self,
        _sec: &str,
        ptype: &str,
        rules: Vec<Vec<String>>,
    ) -> Result<bool> {
        self.each_rule(ptype, rules, store::casbin::add).await
    }

    async fn remove_policy(&mut self, _sec: &str, ptype: &str, rule: Vec<String>) -> Result<bool> {
        self.each_rule(ptype, vec![rule], store::casbin::remove)
            .await
    }

    async fn remove_policies(
        &mut self,
        _sec: &str,
        ptype: &str,
        rules: Vec<Vec<String>>,
    ) -> Result<bool> {
        self.each_rule(ptype, rules, store::casbin::remove).await
    }

    async fn remove_filtered_policy(
        &mut self,
        _sec: &str,
        ptype: &str,
        field_index: usize,
        field_values: Vec<String>,
    ) -> Result<bool> {
        let ptype = ptype.to_owned();
        self.store
            .write(move |txn| {
                store::casbin::remove_filtered(txn, &ptype, field_index, &field_values)
            })
            .await
            .map_err(io_err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use casbin::{CoreApi, DefaultModel, Enforcer, MgmtApi};

    #[tokio::test]
    async fn policies_survive_a_reload_through_redb() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let model = DefaultModel::from_str(super::super::MODEL).await.unwrap();
        let mut e = Enforcer::new(model, RedbAdapter::new(store.clone()))
            .await
            .unwrap();
        e.add_policy(vec!["role:x".into(), "projects".into(), "read".into()])
            .await
            .unwrap();
        e.add_grouping_policy(vec!["user:1".into(), "role:x".into(), "org".into()])
            .await
            .unwrap();
        assert!(e.enforce(("user:1", "org", "projects", "read")).unwrap());

        let model = DefaultModel::from_str(super::super::MODEL).await.unwrap();
        let mut e2 = Enforcer::new(model, RedbAdapter::new(store.clone()))
            .await
            .unwrap();
        assert!(e2.enforce(("user:1", "org", "projects", "read")).unwrap());
        e2.remove_filtered_grouping_policy(0, vec!["user:1".into()])
            .await
            .unwrap();
        assert!(!e2.enforce(("user:1", "org", "projects", "read")).unwrap());
        let rules = store.read(crate::store::casbin::all).await.unwrap();
        assert_eq!(rules.len(), 1, "{rules:?}");
    }
}
