//! The Grafana dashboards (`infra/grafana/dashboards/*.json`): well-formed for Grafana's
//! file provisioning, and the source of PromQL expressions the metrics test evaluates.

use crate::prometheus::infra_dir;
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::PathBuf;

pub fn dashboard_files() -> Vec<PathBuf> {
    let dir = infra_dir().join("grafana/dashboards");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .collect();
    files.sort();
    files
}

pub fn load(path: &PathBuf) -> Value {
    let text = std::fs::read_to_string(path).expect("dashboard readable");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: not JSON: {e}", path.display()))
}

/// The datasource uids the provisioning files declare (`uid:` lines of
/// `provisioning/datasources/*.yml`; the files are flat enough not to need a YAML parser).
fn provisioned_datasource_uids() -> BTreeSet<String> {
    let dir = infra_dir().join("grafana/provisioning/datasources");
    let mut uids = BTreeSet::new();
    for entry in std::fs::read_dir(&dir).expect("datasources folder") {
        let text = std::fs::read_to_string(entry.expect("entry").path()).expect("readable");
        for line in text.lines() {
            if let Some(uid) = line.trim().strip_prefix("uid:") {
                uids.insert(uid.trim().trim_matches('"').to_owned());
            }
        }
    }
    uids
}

/// Grafana's built-in variables in a query, replaced by what Grafana would put there
/// for a 1-hour view scraped every second.
pub fn substitute_grafana_variables(expr: &str) -> String {
    expr.replace("$__rate_interval", "1m")
        .replace("$__interval", "15s")
        .replace("$__range", "1h")
}

/// Every query of every dashboard: (where, expression with Grafana variables replaced).
pub fn expressions() -> Vec<(String, String)> {
    let mut found = Vec::new();
    for path in dashboard_files() {
        let dashboard = load(&path);
        let name = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        for panel in panels(&dashboard) {
            for target in panel["targets"].as_array().into_iter().flatten() {
                if let Some(expr) = target["expr"].as_str() {
                    found.push((
                        format!("{name} / {}", panel["title"].as_str().unwrap_or("?")),
                        substitute_grafana_variables(expr),
                    ));
                }
            }
        }
    }
    found
}

/// Top-level panels and the panels inside rows.
fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut all = Vec::new();
    for panel in dashboard["panels"].as_array().into_iter().flatten() {
        all.push(panel);
        all.extend(panel["panels"].as_array().into_iter().flatten());
    }
    all
}

#[test]
fn dashboards_are_well_formed_for_grafana_provisioning() {
    let datasources = provisioned_datasource_uids();
    assert!(
        !datasources.is_empty(),
        "a provisioned datasource with a uid"
    );
    let files = dashboard_files();
    assert!(files.len() >= 4, "overview + one dashboard per service");
    let mut uids = BTreeSet::new();
    let mut problems = Vec::new();
    for path in &files {
        let dashboard = load(path);
        let name = path.display().to_string();
        let mut problem = |what: String| problems.push(format!("{name}: {what}"));
        for key in ["title", "uid"] {
            if dashboard[key].as_str().is_none_or(str::is_empty) {
                problem(format!("`{key}` missing"));
            }
        }
        let uid = dashboard["uid"].as_str().unwrap_or_default();
        if uid.len() > 40 || !uids.insert(uid.to_owned()) {
            problem(format!("uid {uid:?} too long or not unique"));
        }
        if !dashboard["schemaVersion"].is_u64() {
            problem("`schemaVersion` missing".into());
        }
        if !dashboard["id"].is_null() {
            problem("`id` must be null in a provisioned dashboard".into());
        }
        let panels = panels(&dashboard);
        if panels.is_empty() {
            problem("no panels".into());
        }
        let mut ids = BTreeSet::new();
        let mut cells: Vec<(String, [u64; 4])> = Vec::new();
        for panel in panels {
            let title = panel["title"].as_str().unwrap_or_default().to_owned();
            if title.is_empty() || panel["type"].as_str().is_none_or(str::is_empty) {
                problem(format!("a panel without type or title: {panel}"));
            }
            if !panel["id"].as_u64().is_some_and(|id| ids.insert(id)) {
                problem(format!("panel {title:?}: id missing or repeated"));
            }
            let grid = &panel["gridPos"];
            let pos = ["x", "y", "w", "h"].map(|k| grid[k].as_u64());
            let [Some(x), Some(y), Some(w), Some(h)] = pos else {
                problem(format!("panel {title:?}: gridPos needs integer x, y, w, h"));
                continue;
            };
            if w == 0 || h == 0 || x + w > 24 {
                problem(format!(
                    "panel {title:?}: gridPos outside the 24-column grid"
                ));
            }
            for (other, [ox, oy, ow, oh]) in &cells {
                if x < ox + ow && ox < &(x + w) && y < oy + oh && oy < &(y + h) {
                    problem(format!("panels {title:?} and {other:?} overlap"));
                }
            }
            cells.push((title.clone(), [x, y, w, h]));
            if panel["type"] == "row" {
                continue;
            }
            let panel_ds = panel["datasource"]["uid"].as_str().unwrap_or_default();
            if !datasources.contains(panel_ds) {
                problem(format!(
                    "panel {title:?}: datasource uid {panel_ds:?} is not provisioned"
                ));
            }
            let targets = panel["targets"].as_array().cloned().unwrap_or_default();
            if targets.is_empty() {
                problem(format!("panel {title:?}: no targets"));
            }
            for target in targets {
                if target["expr"].as_str().is_none_or(|e| e.trim().is_empty()) {
                    problem(format!("panel {title:?}: a target without `expr`"));
                }
                if target["refId"].as_str().is_none_or(str::is_empty) {
                    problem(format!("panel {title:?}: a target without `refId`"));
                }
                let target_ds = target["datasource"]["uid"].as_str().unwrap_or(panel_ds);
                if !datasources.contains(target_ds) {
                    problem(format!(
                        "panel {title:?}: target datasource {target_ds:?} is not provisioned"
                    ));
                }
                let expr = substitute_grafana_variables(target["expr"].as_str().unwrap_or(""));
                if expr.contains('$') {
                    problem(format!(
                        "panel {title:?}: `{expr}` uses a variable no dashboard defines"
                    ));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
