//! What an ingestion reads before it locks anything: the event ids already recorded,
//! the agents and their assignments, and the spend alerts already fired.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, DbBackend, EntityTrait, QueryFilter, QuerySelect,
    Statement,
};
use uuid::Uuid;

use crate::{
    domain::billing::Month,
    error::Result,
    service::billing::spend::SpendRules,
    storage::entities::{agent_assignments, agents, spend_alerts, usage_events},
};

use super::ingest::Member;

/// The rows the decisions need besides the counters, read without a lock (see the
/// parent module for why that is safe).
#[derive(Debug, Default)]
pub(super) struct Reads {
    /// Event ids already recorded, per organization (of those asked for).
    pub recorded: HashMap<Uuid, HashSet<String>>,
    /// The agents the events name.
    pub agents: HashMap<Uuid, agents::Model>,
    /// Their assignments to the members' organizations, per (organization, agent).
    pub assignments: HashMap<(Uuid, Uuid), Vec<agent_assignments::Model>>,
    /// Thresholds fired per (organization, month), for organizations with a limit.
    pub fired: HashMap<(Uuid, Month), Vec<u32>>,
}

impl Reads {
    /// Reads everything `members` need, four queries at most whatever their number.
    pub async fn load(db: &impl ConnectionTrait, members: &[Member]) -> Result<Reads> {
        let orgs: BTreeSet<Uuid> = members.iter().map(Member::org_id).collect();
        let agent_ids: BTreeSet<Uuid> = members
            .iter()
            .flat_map(|m| m.valid.iter().map(|v| v.agent_id))
            .collect();
        // Alerts matter only where a spend limit is set.
        let limited: Vec<&Member> = members
            .iter()
            .filter(|m| SpendRules::of(m.access.org()).limit_micros.is_some())
            .collect();
        let (recorded, agents, assignments, fired) = tokio::try_join!(
            recorded(db, members),
            agents_of(db, &agent_ids),
            assignments_of(db, &orgs, &agent_ids),
            fired(db, &limited),
        )?;
        let mut by_pair: HashMap<(Uuid, Uuid), Vec<agent_assignments::Model>> = HashMap::new();
        for a in assignments {
            by_pair
                .entry((a.organization_id, a.agent_id))
                .or_default()
                .push(a);
        }
        Ok(Reads {
            recorded,
            agents: agents.into_iter().map(|a| (a.id, a)).collect(),
            assignments: by_pair,
            fired,
        })
    }
}

async fn agents_of(db: &impl ConnectionTrait, ids: &BTreeSet<Uuid>) -> Result<Vec<agents::Model>> {
    Ok(agents::Entity::find()
        .filter(agents::Column::Id.is_in(ids.iter().copied()))
        .all(db)
        .await?)
}

async fn assignments_of(
    db: &impl ConnectionTrait,
    orgs: &BTreeSet<Uuid>,
    agent_ids: &BTreeSet<Uuid>,
) -> Result<Vec<agent_assignments::Model>> {
    Ok(agent_assignments::Entity::find()
        .filter(agent_assignments::Column::AgentId.is_in(agent_ids.iter().copied()))
        .filter(agent_assignments::Column::OrganizationId.is_in(orgs.iter().copied()))
        .all(db)
        .await?)
}

/// The recorded ids among the members' event ids: per organization, its own ids.
async fn recorded(
    db: &impl ConnectionTrait,
    members: &[Member],
) -> Result<HashMap<Uuid, HashSet<String>>> {
    let mut asked: BTreeMap<Uuid, BTreeSet<&str>> = BTreeMap::new();
    for member in members {
        asked
            .entry(member.org_id())
            .or_default()
            .extend(member.valid.iter().map(|v| v.event_id.as_str()));
    }
    let rows = match db.get_database_backend() {
        DbBackend::Postgres => recorded_pairs_pg(db, &asked).await?,
        _ => recorded_pairs(db, &asked).await?,
    };
    let mut recorded: HashMap<Uuid, HashSet<String>> = HashMap::new();
    for (org_id, event_id) in rows {
        recorded.entry(org_id).or_default().insert(event_id);
    }
    Ok(recorded)
}

/// PostgreSQL: the asked (organization, event id) pairs as one `jsonb` parameter,
/// joined to `usage_events` on both columns. Only the unique (organization_id,
/// event_id) index answers that join, statistics or not: the `IN` list form, planned
/// on a table autovacuum had not analyzed yet (every new deployment's first minute),
/// walked `ix_usage_events_org_time` over the tenant's whole history and filtered on
/// the id (23 ms instead of ~1.5 ms on an 80k-row table); in the usage-batch load,
/// the reads before `BEGIN` of a group of 600-800 events took 15-16 ms with it and
/// 7 ms with this join (p50, same binary, A/B/A/B). The text is also one
/// statement whatever the number of ids, so it is prepared once per connection
/// instead of once per distinct list length.
async fn recorded_pairs_pg(
    db: &impl ConnectionTrait,
    asked: &BTreeMap<Uuid, BTreeSet<&str>>,
) -> Result<Vec<(Uuid, String)>> {
    let pairs: Vec<serde_json::Value> = asked
        .iter()
        .flat_map(|(org_id, ids)| {
            ids.iter()
                .map(move |id| serde_json::json!({ "o": org_id, "e": id }))
        })
        .collect();
    let statement = Statement::from_sql_and_values(
        DbBackend::Postgres,
        "SELECT e.organization_id, e.event_id \
         FROM jsonb_to_recordset($1::jsonb) AS k(o uuid, e text) \
         JOIN usage_events e ON e.organization_id = k.o AND e.event_id = k.e",
        [serde_json::Value::Array(pairs).into()],
    );
    let mut rows = Vec::new();
    for row in db.query_all_raw(statement).await? {
        rows.push((row.try_get_by_index(0)?, row.try_get_by_index(1)?));
    }
    Ok(rows)
}

/// SQLite: an OR of one index range of the unique (organization_id, event_id) index
/// per organization (a cross product of all organizations and all ids would scan).
async fn recorded_pairs(
    db: &impl ConnectionTrait,
    asked: &BTreeMap<Uuid, BTreeSet<&str>>,
) -> Result<Vec<(Uuid, String)>> {
    let mut any = Condition::any();
    for (org_id, ids) in asked {
        any = any.add(
            Condition::all()
                .add(usage_events::Column::OrganizationId.eq(*org_id))
                .add(usage_events::Column::EventId.is_in(ids.iter().copied())),
        );
    }
    Ok(usage_events::Entity::find()
        .select_only()
        .column(usage_events::Column::OrganizationId)
        .column(usage_events::Column::EventId)
        .filter(any)
        .into_tuple()
        .all(db)
        .await?)
}

/// The thresholds already fired in the months of `members`' events.
async fn fired(
    db: &impl ConnectionTrait,
    members: &[&Member],
) -> Result<HashMap<(Uuid, Month), Vec<u32>>> {
    let mut fired: HashMap<(Uuid, Month), Vec<u32>> = HashMap::new();
    if members.is_empty() {
        return Ok(fired);
    }
    let orgs: BTreeSet<Uuid> = members.iter().map(|m| m.org_id()).collect();
    let months: BTreeSet<String> = members
        .iter()
        .flat_map(|m| m.valid.iter().map(|v| v.month.to_string()))
        .collect();
    let alerts = spend_alerts::Entity::find()
        .filter(spend_alerts::Column::OrganizationId.is_in(orgs))
        .filter(spend_alerts::Column::Month.is_in(months))
        .all(db)
        .await?;
    for alert in alerts {
        // A month that does not parse was not written by tenantry; it cannot match.
        if let Ok(month) = alert.month.parse::<Month>() {
            fired
                .entry((alert.organization_id, month))
                .or_default()
                .push(alert.threshold as u32);
        }
    }
    Ok(fired)
}
