//! Observability checks: the dashboards' and alerts' queries against a real Prometheus
//! scraping the running shop, and one trace id per order across the three services'
//! JSON logs. Run with `infra/stack test` (needs `/usr/bin/prometheus`: Debian package
//! `prometheus`, installed by `infra/stack`).

mod dashboards;
mod metrics;
mod prometheus;
mod traces;
