//! Schema migrations.

use legacy_monolith::migrate::{self, MigrateError, MIGRATIONS};

use crate::common::{cluster, fresh_database};

#[tokio::test]
async fn migrations_apply_once_and_are_idempotent() {
    let (db, conn) = fresh_database();
    let mut client = legacy_monolith::db::connect(&conn).await.unwrap();
    let first = migrate::run(&mut client).await.unwrap();
    let all: Vec<i64> = MIGRATIONS.iter().map(|m| m.version).collect();
    assert_eq!(first.applied, all);
    assert!(first.already_applied.is_empty());
    let second = migrate::run(&mut client).await.unwrap();
    assert!(second.applied.is_empty());
    assert_eq!(second.already_applied, all);
    let pg = cluster();
    assert_eq!(pg.psql(&db, "SELECT count(*) FROM schema_migrations").unwrap(), all.len().to_string());
    // The URL form of the connection string works as well.
    let mut by_url = legacy_monolith::db::connect(&pg.url(&db)).await.unwrap();
    assert!(migrate::run(&mut by_url).await.unwrap().applied.is_empty());
}

#[tokio::test]
async fn concurrent_migrations_serialise_on_the_advisory_lock() {
    let (db, conn) = fresh_database();
    let mut runs = Vec::new();
    for _ in 0..4 {
        let conn = conn.clone();
        runs.push(tokio::spawn(async move {
            let mut c = legacy_monolith::db::connect(&conn).await.unwrap();
            migrate::run(&mut c).await
        }));
    }
    let mut applied = Vec::new();
    for r in runs {
        applied.extend(r.await.unwrap().expect("every run succeeds").applied);
    }
    applied.sort_unstable();
    let all: Vec<i64> = MIGRATIONS.iter().map(|m| m.version).collect();
    assert_eq!(applied, all, "each migration applied by exactly one run");
    assert_eq!(cluster().psql(&db, "SELECT count(*) FROM schema_migrations").unwrap(), all.len().to_string());
}

#[tokio::test]
async fn an_edited_migration_is_reported() {
    let (db, conn) = fresh_database();
    let mut client = legacy_monolith::db::connect(&conn).await.unwrap();
    migrate::run(&mut client).await.unwrap();
    cluster().psql(&db, "UPDATE schema_migrations SET checksum = 'edited' WHERE version = 1").unwrap();
    match migrate::run(&mut client).await {
        Err(MigrateError::ChecksumMismatch { version: 1, .. }) => {}
        other => panic!("expected a checksum mismatch, got {other:?}"),
    }
    cluster().psql(&db, "INSERT INTO schema_migrations VALUES (999, 'future', 'x')").unwrap();
    cluster().psql(&db, "DELETE FROM schema_migrations WHERE version = 1").unwrap();
    assert!(matches!(migrate::run(&mut client).await, Err(MigrateError::UnknownVersion(999))));
}

#[tokio::test]
async fn every_table_is_ready_for_logical_replication() {
    let (db, conn) = fresh_database();
    let mut client = legacy_monolith::db::connect(&conn).await.unwrap();
    migrate::run(&mut client).await.unwrap();
    let pg = cluster();
    let tables = pg.psql(&db, "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'").unwrap();
    assert!(tables.parse::<i64>().unwrap() >= 9, "{tables} tables");
    let without_pk = pg
        .psql(
            &db,
            "SELECT string_agg(c.relname, ',') FROM pg_class c
               JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE n.nspname = 'public' AND c.relkind = 'r'
                AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conrelid = c.oid AND k.contype = 'p')",
        )
        .unwrap();
    assert_eq!(without_pk, "", "tables without a primary key");
    let fks = pg.psql(&db, "SELECT count(*) FROM pg_constraint WHERE contype = 'f'").unwrap();
    assert!(fks.parse::<i64>().unwrap() >= 10, "{fks} foreign keys");
    let sku_unique = pg
        .psql(&db, "SELECT count(*) FROM pg_indexes WHERE tablename = 'products' AND indexdef LIKE '%UNIQUE%(sku)%'")
        .unwrap();
    assert_eq!(sku_unique, "1");
}
