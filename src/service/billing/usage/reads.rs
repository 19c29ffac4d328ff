//! What an ingestion reads before it locks anything: the event ids already recorded,
//! the agents and their assignments, and the spend alerts already fired.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use sea_orm::{ColumnTrait, Condition, ConnectionTrait, EntityTrait, QueryFilter, QuerySelect};
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

/// The recorded ids among the members' event ids: per organization, its own ids (an
/// OR of one index range per organization; a cross product of all organizations and
/// all ids would make PostgreSQL scan the table once a group is large).
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
    let mut any = Condition::any();
    for (org_id, ids) in &asked {
        any = any.add(
            Condition::all()
                .add(usage_events::Column::OrganizationId.eq(*org_id))
                .add(usage_events::Column::EventId.is_in(ids.iter().copied())),
        );
    }
    let rows: Vec<(Uuid, String)> = usage_events::Entity::find()
        .select_only()
        .column(usage_events::Column::OrganizationId)
        .column(usage_events::Column::EventId)
        .filter(any)
        .into_tuple()
        .all(db)
        .await?;
    let mut recorded: HashMap<Uuid, HashSet<String>> = HashMap::new();
    for (org_id, event_id) in rows {
        recorded.entry(org_id).or_default().insert(event_id);
    }
    Ok(recorded)
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
