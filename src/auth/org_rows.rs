//! Organization reads shared by the auth layer and the read RPCs. Where the answer shows
//! an organization's agent count, the count is a scalar sub-select of the same
//! statement, so one query (one round trip, one hop to a SQLite worker thread) returns
//! the row and its count, consistent with each other.

use sea_orm::{
    ColumnTrait, DbErr, EntityTrait, ExprTrait, FromQueryResult, JoinType, QueryFilter,
    QueryResult, QuerySelect, RelationDef, Select,
    sea_query::{Expr, Query},
};
use uuid::Uuid;

use crate::{
    auth::OrgRef,
    error::Result,
    storage::{
        Store,
        entities::{agents, api_keys, organizations},
    },
};

/// The alias of the agent count column.
const AGENT_COUNT: &str = "agent_count";

/// A live organization row with, when the query asked for it, its number of agents
/// read in the same statement.
#[derive(Debug, Clone)]
pub struct OrgRow {
    /// The row.
    pub row: organizations::Model,
    /// Agents assigned to it; `None` when the query did not count them.
    pub agent_count: Option<u64>,
}

impl FromQueryResult for OrgRow {
    fn from_query_result(res: &QueryResult, pre: &str) -> Result<Self, DbErr> {
        Ok(OrgRow {
            row: organizations::Model::from_query_result(res, pre)?,
            // An absent column reads as `None` (the query did not count).
            agent_count: res
                .try_get::<Option<i64>>(pre, AGENT_COUNT)?
                .map(|count| u64::try_from(count).unwrap_or(0)),
        })
    }
}

/// The organization of an API key, found with the key in one query.
#[derive(Debug, Clone)]
pub struct KeyedOrg {
    /// The key row's id.
    pub key_id: Uuid,
    /// The key's non-secret prefix.
    pub prefix: String,
    /// Its organization.
    pub org: OrgRow,
}

impl FromQueryResult for KeyedOrg {
    fn from_query_result(res: &QueryResult, pre: &str) -> Result<Self, DbErr> {
        Ok(KeyedOrg {
            key_id: res.try_get(pre, "key_id")?,
            prefix: res.try_get(pre, "key_prefix")?,
            org: OrgRow::from_query_result(res, pre)?,
        })
    }
}

/// `(SELECT COUNT(*) FROM agents WHERE agents.organization_id = organizations.id)`,
/// answered from `ix_agents_org` (organization, id).
fn agent_count_expr() -> Expr {
    Query::select()
        .expr(Expr::col((agents::Entity, agents::Column::Id)).count())
        .from(agents::Entity)
        .and_where(
            Expr::col((agents::Entity, agents::Column::OrganizationId))
                .equals((organizations::Entity, organizations::Column::Id)),
        )
        .to_owned()
        .into()
}

/// Live (not deleted) organizations, with their agent counts when `count_agents`.
pub fn live_orgs(count_agents: bool) -> Select<organizations::Entity> {
    let query = organizations::Entity::find().filter(organizations::Column::DeleteTime.is_null());
    if count_agents {
        query.expr_as(agent_count_expr(), AGENT_COUNT)
    } else {
        query
    }
}

/// Loads a live (not deleted) organization by id or slug.
pub async fn find_org(store: &Store, reference: &OrgRef) -> Result<Option<organizations::Model>> {
    Ok(find_org_row(store, reference, false).await?.map(|o| o.row))
}

/// Loads a live organization by id or slug, with its agent count when `count_agents`.
pub async fn find_org_row(
    store: &Store,
    reference: &OrgRef,
    count_agents: bool,
) -> Result<Option<OrgRow>> {
    let query = live_orgs(count_agents);
    let query = match reference {
        OrgRef::Id(id) => query.filter(organizations::Column::Id.eq(*id)),
        OrgRef::Slug(slug) => query.filter(organizations::Column::Slug.eq(slug.as_str())),
    };
    // Ids and slugs are unique (slugs across deleted rows too): at most one row.
    Ok(first(query.into_model::<OrgRow>().all(store.db()).await?))
}

/// The unrevoked API key with `key_hash` and its live organization (with the agent
/// count when `count_agents`), in one query; `None` when either is missing.
pub async fn find_key_org(
    store: &Store,
    key_hash: &str,
    count_agents: bool,
) -> Result<Option<KeyedOrg>> {
    let keys: RelationDef = organizations::Entity::belongs_to(api_keys::Entity)
        .from(organizations::Column::Id)
        .to(api_keys::Column::OrganizationId)
        .into();
    Ok(live_orgs(count_agents)
        .join(JoinType::InnerJoin, keys)
        .filter(api_keys::Column::KeyHash.eq(key_hash))
        .filter(api_keys::Column::RevokeTime.is_null())
        .expr_as(
            Expr::col((api_keys::Entity, api_keys::Column::Id)),
            "key_id",
        )
        .expr_as(
            Expr::col((api_keys::Entity, api_keys::Column::Prefix)),
            "key_prefix",
        )
        // Key hashes are unique: at most one row.
        .into_model::<KeyedOrg>()
        .all(store.db())
        .await
        .map(first)?)
}

/// The one row of a look-up by a unique key. Such look-ups are read with `all`, not
/// `one`: `one` adds `LIMIT ?`, and SQLite (the bundled 3.51) marks a LIMIT parameter as
/// one the plan depends on, so binding it expires the cached statement and every
/// execution parses and plans the query again.
fn first<T>(rows: Vec<T>) -> Option<T> {
    rows.into_iter().next()
}
