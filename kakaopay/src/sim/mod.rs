//! In-memory simulator of the Kakao Pay online single-payment API.
//!
//! Serves `POST /online/v1/payment/{ready,approve,cancel,order}` with the
//! documented fields, statuses and error codes, plus test endpoints:
//!
//! - `GET /__sim/pay/{tid}[?action=approve|cancel|fail]`: the shopper's payment
//!   page (auto mode approves at once; manual mode shows three links).
//! - `GET /__sim/ledger`: per-tid record of what happened (see [`Ledger`]).
//! - `GET|PUT /__sim/faults`: read / partially update the fault knobs
//!   ([`Faults`] plus `mode` and `tid_ttl_secs`).
//! - `POST /__sim/clock/advance` `{"secs": N}`: move the simulator's clock.
//! - `GET /healthz`.
//! - `GET /openapi.json`: the OpenAPI 3.1 document of all of these ([`routes()`] is
//!   their one table, which `api_doc`'s tests hold it against).
//!
//! Use [`spawn`] to run it inside a test; the `kakaopay-sim` binary runs it
//! standalone.

mod api_doc;
mod error;
mod faults;
mod ids;
mod ledger;
mod payment;
mod routes;
mod schema;
mod shopper;
mod state;
mod validate;

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::time::Duration;

use actix_web::dev::ServerHandle;
use actix_web::http::Method as HttpMethod;
use actix_web::{web, App, HttpServer};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use url::Url;

pub use faults::{Faults, FaultsView, OutageWindow, PerEndpoint, LOST_ANSWER_HOLD};
pub use ledger::{Ledger, LedgerEntry};

use crate::client::{KakaoPayConfig, DEFAULT_TIMEOUT, TEST_CID};
use faults::Knobs;
use state::SimState;

/// Every route of the simulator, in one table that actix-web mounts ([`configure`]) and
/// the document's test lists.
pub fn routes<R: shared_events::routes::Router>(r: &mut R) {
    r.route(HttpMethod::POST, "/online/v1/payment/ready", routes::ready)
        .route(
            HttpMethod::POST,
            "/online/v1/payment/approve",
            routes::approve,
        )
        .route(
            HttpMethod::POST,
            "/online/v1/payment/cancel",
            routes::cancel,
        )
        .route(HttpMethod::POST, "/online/v1/payment/order", routes::order)
        .route(HttpMethod::GET, "/__sim/pay/{tid}", shopper::page)
        .route(HttpMethod::GET, "/__sim/ledger", routes::ledger)
        .route(HttpMethod::GET, "/__sim/faults", routes::get_faults)
        .route(HttpMethod::PUT, "/__sim/faults", routes::put_faults)
        .route(
            HttpMethod::POST,
            "/__sim/clock/advance",
            routes::advance_clock,
        )
        .route(HttpMethod::GET, "/healthz", shared_events::http::healthz)
        .route(HttpMethod::GET, "/openapi.json", api_doc::openapi_json);
}

/// The routes, and Kakao's `-404` for every other request.
fn configure(cfg: &mut web::ServiceConfig) {
    shared_events::routes::mount(cfg, routes);
    cfg.default_service(web::to(routes::not_found));
}

/// Secret key the simulator accepts unless configured otherwise. It is a
/// simulator-only value; it must never be a real Kakao key.
pub const DEFAULT_SECRET_KEY: &str = "DEV-local-secret";

/// Default TID lifetime (15 min, as reported on Kakao's forum; unconfirmed).
pub const DEFAULT_TID_TTL: Duration = Duration::from_secs(900);

/// Payment method the simulated shopper pays with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Method {
    Card,
    Money,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Card => "CARD",
            Self::Money => "MONEY",
        }
    }
}

/// What the shopper page does when opened without `?action=`.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    Serialize,
    Deserialize,
    clap::ValueEnum,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum SimMode {
    /// Approve immediately (302 to `approval_url?pg_token=…`).
    #[default]
    Auto,
    /// Show a page with approve / cancel / fail links.
    Manual,
}

/// Simulator settings.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub host: IpAddr,
    /// 0 picks a free port.
    pub port: u16,
    /// Base of the shopper page links; default `http://<host>:<port>/`
    /// (`127.0.0.1` when bound to an unspecified address).
    pub public_url: Option<Url>,
    pub secret_key: SecretString,
    pub cid: String,
    pub mode: SimMode,
    pub tid_ttl: Duration,
    pub faults: Faults,
    /// An outage scheduled relative to start-up.
    pub outage_window: Option<OutageWindow>,
    /// actix worker threads; 1 is plenty for tests.
    pub workers: usize,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 0,
            public_url: None,
            secret_key: SecretString::from(DEFAULT_SECRET_KEY),
            cid: TEST_CID.to_owned(),
            mode: SimMode::Auto,
            tid_ttl: DEFAULT_TID_TTL,
            faults: Faults::default(),
            outage_window: None,
            workers: 1,
        }
    }
}

/// A running simulator. Dropping it stops the server, so keep it alive for
/// as long as the test needs it (`let _sim = ...`, not `let _ = ...`).
pub struct SimHandle {
    /// `http://127.0.0.1:<port>/`: the API base URL for the client.
    pub base_url: Url,
    pub port: u16,
    state: web::Data<SimState>,
    secret_key: SecretString,
    server: ServerHandle,
}

impl std::fmt::Debug for SimHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimHandle")
            .field("base_url", &self.base_url.as_str())
            .finish_non_exhaustive()
    }
}

/// Binds `host:port` and starts the simulator on the current Tokio runtime
/// (works under `#[tokio::test]`, `#[tokio::main]` and `#[actix_web::main]`).
pub async fn spawn(config: SimConfig) -> std::io::Result<SimHandle> {
    let listener = TcpListener::bind(SocketAddr::new(config.host, config.port))?;
    let addr = listener.local_addr()?;
    let base_url = local_url(addr);
    let public_url = with_trailing_slash(
        config
            .public_url
            .clone()
            .unwrap_or_else(|| base_url.clone()),
    );
    let knobs = Knobs::new(
        config.faults.clone(),
        config.mode,
        config.tid_ttl,
        config.outage_window,
    );
    let state = web::Data::new(SimState::new(
        config.cid.clone(),
        config.secret_key.clone(),
        public_url,
        knobs,
    ));
    let app_state = state.clone();
    let server =
        HttpServer::new(move || App::new().app_data(app_state.clone()).configure(configure))
            .workers(config.workers.max(1))
            // The embedding program owns signal handling.
            .disable_signals()
            .shutdown_timeout(1)
            .listen(listener)?
            .run();
    let handle = server.handle();
    // tokio::spawn rather than actix_web::rt::spawn: the latter needs a
    // LocalSet, which #[tokio::test] does not provide.
    tokio::spawn(async move {
        if let Err(e) = server.await {
            tracing::error!(error = %e, "kakaopay simulator stopped with an error");
        }
    });
    tracing::info!(%addr, "kakaopay simulator listening");
    Ok(SimHandle {
        base_url,
        port: addr.port(),
        state,
        secret_key: config.secret_key,
        server: handle,
    })
}

impl SimHandle {
    /// A client config pointing at this simulator with its key and cid.
    pub fn client_config(&self) -> KakaoPayConfig {
        KakaoPayConfig {
            base_url: self.base_url.clone(),
            secret_key: self.secret_key.clone(),
            cid: self.state.cid.clone(),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Snapshot of every payment.
    pub fn ledger(&self) -> Ledger {
        self.state.ledger()
    }

    /// Replaces the fault knobs (mode and TTL are unchanged; a scheduled outage
    /// window is cleared). Panics on a rate outside 0.0–1.0: a test bug.
    pub fn set_faults(&self, faults: Faults) {
        self.state
            .with_knobs(|k| k.set_faults(faults))
            .unwrap_or_else(|e| panic!("invalid faults: {e}"));
    }

    /// Current knobs, including whether an outage is in effect.
    pub fn faults(&self) -> FaultsView {
        self.state.with_knobs(|k| k.view())
    }

    pub fn set_mode(&self, mode: SimMode) {
        self.state.with_knobs(|k| k.mode = mode);
    }

    pub fn set_tid_ttl(&self, ttl: Duration) {
        self.state.with_knobs(|k| k.tid_ttl = ttl);
    }

    /// Moves the simulator's clock forward, e.g. past the TID TTL.
    pub fn advance_clock(&self, by: Duration) {
        self.state.advance_clock(by);
    }

    /// Stops the server and waits for it (in-flight requests get up to 1 s).
    pub async fn stop(self) {
        self.server.stop(true).await;
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        // The stop command is sent immediately; nothing to await here.
        drop(self.server.stop(false));
    }
}

fn local_url(addr: SocketAddr) -> Url {
    let ip = match addr.ip() {
        ip if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        ip => ip,
    };
    let host = match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    };
    Url::parse(&format!("http://{host}:{}/", addr.port()))
        .expect("an IP address and port form a valid URL")
}

fn with_trailing_slash(mut url: Url) -> Url {
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    url
}
