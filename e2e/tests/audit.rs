//! saga-audit, the real binary, against real databases: PostgreSQL (`POSTGRES_URL`) for
//! the order and payment databases, MongoDB (`MONGODB_URI`) for the mail history and the
//! Kakao Pay simulator's ledger over HTTP. Each test writes the records a saga leaves —
//! every violation built on purpose, next to clean sagas — and reads what the command
//! reports.

use diesel::{Connection, PgConnection, RunQueryDsl};
use kakaopay::sim::{self, SimConfig, SimHandle};
use kakaopay::{ApproveRequest, CancelRequest, KakaoPayClient, ReadyRequest};
use mongodb::bson::{doc, DateTime as BsonDate, Document};
use serde_json::Value;
use std::collections::BTreeSet;
use std::process::{Command, Output};
use uuid::Uuid;

const TOTAL: i64 = 1000;

/// Fresh order, payment and (cases 1–2) mail databases (migrated), a MongoDB database
/// and a simulator.
struct Fixture {
    id: String,
    server: String,
    orders: PgConnection,
    payments: PgConnection,
    mail: PgConnection,
    mongo: mongodb::Database,
    sim: SimHandle,
    kakao: KakaoPayClient,
    browser: reqwest::Client,
}

impl Fixture {
    async fn new() -> Self {
        let server = std::env::var("POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned());
        let id = Uuid::new_v4().simple().to_string()[..12].to_owned();
        let connect = |db: &str, migrations| {
            let name = format!("{db}_audit_{id}");
            shared_events::db::create_database(&format!("{server}/postgres"), &name)
                .expect("create database");
            let mut conn = PgConnection::establish(&format!("{server}/{name}")).expect("connect");
            shared_events::db::run_migrations(&mut conn, migrations).expect("migrations");
            conn
        };
        let orders = connect("orders", order::MIGRATIONS);
        let payments = connect("payments", payment::MIGRATIONS);
        let mail = connect("mail", mailer_blocking::startup::MIGRATIONS);
        let uri =
            std::env::var("MONGODB_URI").unwrap_or_else(|_| "mongodb://127.0.0.1:27017".to_owned());
        let mongo = mongodb::Client::with_uri_str(&uri)
            .await
            .expect("mongodb")
            .database(&format!("audit_{id}"));
        let sim = sim::spawn(SimConfig::default()).await.expect("simulator");
        let kakao = KakaoPayClient::new(sim.client_config()).expect("client");
        let browser = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("browser");
        Self {
            id,
            server,
            orders,
            payments,
            mail,
            mongo,
            sim,
            kakao,
            browser,
        }
    }

    /// An order row; `age_secs` ago is its last change, its deadline 15 minutes after
    /// it was placed (`deadline_in_secs` from now).
    fn order(
        &mut self,
        status: &str,
        refunded: Option<i64>,
        completed: bool,
        age_secs: i64,
    ) -> Uuid {
        self.order_with_deadline(status, refunded, completed, age_secs, 900 - age_secs)
    }

    fn order_with_deadline(
        &mut self,
        status: &str,
        refunded: Option<i64>,
        completed: bool,
        age_secs: i64,
        deadline_in_secs: i64,
    ) -> Uuid {
        let id = Uuid::new_v4();
        let at = format!("now() - interval '{age_secs} seconds'");
        let sql = format!(
            "INSERT INTO orders (id, customer_id, customer_email, status, total_amount, \
             refunded_amount, payment_deadline, created_at, updated_at, completed_at) \
             VALUES ('{id}', 'c-1', 'shopper-{id}@example.com', '{status}', {TOTAL}, {}, \
             now() + interval '{deadline_in_secs} seconds', {at}, {at}, {})",
            refunded.map_or("NULL".to_owned(), |r| r.to_string()),
            if completed { at.as_str() } else { "NULL" },
        );
        diesel::sql_query(sql)
            .execute(&mut self.orders)
            .expect("insert order");
        id
    }

    /// A payment row with its logged gateway calls (`(kind, outcome)`).
    fn payment(&mut self, order: Uuid, status: &str, tid: &str, calls: &[(&str, &str)]) {
        let id = Uuid::new_v4();
        let refunded = if status == "REFUNDED" {
            TOTAL.to_string()
        } else {
            "NULL".into()
        };
        let sql = format!(
            "INSERT INTO payments (id, order_id, status, amount, item_name, quantity, \
             partner_user_id, order_snapshot, tid, refunded_amount, updated_at) \
             VALUES ('{id}', '{order}', '{status}', {TOTAL}, 'item', 1, 'c-1', '{{}}', \
             '{tid}', {refunded}, now() - interval '1 hour')"
        );
        diesel::sql_query(sql)
            .execute(&mut self.payments)
            .expect("insert payment");
        for (kind, outcome) in calls {
            diesel::sql_query(format!(
                "INSERT INTO gateway_calls (payment_id, kind, outcome, latency_ms) \
                 VALUES ('{id}', '{kind}', '{outcome}', 1.0)"
            ))
            .execute(&mut self.payments)
            .expect("insert gateway call");
        }
    }

    /// History records, in the notifier's document shape, one per `(kind, status)`.
    async fn mails(&self, order: Uuid, mails: &[(&str, &str)]) {
        let now = BsonDate::now();
        let docs: Vec<Document> = mails
            .iter()
            .map(|(kind, status)| {
                let event_id = Uuid::new_v4().to_string();
                doc! {
                    "_id": Uuid::now_v7().to_string(), "event_id": &event_id,
                    "event_type": "test", "order_id": order.to_string(),
                    "recipient": format!("shopper-{order}@example.com"), "type": *kind,
                    "locale": "en", "status": *status, "attempts": 1_i64,
                    "last_error": if *status == "SENT" { None } else { Some("550 rejected") },
                    "subject": "s", "smtp_message_id": format!("<{event_id}@example.com>"),
                    "created_at": now, "updated_at": now, "sent_at": now,
                    "event_occurred_at": now,
                }
            })
            .collect();
        self.mongo
            .collection::<Document>("notifications")
            .insert_many(docs)
            .await
            .expect("insert history");
    }

    /// History rows in mailer-blocking's table (cases 1–2), one per `(kind, status)`.
    fn mails_in_postgres(&mut self, order: Uuid, mails: &[(&str, &str)]) {
        for (kind, status) in mails {
            let event_id = Uuid::new_v4();
            diesel::sql_query(format!(
                "INSERT INTO mail_history (id, event_id, event_type, order_id, recipient, kind, \
                 locale, status, attempts, subject, smtp_message_id, created_at, updated_at, \
                 event_occurred_at) VALUES ('{}', '{event_id}', 'test', '{order}', \
                 'shopper-{order}@example.com', '{kind}', 'en', '{status}', 1, 's', \
                 '<{event_id}@example.com>', now(), now(), now())",
                Uuid::now_v7()
            ))
            .execute(&mut self.mail)
            .expect("insert history row");
        }
    }

    /// `ready` at the gateway for `order`; returns the tid (not approved).
    async fn ready(&self, order: Uuid) -> (String, String) {
        let ready = self
            .kakao
            .ready(&ReadyRequest {
                partner_order_id: order.to_string(),
                partner_user_id: "c-1".to_owned(),
                item_name: "item".to_owned(),
                item_code: None,
                quantity: 1,
                total_amount: TOTAL,
                tax_free_amount: 0,
                vat_amount: None,
                approval_url: "https://shop.example/approve".to_owned(),
                cancel_url: "https://shop.example/cancel".to_owned(),
                fail_url: "https://shop.example/fail".to_owned(),
            })
            .await
            .expect("ready");
        (ready.tid, ready.next_redirect_pc_url)
    }

    /// A charge the gateway approved for `order`; returns its tid.
    async fn charge(&self, order: Uuid) -> String {
        let (tid, page) = self.ready(order).await;
        let response = self.browser.get(&page).send().await.expect("payment page");
        let location = response.headers()["location"].to_str().expect("location");
        let token = url::Url::parse(location)
            .expect("url")
            .query_pairs()
            .find(|(k, _)| k == "pg_token")
            .map(|(_, v)| v.into_owned())
            .expect("pg_token");
        self.kakao
            .approve(&ApproveRequest {
                tid: tid.clone(),
                partner_order_id: order.to_string(),
                partner_user_id: "c-1".to_owned(),
                pg_token: token,
                total_amount: None,
                payload: None,
            })
            .await
            .expect("approve");
        tid
    }

    async fn refund(&self, tid: &str) {
        self.kakao
            .cancel(&CancelRequest {
                tid: tid.to_owned(),
                cancel_amount: TOTAL,
                cancel_tax_free_amount: 0,
                cancel_vat_amount: None,
                cancel_available_amount: None,
                payload: None,
            })
            .await
            .expect("cancel");
    }

    /// A completed saga: charged once, both mails sent.
    async fn clean_completed(&mut self) -> Uuid {
        let order = self.order("COMPLETED", None, true, 3600);
        let tid = self.charge(order).await;
        self.payment(
            order,
            "APPROVED",
            &tid,
            &[("ready", "ok"), ("approve", "ok")],
        );
        self.mails(
            order,
            &[("payment_completed", "SENT"), ("order_completed", "SENT")],
        )
        .await;
        order
    }

    /// Runs saga-audit on these sources with `extra` arguments.
    async fn run(&self, extra: &[&str]) -> Output {
        let mut command = Command::new(env!("CARGO_BIN_EXE_saga-audit"));
        command
            .env_clear()
            .arg("--order-database-url")
            .arg(format!("{}/orders_audit_{}", self.server, self.id))
            .arg("--payment-database-url")
            .arg(format!("{}/payments_audit_{}", self.server, self.id))
            .arg("--mongodb-uri")
            .arg(
                std::env::var("MONGODB_URI").unwrap_or_else(|_| "mongodb://127.0.0.1:27017".into()),
            )
            .arg("--mongodb-database")
            .arg(format!("audit_{}", self.id))
            .arg("--kakaopay-ledger")
            .arg(self.sim.base_url.as_str())
            .args(extra);
        tokio::task::spawn_blocking(move || command.output().expect("saga-audit runs"))
            .await
            .expect("join")
    }

    async fn json(&self, extra: &[&str]) -> (i32, Value) {
        let mut args = vec!["--json"];
        args.extend_from_slice(extra);
        let output = self.run(&args).await;
        let report: Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
            panic!(
                "JSON report ({e}): {}\n{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            )
        });
        (output.status.code().expect("exit code"), report)
    }

    async fn drop_all(self) {
        let _ = self.mongo.drop().await;
        let mut conn =
            PgConnection::establish(&format!("{}/postgres", self.server)).expect("connect");
        for db in ["orders", "payments", "mail"] {
            diesel::sql_query(format!(
                "DROP DATABASE IF EXISTS {db}_audit_{} WITH (FORCE)",
                self.id
            ))
            .execute(&mut conn)
            .expect("drop");
        }
    }
}

fn found(report: &Value) -> BTreeSet<(String, String)> {
    report["violations"]
        .as_array()
        .expect("violations")
        .iter()
        .map(|v| {
            (
                v["order_id"].as_str().expect("order_id").to_owned(),
                v["invariant"].as_str().expect("invariant").to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn clean_sagas_are_reported_clean() {
    let mut f = Fixture::new().await;
    f.clean_completed().await;
    // Refunded after completing: charged, refunded once, three mails.
    let refunded = f.order("CANCELLED", Some(TOTAL), true, 3600);
    let tid = f.charge(refunded).await;
    f.refund(&tid).await;
    f.payment(
        refunded,
        "REFUNDED",
        &tid,
        &[("approve", "ok"), ("cancel", "ok")],
    );
    f.mails(
        refunded,
        &[
            ("payment_completed", "SENT"),
            ("order_completed", "SENT"),
            ("order_refunded", "SENT"),
        ],
    )
    .await;
    // Cancelled on the payment page: never charged, the cancellation mail.
    let unpaid = f.order("CANCELLED", None, false, 3600);
    let (tid, _) = f.ready(unpaid).await;
    f.payment(unpaid, "FAILED", &tid, &[("ready", "ok")]);
    f.mails(unpaid, &[("order_cancelled", "SENT")]).await;
    // Still waiting for its shopper, before its deadline.
    let waiting = f.order("PENDING_PAYMENT", None, false, 60);
    let (tid, _) = f.ready(waiting).await;
    f.payment(waiting, "READY", &tid, &[("ready", "ok")]);

    let (code, report) = f.json(&["--quiet-for", "0"]).await;
    assert_eq!(found(&report), BTreeSet::new(), "{report:#}");
    assert_eq!(code, 0);
    assert_eq!(report["orders"]["COMPLETED"], 1);
    assert_eq!(report["orders"]["CANCELLED"], 2);
    assert_eq!(report["not_terminal"], 1);
    assert_eq!(report["mails"], 6);
    assert_eq!(report["ledger_read"], true);

    let text = f.run(&[]).await;
    assert_eq!(text.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&text.stdout);
    assert_eq!(stdout.lines().count(), 1, "only the summary: {stdout}");
    assert!(
        stdout.contains("4 orders") && stdout.contains("0 violation(s)"),
        "{stdout}"
    );
    f.drop_all().await;
}

#[tokio::test]
async fn every_violation_is_reported_with_its_order_and_evidence() {
    let mut f = Fixture::new().await;
    let clean = f.clean_completed().await;
    let mut expected = BTreeSet::new();
    let mut expect = |order: Uuid, invariant: &str| {
        expected.insert((order.to_string(), invariant.to_owned()));
    };

    // Cancelled, but the charge stands at the gateway and in payment-service.
    let order = f.order("CANCELLED", None, false, 3600);
    let tid = f.charge(order).await;
    f.payment(order, "APPROVED", &tid, &[("approve", "ok")]);
    f.mails(order, &[("order_cancelled", "SENT")]).await;
    expect(order, "cancelled_but_charged");

    // Completed, but the shopper never paid.
    let order = f.order("COMPLETED", None, true, 3600);
    let (tid, _) = f.ready(order).await;
    f.payment(order, "READY", &tid, &[("ready", "ok")]);
    f.mails(
        order,
        &[("payment_completed", "SENT"), ("order_completed", "SENT")],
    )
    .await;
    expect(order, "completed_but_unpaid");

    // Refunded twice (payment-service logged two successful cancels).
    let order = f.order("CANCELLED", Some(TOTAL), true, 3600);
    let tid = f.charge(order).await;
    f.refund(&tid).await;
    f.payment(
        order,
        "REFUNDED",
        &tid,
        &[("approve", "ok"), ("cancel", "ok"), ("cancel", "ok")],
    );
    f.mails(
        order,
        &[
            ("payment_completed", "SENT"),
            ("order_completed", "SENT"),
            ("order_refunded", "SENT"),
        ],
    )
    .await;
    expect(order, "refunded_twice");

    // Charged twice: two tids of one order approved at the gateway.
    let order = f.order("COMPLETED", None, true, 3600);
    let first = f.charge(order).await;
    f.charge(order).await;
    f.payment(order, "APPROVED", &first, &[("approve", "ok")]);
    f.mails(
        order,
        &[("payment_completed", "SENT"), ("order_completed", "SENT")],
    )
    .await;
    expect(order, "charged_twice");

    // A mail missing: the order-completed mail failed.
    let order = f.order("COMPLETED", None, true, 3600);
    let tid = f.charge(order).await;
    f.payment(order, "APPROVED", &tid, &[("approve", "ok")]);
    f.mails(
        order,
        &[("payment_completed", "SENT"), ("order_completed", "FAILED")],
    )
    .await;
    expect(order, "mail_missing");

    // A mail repeated (two events, two payment-completed mails) and one unexpected.
    let order = f.order("COMPLETED", None, true, 3600);
    let tid = f.charge(order).await;
    f.payment(order, "APPROVED", &tid, &[("approve", "ok")]);
    f.mails(
        order,
        &[
            ("payment_completed", "SENT"),
            ("payment_completed", "SENT"),
            ("order_completed", "SENT"),
            ("order_cancelled", "SENT"),
        ],
    )
    .await;
    expect(order, "mail_repeated");
    expect(order, "mail_unexpected");

    // Ten minutes past its deadline, still waiting for payment (grace: 5 minutes).
    let order = f.order_with_deadline("PENDING_PAYMENT", None, false, 3600, -600);
    let (tid, _) = f.ready(order).await;
    f.payment(order, "READY", &tid, &[("ready", "ok")]);
    expect(order, "past_deadline_not_terminal");

    // Completed a moment ago, mails not there yet: still settling, not judged.
    f.order("COMPLETED", None, true, 1);

    let (code, report) = f.json(&[]).await;
    assert_eq!(found(&report), expected, "{report:#}");
    assert_eq!(code, 1);
    assert_eq!(report["summary"]["mail_repeated"], 1);
    assert_eq!(report["summary"]["charged_twice"], 1);
    let evidence: Vec<&str> = report["violations"]
        .as_array()
        .expect("violations")
        .iter()
        .map(|v| v["evidence"].as_str().expect("evidence"))
        .collect();
    assert!(
        evidence.iter().any(|e| e.contains("2 approved tid(s)")),
        "{evidence:#?}"
    );
    assert!(
        evidence
            .iter()
            .any(|e| e.contains("order_completed") && e.contains("FAILED")),
        "{evidence:#?}"
    );

    // The text form: one tab-separated line per violation, then the summary.
    let text = f.run(&[]).await;
    assert_eq!(text.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&text.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), expected.len() + 1, "{stdout}");
    for (order, invariant) in &expected {
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with(&format!("{order}\t{invariant}\t"))),
            "{order} {invariant} in:\n{stdout}"
        );
    }
    assert!(!stdout.contains(&clean.to_string()), "{stdout}");
    assert!(
        lines.last().expect("summary").contains("8 violation(s)"),
        "{stdout}"
    );

    // With a grace longer than its lateness the pending order is not reported.
    let (_, report) = f.json(&["--grace", "900"]).await;
    assert_eq!(
        report["summary"]["past_deadline_not_terminal"], 0,
        "{report:#}"
    );
    f.drop_all().await;
}

#[tokio::test]
async fn an_unreadable_source_exits_2_without_printing_its_url() {
    let output = Command::new(env!("CARGO_BIN_EXE_saga-audit"))
        .env_clear()
        .args([
            "--order-database-url",
            "postgres://postgres:s3cret-pw@127.0.0.1:1/orders",
            "--payment-database-url",
            "postgres://postgres:s3cret-pw@127.0.0.1:1/payments",
            "--mongodb-uri",
            "mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=500",
        ])
        .output()
        .expect("saga-audit runs");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.is_empty());
    assert!(!stderr.contains("s3cret"), "{stderr}");
    assert!(output.stdout.is_empty());
}

/// Cases 1–2 keep the mail history in PostgreSQL: with `--mail-database-url` it is read
/// from there, and MongoDB is not consulted.
#[tokio::test]
async fn the_blocking_mail_services_history_is_read_from_postgresql() {
    let mut f = Fixture::new().await;
    let clean = f.order("COMPLETED", None, true, 3600);
    let lacking = f.order("COMPLETED", None, true, 3600);
    for order in [clean, lacking] {
        let tid = f.charge(order).await;
        f.payment(
            order,
            "APPROVED",
            &tid,
            &[("ready", "ok"), ("approve", "ok")],
        );
    }
    f.mails_in_postgres(
        clean,
        &[("payment_completed", "SENT"), ("order_completed", "SENT")],
    );
    f.mails_in_postgres(lacking, &[("payment_completed", "SENT")]);
    let mail_db = format!("{}/mail_audit_{}", f.server, f.id);

    let (code, report) = f
        .json(&["--quiet-for", "0", "--mail-database-url", &mail_db])
        .await;
    assert_eq!(
        found(&report),
        BTreeSet::from([(lacking.to_string(), "mail_missing".to_owned())]),
        "{report:#}"
    );
    assert_eq!(code, 1);
    assert_eq!(report["mails"], 3);

    // Read from MongoDB (empty here) both orders lack their mails: the flag chose the source.
    let (_, from_mongo) = f.json(&["--quiet-for", "0"]).await;
    assert!(found(&from_mongo).contains(&(clean.to_string(), "mail_missing".to_owned())));
    f.drop_all().await;
}
