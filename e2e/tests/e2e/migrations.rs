//! Every migration runs up, down and up again, leaving the same schema.

use diesel::{Connection, PgConnection, RunQueryDsl};
use diesel_migrations::EmbeddedMigrations;
use uuid::Uuid;

#[derive(diesel::QueryableByName, Debug, PartialEq)]
struct Column {
    #[diesel(sql_type = diesel::sql_types::Text)]
    description: String,
}

fn schema(conn: &mut PgConnection) -> Vec<String> {
    diesel::sql_query(
        "SELECT table_name || '.' || column_name || ' ' || data_type || ' ' || is_nullable AS description
         FROM information_schema.columns WHERE table_schema = 'public'
         AND table_name <> '__diesel_schema_migrations' ORDER BY 1",
    )
    .load::<Column>(conn)
    .expect("reads the schema")
    .into_iter()
    .map(|c| c.description)
    .collect()
}

/// `migrations` is a function because embedded migrations are consumed by each run.
fn up_down_up(service: &str, migrations: fn() -> EmbeddedMigrations) {
    let infra = e2e::Infra::from_env().expect("servers reachable");
    let name = format!("migrations_{service}_{}", Uuid::new_v4().simple());
    shared_events::db::create_database(&format!("{}/postgres", infra.postgres_url), &name)
        .expect("creates db");
    let mut conn =
        PgConnection::establish(&format!("{}/{name}", infra.postgres_url)).expect("connects");

    shared_events::db::run_migrations(&mut conn, migrations()).expect("up");
    let first = schema(&mut conn);
    assert!(
        first.iter().any(|c| c.starts_with("outbox.")),
        "common tables present"
    );
    shared_events::db::revert_migrations(&mut conn, migrations()).expect("down");
    assert!(schema(&mut conn).is_empty(), "down removes every table");
    shared_events::db::run_migrations(&mut conn, migrations()).expect("up again");
    assert_eq!(schema(&mut conn), first);

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
