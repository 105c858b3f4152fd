//! Every migration runs up, down and up again, leaving the same schema: the full
//! `pg_dump --schema-only`, not only the columns.

use diesel::{Connection, PgConnection, RunQueryDsl};
use diesel_migrations::EmbeddedMigrations;
use std::process::Command;
use uuid::Uuid;

/// The whole schema as `pg_dump --schema-only` prints it — tables, columns, defaults,
/// indexes, constraints, functions and triggers — without Diesel's own bookkeeping table
/// and the per-dump random `\restrict` key.
fn schema(url: &str) -> String {
    let out = Command::new("pg_dump")
        .args(["--schema-only", "--no-owner", "--no-privileges"])
        .args(["--exclude-table", "public.__diesel_schema_migrations"])
        .args(["--dbname", url])
        .output()
        .expect("runs pg_dump (Debian's postgresql-client)");
    assert!(
        out.status.success(),
        "pg_dump failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("a UTF-8 dump")
        .lines()
        .filter(|line| !line.starts_with("\\restrict") && !line.starts_with("\\unrestrict"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `migrations` is a function because embedded migrations are consumed by each run.
fn up_down_up(service: &str, migrations: fn() -> EmbeddedMigrations) {
    let infra = e2e::Infra::from_env().expect("servers reachable");
    let name = format!("migrations_{service}_{}", Uuid::new_v4().simple());
    shared_events::db::create_database(&format!("{}/postgres", infra.postgres_url), &name)
        .expect("creates db");
    let url = format!("{}/{name}", infra.postgres_url);
    let mut conn = PgConnection::establish(&url).expect("connects");
    let empty = schema(&url);

    shared_events::db::run_migrations(&mut conn, migrations()).expect("up");
    let first = schema(&url);
    assert!(
        first.contains("CREATE TABLE public.outbox"),
        "common tables present"
    );
    shared_events::db::revert_migrations(&mut conn, migrations()).expect("down");
    assert_eq!(
        schema(&url),
        empty,
        "down removes every table, index, function and trigger"
    );
    shared_events::db::run_migrations(&mut conn, migrations()).expect("up again");
    assert_eq!(schema(&url), first, "up again makes the same schema");

    drop(conn);
    let mut admin =
        PgConnection::establish(&format!("{}/postgres", infra.postgres_url)).expect("connects");
    diesel::sql_query(format!("DROP DATABASE \"{name}\" WITH (FORCE)"))
        .execute(&mut admin)
        .expect("drops");
}

#[test]
fn order_migrations_run_up_down_up() {
    up_down_up("order", || order::MIGRATIONS);
}

#[test]
fn payment_migrations_run_up_down_up() {
    up_down_up("payment", || payment::MIGRATIONS);
}

#[test]
fn mail_history_migrations_run_up_down_up() {
    up_down_up("mail", || mailer_blocking::startup::MIGRATIONS);
}
