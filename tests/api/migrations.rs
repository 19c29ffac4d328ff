//! Migrations: up, down to nothing, and up again; the root organization exists once.

use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter};
use tenantry::storage::entities::organizations;

use crate::{
    helpers::{Backend, TestApp},
    on_both_backends,
};

on_both_backends!(
    migrations_roll_back_and_reapply_with_one_root,
    postgres_sessions_plan_each_execution,
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
