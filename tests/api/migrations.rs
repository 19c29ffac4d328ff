//! Migrations: up, down to nothing, and up again; the root organization exists once.

use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, ExprTrait, Order, PaginatorTrait, QueryFilter,
    QueryOrder, QuerySelect, QueryTrait, TransactionTrait,
    sea_query::{Expr, Func},
};
use tenantry::{auth::live_orgs, storage::entities::organizations};
use uuid::Uuid;

use crate::{
    helpers::{Backend, TestApp},
    on_both_backends,
};

on_both_backends!(
    migrations_roll_back_and_reapply_with_one_root,
    postgres_sessions_plan_each_execution,
    the_name_index_serves_list_pages,
);

async fn migrations_roll_back_and_reapply_with_one_root(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let store = app.store.clone();
    let roots = || async {
        organizations::Entity::find()
            .filter(organizations::Column::Slug.eq("internal"))
            .count(store.db())
            .await
            .expect("count roots")
    };
    assert_eq!(roots().await, 1);
    // A second `up` is a no-op: the root is not created twice.
    store.migrate_up().await.expect("migrate up again");
    assert_eq!(roots().await, 1);
    let (applied, pending) = store.migration_status().await.expect("status");
    assert!(pending.is_empty());
    let steps = u32::try_from(applied.len()).expect("count");
    store.migrate_down(steps).await.expect("every down step");
    let (applied_after, pending_after) = store.migration_status().await.expect("status");
    assert!(applied_after.is_empty());
    assert_eq!(pending_after.len(), applied.len());
    store.migrate_up().await.expect("migrate up after down");
    assert_eq!(roots().await, 1);
    app.stop().await;
}

/// PostgreSQL connections use custom plans, so a generic plan cached while a table was
/// small cannot keep the wrong index (see `Store::connect`).
async fn postgres_sessions_plan_each_execution(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    if backend == Backend::Postgres {
        let db = app.store.db();
        let row = db
            .query_one_raw(sea_orm::Statement::from_string(
                db.get_database_backend(),
                "SHOW plan_cache_mode",
            ))
            .await
            .expect("show")
            .expect("a row");
        let mode: String = row.try_get("", "plan_cache_mode").expect("text");
        assert_eq!(mode, "force_custom_plan");
    }
    app.stop().await;
}

/// The plan of `query` as text, one line per plan row.
async fn plan_of<C: ConnectionTrait>(db: &C, query: impl QueryTrait) -> String {
    let backend = db.get_database_backend();
    let mut statement = query.build(backend);
    let (explain, column) = match backend {
        sea_orm::DbBackend::Sqlite => ("EXPLAIN QUERY PLAN", "detail"),
        _ => ("EXPLAIN", "QUERY PLAN"),
    };
    statement.sql = format!("{explain} {}", statement.sql);
    db.query_all_raw(statement)
        .await
        .expect("explain")
        .iter()
        .map(|row| row.try_get::<String>("", column).expect("plan text"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// ListOrganizations' default order, `lower(name), id`, is read from
/// `ix_organizations_name_order` on both backends (SQLite only when the query writes
/// the expression as the index does), and a page after a token starts with a range of
/// the index instead of scanning from the first name. The queries have the shape
/// `service::orgs::read::list` builds (agent counts as a scalar sub-select).
async fn the_name_index_serves_list_pages(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let folded = || -> Expr { Func::lower(Expr::col(organizations::Column::Name)).into() };
    let page = || {
        live_orgs(true)
            .order_by(folded(), Order::Asc)
            .order_by(organizations::Column::Id, Order::Asc)
            .limit(51)
    };
    let last_key = || -> Expr { Func::lower(Expr::val("kilo")).into() };
    let after = page().filter(
        folded().gte(last_key()).and(
            Expr::tuple([folded(), Expr::col(organizations::Column::Id)])
                .gt(Expr::tuple([last_key(), Expr::val(Uuid::nil())])),
        ),
    );
    // Plans for a realistic table: with one row, a sort is rightly cheaper.
    let tx = app.store.db().begin().await.expect("begin");
    let (numbers, new_id) = match backend {
        Backend::Sqlite => (
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2000) \
             SELECT i FROM n",
            "randomblob(16)",
        ),
        Backend::Postgres => (
            "SELECT i FROM generate_series(1, 2000) AS n(i)",
            "gen_random_uuid()",
        ),
    };
    tx.execute_unprepared(&format!(
        "INSERT INTO organizations (id, name, slug, kind, status, contact_name, \
         contact_email, description, interests, billing_rate_micros, currency, plan, \
         owner_user_id, owner_email, owner_name, max_agents, max_phone_numbers, \
         max_concurrent_calls, alert_thresholds, alert_emails, alert_action, \
         deactivation_reason, create_time, update_time, feature_overrides, version) \
         SELECT {new_id}, 'Org ' || i, 'org-' || i, 'TENANT', 'ACTIVE', '', '', '', '', 0, \
         'USD', 'free', '', '', '', 1, 1, 1, '[]', '[]', 'NOTIFY_ONLY', '', i, i, '{{}}', 1 \
         FROM ({numbers}) AS numbers"
    ))
    .await
    .expect("insert organizations");
    if backend == Backend::Postgres {
        // As autovacuum would: PostgreSQL plans from statistics.
        tx.execute_unprepared("ANALYZE organizations")
            .await
            .expect("analyze");
    }
    let first = plan_of(&tx, page()).await;
    assert!(first.contains("ix_organizations_name_order"), "{first}");
    assert!(!first.contains("TEMP B-TREE FOR ORDER BY"), "{first}");
    assert!(!first.contains("Sort"), "{first}");
    let next = plan_of(&tx, after).await;
    assert!(next.contains("ix_organizations_name_order"), "{next}");
    match backend {
        Backend::Sqlite => assert!(next.contains("SEARCH organizations USING INDEX"), "{next}"),
        Backend::Postgres => assert!(next.contains("Index Cond"), "{next}"),
    }
    tx.rollback().await.expect("rollback");
    app.stop().await;
}
