//! `/api/v1/groups` and their members.

use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use time::OffsetDateTime;
use uuid::Uuid;

use super::extract::{Body, Page, PageQuery, Path, Query};
use super::views::{GroupView, UserView};
use super::{ApiError, access, check_description, commit, find_named, validate_name};
use crate::authn::caller::Caller;
use crate::authz::{Act, Obj};
use crate::domain::audit::Target;
use crate::domain::org::{Group, Subject};
use crate::domain::user::User;
use crate::state::AppState;
use crate::store::{self, StoreError, named};

pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<PageQuery>,
) -> Result<axum::Json<Page<GroupView>>, ApiError> {
    access::org(&state, &caller, Obj::Groups, Act::Read).await?;
    super::page_named(
        &state,
        q,
        |g: &Group| GroupView::from(g),
        |v: &GroupView| v.name.clone(),
    )
    .await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateGroup {
    pub name: String,
    #[serde(default)]
    pub description: String,
}

pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Body(req): Body<CreateGroup>,
) -> Result<(StatusCode, axum::Json<GroupView>), ApiError> {
    let permit = access::org(&state, &caller, Obj::Groups, Act::Create).await?;
    validate_name("name", &req.name)?;
    check_description(&req.description)?;
    let group = Group {
        id: Uuid::now_v7(),
        name: req.name,
        description: req.description,
        members: Default::default(),
        created_at: OffsetDateTime::now_utc(),
    };
    let event = caller.event("group.create", Target::of("group", &group.name));
    let stored = group.clone();
    commit(&state, &permit, event, move |txn| {
        named::insert(txn, &stored)
    })
    .await?;
    Ok((StatusCode::CREATED, axum::Json(GroupView::from(&group))))
}

pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<axum::Json<GroupView>, ApiError> {
    access::org(&state, &caller, Obj::Groups, Act::Read).await?;
    Ok(axum::Json(GroupView::from(
        &find_named::<Group>(&state, name).await?,
    )))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateGroup {
    pub description: Option<String>,
}

pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Body(req): Body<UpdateGroup>,
) -> Result<axum::Json<GroupView>, ApiError> {
    let permit = access::org(&state, &caller, Obj::Groups, Act::Update).await?;
    let mut group = find_named::<Group>(&state, name).await?;
    if let Some(d) = req.description {
        check_description(&d)?;
        group.description = d;
    }
    let event = caller.event("group.update", Target::of("group", &group.name));
    let stored = group.clone();
    commit(&state, &permit, event, move |txn| {
        named::update(txn, &stored)
    })
    .await?;
    Ok(axum::Json(GroupView::from(&group)))
}

pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    let permit = access::org(&state, &caller, Obj::Groups, Act::Delete).await?;
    let group = find_named::<Group>(&state, name).await?;
    let doomed_grants =
        super::grants::DoomedGrants::select(&state, |g| g.subject == Subject::Group(group.id));
    let event = caller.event("group.delete", Target::of("group", &group.name));
    let doomed = group.clone();
    let to_delete = doomed_grants.clone();
    commit(&state, &permit, event, move |txn| {
        // A mapped group would fill again at the next sign-in if it were created anew.
        let providers = named::write::every::<crate::domain::sso::SsoProvider>(txn)?;
        if let Some(p) = providers
            .iter()
            .find(|p| p.group_mapping.iter().any(|m| m.group == doomed.name))
        {
            return Err(StoreError::InUse(format!(
                "group {} is in the group mapping of sign-in provider {}; remove it there first",
                doomed.name, p.name
            )));
        }
        named::delete(txn, &doomed)?;
        to_delete.delete_in(txn)?;
        Ok(())
    })
    .await?;
    doomed_grants.forget(&state).await?;
    state.authz.forget_group(group.id);
    Ok(StatusCode::NO_CONTENT)
}

pub async fn members(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<axum::Json<Page<UserView>>, ApiError> {
    access::org(&state, &caller, Obj::Groups, Act::Read).await?;
    let group = find_named::<Group>(&state, name).await?;
    let users = state
        .store
        .read(move |txn| {
            let mut out = Vec::new();
            for id in &group.members {
                if let Some(u) = store::users::get(txn, *id)? {
                    out.push(u);
                }
            }
            out.sort_by(|a: &User, b: &User| a.name.cmp(&b.name));
            Ok(out)
        })
        .await?;
    Ok(axum::Json(Page {
        items: users.iter().map(UserView::from).collect(),
        next_cursor: None,
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddMember {
    pub user: String,
}

async fn change_membership(
    state: &AppState,
    caller: &Caller,
    group_name: String,
    user_name: String,
    add: bool,
) -> Result<(), ApiError> {
    let permit = access::org(state, caller, Obj::Groups, Act::Update).await?;
    let group = find_named::<Group>(state, group_name).await?;
    let lookup = user_name.clone();
    let user = state
        .store
        .read(move |txn| store::users::get_by_name(txn, &lookup))
        .await?
        .ok_or_else(|| {
            if add {
                ApiError::invalid("user", format!("no user named {user_name}"))
            } else {
                ApiError::not_found(format!("user {user_name} not found"))
            }
        })?;
    if add == group.members.contains(&user.id) {
        return if add {
            Err(ApiError::conflict(format!(
                "{} is already a member of {}",
                user.name, group.name
            )))
        } else {
            Err(ApiError::not_found(format!(
                "{} is not a member of {}",
                user.name, group.name
            )))
        };
    }
    let action = if add {
        "group.member.add"
    } else {
        "group.member.remove"
    };
    let mut event = caller.event(action, Target::of("group", &group.name));
    event.details = serde_json::json!({"user": user.name});
    let (gid, uid) = (group.id, user.id);
    commit(state, &permit, event, move |txn| {
        let mut g =
            named::write::by_id::<Group>(txn, &gid.to_string())?.ok_or(StoreError::NotFound)?;
        if add {
            g.members.insert(uid);
        } else {
            g.members.remove(&uid);
        }
        named::update(txn, &g)
    })
    .await?;
    state.authz.set_membership(uid, gid, add);
    if !add {
        crate::relay::access_changed(state, vec![uid]).await;
    }
    Ok(())
}

pub async fn add_member(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Body(req): Body<AddMember>,
) -> Result<StatusCode, ApiError> {
    change_membership(&state, &caller, name, req.user, true).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn remove_member(
    State(state): State<AppState>,
    caller: Caller,
    Path((name, user)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    change_membership(&state, &caller, name, user, false).await?;
    Ok(StatusCode::NO_CONTENT)
}
