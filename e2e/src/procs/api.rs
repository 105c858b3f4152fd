//! What a scenario reads from the services and the simulator over HTTP (orders,
//! payments, the mail history, metrics, the gateway's ledger), and the simulator's
//! faults it sets. Reads retry through a service's restart.

use super::{Part, Placed, ProcStack};
use anyhow::bail;
use kakaopay::sim::Ledger;
use serde_json::Value;
use std::time::{Duration, Instant};
use uuid::Uuid;

impl ProcStack {
    /// `PUT /__sim/faults` with `patch` (only the fields present change).
    pub async fn sim_faults(&self, patch: Value) -> anyhow::Result<Value> {
        let response = self
            .http
            .put(format!("{}/__sim/faults", self.url(Part::KakaoPay)))
            .json(&patch)
            .send()
            .await?;
        let status = response.status();
        let body: Value = response.json().await?;
        anyhow::ensure!(status.is_success(), "PUT /__sim/faults: {status} {body}");
        Ok(body)
    }

    /// The simulator's ledger (`GET /__sim/ledger`).
    pub async fn ledger(&self) -> anyhow::Result<Ledger> {
        Ok(self
            .http
            .get(format!("{}/__sim/ledger", self.url(Part::KakaoPay)))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?)
    }

    // ----- reading the services -----

    /// The sum of every series of Prometheus metric `name` at `part`'s `/metrics` (0 when
    /// absent): proof that a fault reached the service (retries, errors). `name` may name
    /// labels the series must carry: `payment_gateway_requests_total{outcome="unknown"}`.
    pub async fn metric(&self, part: Part, name: &str) -> anyhow::Result<f64> {
        let text = self
            .http
            .get(format!("{}/metrics", self.url(part)))
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?;
        Ok(metric_sum(&text, name))
    }

    /// `GET {url}` as JSON, retried for a few seconds through connection errors and 5xx.
    pub async fn get_json(&self, url: &str) -> anyhow::Result<Value> {
        get_json(&self.http, url, None).await
    }

    pub async fn get_order(&self, id: Uuid) -> anyhow::Result<Value> {
        self.get_json(&format!("{}/orders/{id}", self.url(Part::Order)))
            .await
    }

    /// The order's saga timeline, as its shopper sees it (with the order's token).
    pub async fn timeline(&self, order: &Placed) -> anyhow::Result<Value> {
        let url = format!("{}/orders/{}/timeline", self.url(Part::Order), order.id);
        get_json(&self.http, &url, Some(&order.token)).await
    }

    /// Long-polls order `id` (see [`crate::watch::OrderWatch`]) until `check` finds what
    /// it looks for; an error after [`crate::DEADLINE`] or when order-service refuses.
    pub async fn watch_order<T>(
        &self,
        id: Uuid,
        check: impl Fn(&Value) -> Option<T>,
    ) -> anyhow::Result<T> {
        use crate::watch::{OrderWatch, WatchError};
        let mut watch = OrderWatch::new(&self.url(Part::Order), id);
        let started = Instant::now();
        loop {
            let last = match watch.next(&self.http).await {
                Ok(order) => match check(&order) {
                    Some(found) => return Ok(found),
                    None => order.to_string(),
                },
                Err(WatchError::Retry(after, error)) => {
                    tokio::time::sleep(after).await;
                    error
                }
                Err(WatchError::Refused(status, body)) => bail!("order {id}: {status} {body}"),
            };
            if started.elapsed() > crate::DEADLINE {
                bail!(
                    "order {id}: not there after {:?} (last: {last})",
                    crate::DEADLINE
                );
            }
        }
    }

    /// The payment rows of an order (`GET /payments?order_id=`).
    pub async fn payments_of(&self, order_id: Uuid) -> anyhow::Result<Value> {
        let url = format!("{}/payments?order_id={order_id}", self.url(Part::Payment));
        get_json(&self.http, &url, Some(&self.payment_token)).await
    }

    /// One payment with its `gateway_calls`.
    pub async fn payment(&self, payment_id: &str) -> anyhow::Result<Value> {
        let url = format!("{}/payments/{payment_id}", self.url(Part::Payment));
        get_json(&self.http, &url, Some(&self.payment_token)).await
    }

    /// Every history record of an order (all pages of `GET /notifications?order_id=`).
    /// Asked of a running notifier instance (a scenario may have stopped the first).
    pub async fn notifications(&self, order_id: Uuid) -> anyhow::Result<Vec<Value>> {
        let notifier = [Part::Notifier, Part::Notifier2, Part::Notifier3]
            .into_iter()
            .find(|&part| self.pid(part).is_some())
            .unwrap_or(Part::Notifier);
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut url = format!(
                "{}/notifications?order_id={order_id}&limit=200",
                self.url(notifier)
            );
            if let Some(cursor) = &cursor {
                url.push_str(&format!("&cursor={cursor}"));
            }
            let page = get_json(&self.http, &url, Some(&self.notifier_token)).await?;
            items.extend(page["items"].as_array().cloned().unwrap_or_default());
            match page["next_cursor"].as_str() {
                Some(next) if !next.is_empty() => cursor = Some(next.to_owned()),
                _ => return Ok(items),
            }
        }
    }
}

/// `GET url` as JSON: retries connection errors and 5xx for up to 10 s (a service being
/// restarted), fails at once on 4xx.
pub(crate) async fn get_json(
    http: &reqwest::Client,
    url: &str,
    token: Option<&str>,
) -> anyhow::Result<Value> {
    let started = Instant::now();
    let mut wait = Duration::from_millis(50);
    loop {
        let mut request = http.get(url);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let error = match request.send().await {
            Ok(response) if response.status().is_success() => match response.json().await {
                Ok(value) => return Ok(value),
                Err(error) => anyhow::anyhow!("GET {url}: {error}"),
            },
            Ok(response) if response.status().is_client_error() => {
                let status = response.status();
                let body = response.text().await.unwrap_or_default();
                bail!("GET {url}: {status} {body}");
            }
            Ok(response) => anyhow::anyhow!("GET {url}: {}", response.status()),
            Err(error) => anyhow::anyhow!("GET {url}: {error}"),
        };
        if started.elapsed() > Duration::from_secs(10) {
            return Err(error);
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(1));
    }
}

/// The sum of the series of `selector` (`name` or `name{label="value",…}`) in a
/// Prometheus text exposition.
fn metric_sum(exposition: &str, selector: &str) -> f64 {
    let (name, labels) = match selector.split_once('{') {
        Some((name, labels)) => (name, labels.trim_end_matches('}')),
        None => (selector, ""),
    };
    let wanted: Vec<&str> = labels.split(',').filter(|l| !l.is_empty()).collect();
    exposition
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(name)?;
            let (series, value) = rest.rsplit_once(' ')?;
            let series = series.trim();
            let carries = |label: &&str| {
                series
                    .trim_start_matches('{')
                    .trim_end_matches('}')
                    .split(',')
                    .any(|l| l == *label)
            };
            let named = series.is_empty() || series.starts_with('{');
            (named && wanted.iter().all(carries)).then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

#[cfg(test)]
mod metric_tests {
    use super::metric_sum;

    const TEXT: &str = "# TYPE t counter\n\
        t{endpoint=\"approve\",outcome=\"unknown\"} 2\n\
        t{endpoint=\"cancel\",outcome=\"unknown\"} 3\n\
        t{endpoint=\"approve\",outcome=\"ok\"} 5\n\
        t_other 7\n\
        u 11\n";

    #[test]
    fn a_selector_sums_the_series_carrying_its_labels() {
        assert_eq!(metric_sum(TEXT, "t"), 10.0);
        assert_eq!(metric_sum(TEXT, "t{outcome=\"unknown\"}"), 5.0);
        assert_eq!(
            metric_sum(TEXT, "t{endpoint=\"approve\",outcome=\"ok\"}"),
            5.0
        );
        assert_eq!(metric_sum(TEXT, "u"), 11.0);
        assert_eq!(metric_sum(TEXT, "absent"), 0.0);
    }
}
