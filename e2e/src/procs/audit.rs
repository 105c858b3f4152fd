//! Every scenario ends by running the operator's own check, `saga-audit` (the real
//! binary, `--json`), on the stack's databases, mail history and ledger: zero violations
//! and every order terminal.

use super::invariants::Check;
use super::{Part, ProcStack};
use serde_json::Value;
use std::path::Path;
use std::process::Command;

/// The arguments that point saga-audit at `stack`'s sources.
pub fn audit_args(stack: &ProcStack) -> Vec<String> {
    vec![
        "--order-database-url".into(),
        stack.database_url("orders"),
        "--payment-database-url".into(),
        stack.database_url("payments"),
        "--mongodb-uri".into(),
        format!("mongodb://127.0.0.1:{}", stack.ports.mongo),
        "--mongodb-database".into(),
        format!("notifier_{}", stack.id),
        "--kakaopay-ledger".into(),
        format!("{}/__sim/ledger", stack.url(Part::KakaoPay)),
    ]
}

/// Runs `bin` (saga-audit) on `stack` once the system is quiet (`--quiet-for 0`: every
/// order is judged) and turns its report into two checks. Returns them with the report.
pub async fn saga_audit(stack: &ProcStack, bin: &Path) -> (Vec<Check>, Value) {
    let mut command = Command::new(bin);
    command
        .env_clear()
        .args(audit_args(stack))
        .args(["--quiet-for", "0", "--json"]);
    let output = match tokio::task::spawn_blocking(move || command.output()).await {
        Ok(Ok(output)) => output,
        other => {
            let problem = format!("saga-audit did not run: {other:?}");
            return (
                vec![Check::new("saga-audit ran", vec![problem])],
                Value::Null,
            );
        }
    };
    let report: Value = match serde_json::from_slice(&output.stdout) {
        Ok(report) if output.status.code().is_some_and(|c| c <= 1) => report,
        _ => {
            let problem = format!(
                "saga-audit exited {:?}: {}{}",
                output.status.code(),
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
            return (
                vec![Check::new("saga-audit ran", vec![problem])],
                Value::Null,
            );
        }
    };
    let violations = report["violations"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|v| format!("{} {}: {}", v["order_id"], v["invariant"], v["evidence"]))
        .collect();
    let not_terminal = report["not_terminal"].as_u64().unwrap_or(u64::MAX);
    let terminal = if not_terminal == 0 {
        vec![]
    } else {
        vec![format!(
            "{not_terminal} order(s) not terminal; orders by status {}",
            report["orders"]
        )]
    };
    (
        vec![
            Check::new("saga-audit finds no violated invariant", violations),
            Check::new("saga-audit finds every order terminal", terminal),
        ],
        report,
    )
}
