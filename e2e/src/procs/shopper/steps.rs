//! One shopper's steps: place the order, follow or cancel the payment page, cancel a
//! completed order for its refund. Each retries with [`Backoff`] through outages until
//! the shopper's deadline.

use super::{Intent, Placed, Progress, Shopper};
use serde_json::{json, Value};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use uuid::Uuid;

impl Shopper {
    /// `POST /orders` until it is accepted; returns the order id, total and token.
    pub(super) async fn place(
        &self,
        n: usize,
        email: &str,
        progress: &Progress,
        deadline: Instant,
    ) -> Result<(Uuid, i64, String), String> {
        let body = json!({
            "customer_id": format!("shopper-{}-{n}", self.tag),
            "customer_email": email,
            "items": [
                {"name": "아메리카노", "quantity": 1 + n % 3, "unit_price": 4500},
                {"name": "Cookie", "quantity": 1, "unit_price": 1000 + (n % 5) * 500}
            ]
        });
        let url = format!("{}/orders", self.order_url);
        let mut backoff = Backoff::new(deadline);
        loop {
            let error = match self.http.post(&url).json(&body).send().await {
                Ok(response) if response.status() == 202 => {
                    let order: Value = response
                        .json()
                        .await
                        .map_err(|e| format!("order {n}: accepted, body unreadable: {e}"))?;
                    let id = order["id"]
                        .as_str()
                        .and_then(|id| id.parse().ok())
                        .ok_or_else(|| format!("order {n}: no id in {order}"))?;
                    let total = order["total_amount"].as_i64().unwrap_or_default();
                    let token = order["access_token"]
                        .as_str()
                        .ok_or_else(|| format!("order {n}: no access_token"))?;
                    return Ok((id, total, token.to_owned()));
                }
                Ok(response) if response.status().is_client_error() => {
                    let status = response.status();
                    let text = response.text().await.unwrap_or_default();
                    return Err(format!("order {n}: refused {status}: {text}"));
                }
                Ok(response) => format!("{}", response.status()),
                Err(error) => error.to_string(),
            };
            progress.retries.fetch_add(1, Ordering::SeqCst);
            backoff
                .wait()
                .await
                .map_err(|elapsed| format!("order {n}: not accepted after {elapsed:?}: {error}"))?;
        }
    }

    /// Acts on an accepted order as `order.intent` says.
    pub(super) async fn act(
        &self,
        order: &mut Placed,
        progress: &Progress,
        mut pay: tokio::sync::watch::Receiver<bool>,
        deadline: Instant,
    ) -> Result<(), String> {
        let page = self.redirect_url(order.id, deadline).await;
        progress.at_page.fetch_add(1, Ordering::SeqCst);
        let Some(redirect) = page? else {
            return Err("the payment failed before it was ready".to_owned());
        };
        if order.intent == Intent::Abandon {
            return Ok(()); // never pays, so never waits for the gate
        }
        let gate = pay.wait_for(|open| *open);
        match tokio::time::timeout_at(tokio::time::Instant::from_std(deadline), gate).await {
            Ok(Ok(_)) => {}
            Ok(Err(_)) => return Err("the load ended before the shopper could pay".to_owned()),
            Err(_) => return Err("held at the payment page past the shopper's time".to_owned()),
        }
        match order.intent {
            Intent::Abandon => Ok(()),
            Intent::Cancel => {
                let mut url = url::Url::parse(&redirect).map_err(|e| e.to_string())?;
                url.query_pairs_mut().append_pair("action", "cancel");
                self.visit_until(
                    order.id,
                    url.as_str(),
                    progress,
                    deadline,
                    |status, body| status == 200 || body.is_some_and(|b| b["status"] == "FAILED"),
                )
                .await
            }
            Intent::Approve | Intent::Refund => {
                order.approved = self
                    .approve(order.id, &redirect, progress, deadline)
                    .await?;
                if order.intent == Intent::Refund && order.approved {
                    self.until_status(order.id, "COMPLETED", deadline).await?;
                    self.cancel_order(order.id, &order.token, progress, deadline)
                        .await?;
                    order.cancel_requested = true;
                }
                Ok(())
            }
        }
    }

    /// The order as it is now (one plain read, after a failed step).
    async fn get_order(&self, id: Uuid) -> Option<Value> {
        let response = self
            .http
            .get(format!("{}/orders/{id}", self.order_url))
            .send()
            .await
            .ok()?;
        if !response.status().is_success() {
            return None;
        }
        response.json().await.ok()
    }

    /// Long-polls the order (see [`crate::watch::OrderWatch`]) until `found` says what
    /// it is waiting for; a failed request is retried with backoff through outages.
    async fn watch<T>(
        &self,
        id: Uuid,
        deadline: Instant,
        found: impl Fn(&Value) -> Option<T>,
    ) -> Result<T, String> {
        let mut watch = crate::watch::OrderWatch::new(&self.order_url, id);
        let mut backoff = Backoff::new(deadline);
        let mut last = String::new();
        loop {
            match watch.next(&self.http).await {
                Ok(order) => {
                    if let Some(value) = found(&order) {
                        return Ok(value);
                    }
                    last = order["status"].to_string();
                    backoff.check()
                }
                Err(error) => {
                    tracing::debug!(?error, "Order not read; trying again.");
                    backoff.wait().await
                }
            }
            .map_err(|elapsed| format!("{last} after {elapsed:?}"))?;
        }
    }

    /// Waits until the order's payment is ready (`Some(url)`) or the order was cancelled
    /// before (`None`: the payment failed, e.g. the gateway was down).
    async fn redirect_url(&self, id: Uuid, deadline: Instant) -> Result<Option<String>, String> {
        self.watch(id, deadline, |order| {
            match order["payment"]["redirect_url"].as_str() {
                Some(url) => Some(Some(url.to_owned())),
                None => (order["status"] == "CANCELLED").then_some(None),
            }
        })
        .await
        .map_err(|last| format!("no payment redirect URL: {last}"))
    }

    async fn until_status(&self, id: Uuid, status: &str, deadline: Instant) -> Result<(), String> {
        self.watch(id, deadline, |order| {
            (order["status"] == status).then_some(())
        })
        .await
        .map_err(|last| format!("not {status}: last {last}"))
    }

    /// Follows the payment page (auto mode approves) until the approval callback says
    /// `APPROVED`, the order completes, or the payment is certainly not approved
    /// (`Ok(false)`: e.g. declined, or cancelled meanwhile).
    async fn approve(
        &self,
        id: Uuid,
        redirect: &str,
        progress: &Progress,
        deadline: Instant,
    ) -> Result<bool, String> {
        let mut backoff = Backoff::new(deadline);
        loop {
            let mut last = match self.http.get(redirect).send().await {
                Ok(response) => {
                    let status = response.status();
                    let body: Option<Value> = response.json().await.ok();
                    match body.as_ref().and_then(|b| b["status"].as_str()) {
                        Some("APPROVED" | "REFUNDING" | "REFUNDED") if status == 200 => {
                            return Ok(true)
                        }
                        Some("FAILED") => return Ok(false),
                        _ => format!("{status} {}", body.unwrap_or_default()),
                    }
                }
                Err(error) => error.to_string(),
            };
            // The callback may have failed after the approval went through (a restart):
            // the order knows.
            if let Some(order) = self.get_order(id).await {
                match order["status"].as_str() {
                    Some("COMPLETED" | "CANCELLING") => return Ok(true),
                    Some("CANCELLED") => return Ok(false),
                    status => last.push_str(&format!(" (order {})", status.unwrap_or("?"))),
                }
            }
            progress.retries.fetch_add(1, Ordering::SeqCst);
            backoff
                .wait()
                .await
                .map_err(|elapsed| format!("approval not through after {elapsed:?}: {last}"))?;
        }
    }

    /// GETs `url` until `done(status, body)` or the order is cancelled.
    async fn visit_until(
        &self,
        id: Uuid,
        url: &str,
        progress: &Progress,
        deadline: Instant,
        done: impl Fn(u16, Option<&Value>) -> bool,
    ) -> Result<(), String> {
        let mut backoff = Backoff::new(deadline);
        loop {
            let last = match self.http.get(url).send().await {
                Ok(response) => {
                    let status = response.status().as_u16();
                    let body: Option<Value> = response.json().await.ok();
                    if done(status, body.as_ref()) {
                        return Ok(());
                    }
                    format!("{status} {}", body.unwrap_or_default())
                }
                Err(error) => error.to_string(),
            };
            if self
                .get_order(id)
                .await
                .is_some_and(|order| order["status"] == "CANCELLED")
            {
                return Ok(());
            }
            progress.retries.fetch_add(1, Ordering::SeqCst);
            backoff
                .wait()
                .await
                .map_err(|elapsed| format!("{url} not through after {elapsed:?}: {last}"))?;
        }
    }

    /// `POST /orders/{id}/cancel` until accepted.
    async fn cancel_order(
        &self,
        id: Uuid,
        token: &str,
        progress: &Progress,
        deadline: Instant,
    ) -> Result<(), String> {
        let url = format!("{}/orders/{id}/cancel", self.order_url);
        let mut backoff = Backoff::new(deadline);
        loop {
            let last = match self.http.post(&url).bearer_auth(token).send().await {
                Ok(response) if response.status().is_success() => return Ok(()),
                Ok(response) => {
                    let status = response.status();
                    format!("{status} {}", response.text().await.unwrap_or_default())
                }
                Err(error) => error.to_string(),
            };
            progress.retries.fetch_add(1, Ordering::SeqCst);
            backoff
                .wait()
                .await
                .map_err(|elapsed| format!("cancel not accepted after {elapsed:?}: {last}"))?;
        }
    }
}

/// Doubling waits until the order's deadline.
struct Backoff {
    started: Instant,
    deadline: Instant,
    wait: Duration,
    max: Duration,
}

impl Backoff {
    /// For retrying a failed request: 100 ms doubling to 2 s.
    fn new(deadline: Instant) -> Self {
        Self {
            started: Instant::now(),
            deadline,
            wait: Duration::from_millis(100),
            max: Duration::from_secs(2),
        }
    }

    /// `Err(time spent on this step)` once the order's deadline has passed.
    fn check(&self) -> Result<(), Duration> {
        if Instant::now() > self.deadline {
            return Err(self.started.elapsed());
        }
        Ok(())
    }

    /// Sleeps before the next try; `Err(time spent on this step)` once the order's
    /// deadline has passed.
    async fn wait(&mut self) -> Result<(), Duration> {
        let elapsed = self.started.elapsed();
        if Instant::now() > self.deadline {
            return Err(elapsed);
        }
        tokio::time::sleep(self.wait).await;
        self.wait = (self.wait * 2).min(self.max);
        Ok(())
    }
}
