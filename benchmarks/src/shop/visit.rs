//! One shopper's visit ([`Shop::visit`]): place the order, wait for the payment page,
//! approve on it, and optionally wait for the order to be completed.

use super::client::{etag_of, kind, Shop};
use super::recorder::Outcome;
use crate::loopback;
use reqwest::{StatusCode, Url};
use serde_json::{json, Value};
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::time::Instant as TokioInstant;

/// An order the order service accepted (202): what the later steps need of it.
struct Placed {
    id: String,
    /// The order's access token: the shopper reads its own full view with it.
    token: String,
    /// When the 202 arrived: every later latency counts from here.
    at: TokioInstant,
}

/// An order as read, with its `ETag` (the next long poll waits for a change from it).
type View = (Value, Option<String>);

impl Shop {
    /// One shopper's visit. `due` is when it should have started (open loop: its slot
    /// in the schedule; closed loop: now).
    pub async fn visit(&self, due: TokioInstant) -> Outcome {
        let mut outcome = Outcome::default();
        if let Err(kind) = self.steps(due, &mut outcome).await {
            outcome.error = Some(kind);
        }
        outcome
    }

    /// The steps in turn, each latency recorded as soon as its step is done so a later
    /// failure still leaves the earlier ones counted.
    async fn steps(&self, due: TokioInstant, outcome: &mut Outcome) -> Result<(), String> {
        let (placed, first_view) = self.place_order().await?;
        outcome.accept = Some(placed.at - due);
        outcome.order_id = Some(placed.id.clone());
        if self.config.accept_only {
            return Ok(());
        }
        let redirect = self.wait_payment_ready(&placed, first_view).await?;
        outcome.ready = Some(TokioInstant::now() - placed.at);
        outcome.approve = Some(self.approve(&redirect).await?);
        if !self.config.wait_complete {
            return Ok(());
        }
        self.wait_completed(&placed, outcome).await
    }

    /// The order this shopper places; each gets its own customer.
    fn order_body(&self) -> Value {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        json!({
            "customer_id": format!("loadgen-{}-{n}", self.run),
            "customer_email": format!("loadgen-{n}@example.com"),
            "items": [
                { "name": "Load test item", "quantity": 1, "unit_price": 12_000 },
                { "name": "Sticker", "quantity": 2, "unit_price": 1_500 },
            ],
        })
    }

    /// `POST /orders` → 202: the order and the POST answer, its first view.
    async fn place_order(&self) -> Result<(Placed, View), String> {
        let body = self.order_body();
        let url = self
            .config
            .order_url
            .join("orders")
            .map_err(|_| "accept_bad_url".to_owned())?;
        let response = self
            .api
            .post(url)
            .json(&body)
            .send()
            .await
            .map_err(|e| kind("accept", &e))?;
        if response.status() != StatusCode::ACCEPTED {
            return Err(format!("accept_http_{}", response.status().as_u16()));
        }
        let etag = etag_of(&response);
        let order: Value = response.json().await.map_err(|e| kind("accept", &e))?;
        let at = TokioInstant::now();
        let id = order["id"]
            .as_str()
            .ok_or_else(|| "accept_no_id".to_owned())?
            .to_owned();
        let token = order["access_token"]
            .as_str()
            .ok_or_else(|| "accept_no_token".to_owned())?
            .to_owned();
        Ok((Placed { id, token, at }, (order, etag)))
    }

    /// Waits for the payment to be ready: its redirect URL. The answer to the POST is the
    /// first view, and each long poll returns as soon as the order differs from the last
    /// one seen.
    async fn wait_payment_ready(
        &self,
        placed: &Placed,
        first_view: View,
    ) -> Result<String, String> {
        let deadline = placed.at + self.config.step_timeout;
        let (mut order, mut etag) = first_view;
        loop {
            if let Some(url) = order["payment"]["redirect_url"].as_str() {
                return Ok(url.to_owned());
            }
            if order["status"] == "CANCELLED" {
                return Err("cancelled_before_payment_ready".to_owned());
            }
            if TokioInstant::now() >= deadline {
                return Err("payment_ready_timeout".to_owned());
            }
            (order, etag) = self
                .get_order(&placed.id, &placed.token, etag.as_deref(), deadline)
                .await?;
        }
    }

    /// The shopper approves on the payment page: how long that took.
    async fn approve(&self, redirect: &str) -> Result<Duration, String> {
        let redirect = Url::parse(redirect).map_err(|_| "redirect_bad_url".to_owned())?;
        if !loopback::is_loopback_url(&redirect) {
            return Err("redirect_not_loopback".to_owned());
        }
        let approve_started = TokioInstant::now();
        let response = self
            .browser
            .get(redirect)
            .send()
            .await
            .map_err(|e| kind("approve", &e))?;
        let status = response.status();
        let final_host_ok = loopback::is_loopback_url(response.url());
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if !final_host_ok {
            return Err("approve_left_loopback".to_owned());
        }
        if status != StatusCode::OK {
            return Err(format!("approve_http_{}", status.as_u16()));
        }
        if body["status"] != "APPROVED" {
            return Err(format!(
                "approve_status_{}",
                body["status"].as_str().unwrap_or("missing")
            ));
        }
        Ok(approve_started.elapsed())
    }

    /// Long-polls until the order is COMPLETED, recording the end-to-end latency as the
    /// shopper saw it and as the server's clock tells it.
    async fn wait_completed(&self, placed: &Placed, outcome: &mut Outcome) -> Result<(), String> {
        let deadline = TokioInstant::now() + self.config.step_timeout;
        let mut etag = None;
        loop {
            let order;
            (order, etag) = self
                .get_order(&placed.id, &placed.token, etag.as_deref(), deadline)
                .await?;
            match order["status"].as_str() {
                Some("COMPLETED") => {
                    outcome.end_to_end = Some(placed.at.elapsed());
                    outcome.end_to_end_server_ms = server_end_to_end_ms(&order);
                    return Ok(());
                }
                Some("CANCELLED") => return Err("cancelled_after_approval".to_owned()),
                _ => {}
            }
            if TokioInstant::now() >= deadline {
                return Err("complete_timeout".to_owned());
            }
        }
    }
}

/// `completed_at - created_at` of a completed order, when both are there.
fn server_end_to_end_ms(order: &Value) -> Option<i64> {
    let at = |field: &str| {
        order[field]
            .as_str()
            .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
    };
    let (created, completed) = (at("created_at")?, at("completed_at")?);
    Some((completed - created).num_milliseconds())
}
