//! The command line, the scenarios and the plan (what each mode runs).

use anyhow::{bail, Result};
use benchmarks::schedule::Phases;
use benchmarks::shop::Load;
use clap::{Parser, ValueEnum};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Smoke test for CI: a few seconds per scenario, debug builds.
    Short,
    /// The report: 100 orders/s open loop, 20 s per scenario, release builds.
    Full,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Short => "short",
            Mode::Full => "full",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
pub enum ScenarioName {
    /// No fault.
    Baseline,
    /// Every Kakao Pay API call takes 200 ms longer.
    #[value(name = "gateway-200ms")]
    Gateway200ms,
    /// Every Kakao Pay API call takes 1 s longer.
    #[value(name = "gateway-1s")]
    Gateway1s,
    /// Kakao Pay answers 503 to everything for 30 s (short mode: 4 s) during the load.
    #[value(name = "gateway-outage-30s")]
    GatewayOutage30s,
    /// The SMTP server takes 500 ms to accept each mail.
    #[value(name = "smtp-slow-500ms")]
    SmtpSlow500ms,
    /// The order rate ×10 for 10 s (short mode: 2 s) in the middle of the run.
    #[value(name = "burst-10x")]
    Burst10x,
    /// Closed loop of accept-only shoppers at the pgbench concurrency: how many orders
    /// per second the order service can accept.
    Capacity,
}

impl ScenarioName {
    pub const ALL: [ScenarioName; 7] = [
        ScenarioName::Baseline,
        ScenarioName::Gateway200ms,
        ScenarioName::Gateway1s,
        ScenarioName::GatewayOutage30s,
        ScenarioName::SmtpSlow500ms,
        ScenarioName::Burst10x,
        ScenarioName::Capacity,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ScenarioName::Baseline => "baseline",
            ScenarioName::Gateway200ms => "gateway-200ms",
            ScenarioName::Gateway1s => "gateway-1s",
            ScenarioName::GatewayOutage30s => "gateway-outage-30s",
            ScenarioName::SmtpSlow500ms => "smtp-slow-500ms",
            ScenarioName::Burst10x => "burst-10x",
            ScenarioName::Capacity => "capacity",
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            ScenarioName::Baseline => "baseline",
            ScenarioName::Gateway200ms => "gateway +200 ms",
            ScenarioName::Gateway1s => "gateway +1 s",
            ScenarioName::GatewayOutage30s => "gateway outage",
            ScenarioName::SmtpSlow500ms => "SMTP 500 ms/mail",
            ScenarioName::Burst10x => "burst ×10",
            ScenarioName::Capacity => "capacity",
        }
    }
}

/// How many processes of payment and of the notifier a stack runs
/// (`infra/stack up` with `PAYMENT_INSTANCES`, `NOTIFIER_INSTANCES`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Instances {
    pub payment: u8,
    pub notifier: u8,
}

impl Default for Instances {
    fn default() -> Self {
        Self {
            payment: 1,
            notifier: 1,
        }
    }
}

impl Instances {
    /// The variant the full matrix adds for case 3 × gateway-1s.
    pub const TWO: Instances = Instances {
        payment: 2,
        notifier: 2,
    };

    /// `payment=2,notifier=2` (either may be left out: 1).
    pub fn parse(text: &str) -> Result<Self> {
        let mut out = Self::default();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let Some((name, n)) = part.split_once('=') else {
                bail!(
                    "--instances takes service=N pairs, e.g. payment=2,notifier=2 (got '{part}')"
                );
            };
            let n: u8 = n
                .trim()
                .parse()
                .map_err(|_| anyhow::anyhow!("'{part}': N must be 1..8"))?;
            if !(1..=8).contains(&n) {
                bail!("'{part}': N must be 1..8");
            }
            match name.trim() {
                "payment" => out.payment = n,
                "notifier" => out.notifier = n,
                other => bail!("--instances: unknown service '{other}' (payment, notifier)"),
            }
        }
        Ok(out)
    }

    pub fn is_default(self) -> bool {
        self == Self::default()
    }

    /// `None` for one of each; else `payment=2,notifier=2`.
    pub fn variant(self) -> Option<String> {
        (!self.is_default()).then(|| format!("payment={},notifier={}", self.payment, self.notifier))
    }

    /// Why `case` cannot run these instances, if it cannot (mirrors `infra/stack up`).
    pub fn refusal(self, case: u8) -> Option<String> {
        if self.payment > 1 && case == 1 {
            return Some("payment instances > 1 need a Kafka case (2-4)".to_owned());
        }
        if self.notifier > 1 && case <= 2 {
            return Some("notifier instances > 1 need case 3 or 4".to_owned());
        }
        None
    }

    pub fn json(self) -> Value {
        json!({ "payment": self.payment, "notifier": self.notifier })
    }
}

#[derive(Debug, Parser)]
#[command(
    name = "experiment",
    about = "The four-case scenario matrix: per case × scenario a private stack, a load, a drain and the measures from stored timestamps; ceilings; results.json, summary.json, report.md and figures."
)]
pub struct Args {
    #[arg(long, value_enum, default_value_t = Mode::Short)]
    pub mode: Mode,
    /// Cases to run (1..4), comma separated.
    #[arg(long, value_delimiter = ',', default_value = "1,2,3,4")]
    pub cases: Vec<u8>,
    /// Scenarios, comma separated (default: short → baseline,gateway-1s; full → all).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub scenarios: Vec<ScenarioName>,
    /// Processes of payment and the notifier per stack, e.g. `payment=2,notifier=2`:
    /// every selected run uses them (cases that cannot are refused). Without it the full
    /// mode adds one run of case 3 × gateway-1s with payment=2,notifier=2.
    #[arg(long, value_parser = Instances::parse)]
    pub instances: Option<Instances>,
    /// Open-loop rate, orders/s (default: short 20, full 100).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Seconds of load per scenario (default: short 6, full 20; the outage scenario runs
    /// at least outage + 10 s).
    #[arg(long)]
    pub duration: Option<f64>,
    /// Most seconds to wait after the load for every order to end and be mailed
    /// (default: short 15, full 30; always at least until the last checkpoint).
    #[arg(long)]
    pub drain_secs: Option<u64>,
    /// Interval of the shoppers' GET /orders/{id} polls, ms (default: short 100, full 50).
    #[arg(long)]
    pub poll_ms: Option<u64>,
    /// Concurrency of the capacity scenario and of pgbench (the order service's database
    /// pool, ORDER_DB_POOL_SIZE, is 10).
    #[arg(long, default_value_t = 10)]
    pub concurrency: u32,
    /// Build profile of the services `infra/stack up` starts (default: short → debug,
    /// full → release). The binaries must be built (`infra/stack experiment` does it).
    #[arg(long, env = "STACK_PROFILE")]
    pub profile: Option<String>,
    /// Result folder (default: full → benchmarks/results/<UTC date-time>, also copied to
    /// benchmarks/results/latest; short → target/experiment/<UTC date-time>-short).
    #[arg(long)]
    pub out_dir: Option<PathBuf>,
    /// Skip the ceilings (the targets that need them are then not evaluated).
    #[arg(long)]
    pub no_ceilings: bool,
    /// PostgreSQL server for the stacks' databases and pgbench.
    #[arg(
        long,
        env = "POSTGRES_URL",
        default_value = "postgres://postgres@127.0.0.1:5432"
    )]
    pub postgres_url: String,
    /// Seconds `infra/stack up` may take.
    #[arg(long, default_value_t = 240)]
    pub up_timeout_secs: u64,
    /// Hide the progress bars.
    #[arg(long)]
    pub quiet: bool,
}

/// Everything a run needs to know about its mode.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    pub full: bool,
    pub rate: f64,
    pub duration: Duration,
    pub drain: Duration,
    pub poll: Duration,
    pub step_timeout: Duration,
    pub outage_after: Duration,
    pub outage_length: Duration,
    pub burst_after: Duration,
    pub burst_length: Duration,
    pub capacity_duration: Duration,
    /// "Unfinished N s after the load": N.
    pub after_load: Duration,
    /// "Unfinished N s after the outage ends": N.
    pub after_outage: Duration,
    pub concurrency: u32,
    pub pgbench_secs: u32,
    pub kafka_secs: f64,
    pub smtp_mails: u64,
}

impl Plan {
    pub fn new(args: &Args) -> Self {
        let short = args.mode == Mode::Short;
        let secs = Duration::from_secs_f64;
        let duration = secs(args.duration.unwrap_or(if short { 6.0 } else { 20.0 }));
        Self {
            full: !short,
            rate: args.rate.unwrap_or(if short { 20.0 } else { 100.0 }),
            duration,
            drain: Duration::from_secs(args.drain_secs.unwrap_or(if short { 15 } else { 30 })),
            poll: Duration::from_millis(args.poll_ms.unwrap_or(if short { 100 } else { 50 })),
            step_timeout: Duration::from_secs(if short { 15 } else { 30 }),
            outage_after: secs(if short { 1.0 } else { 5.0 }),
            outage_length: secs(if short { 4.0 } else { 30.0 }),
            burst_after: duration.mul_f64(1.0 / 3.0),
            burst_length: secs(if short { 2.0 } else { 10.0 }).min(duration.mul_f64(1.0 / 3.0)),
            capacity_duration: secs(if short { 4.0 } else { 20.0 }),
            after_load: secs(if short { 5.0 } else { 10.0 }),
            after_outage: secs(if short { 10.0 } else { 30.0 }),
            concurrency: args.concurrency.clamp(1, 200),
            pgbench_secs: if short { 3 } else { 15 },
            kafka_secs: if short { 3.0 } else { 10.0 },
            smtp_mails: if short { 2_000 } else { 20_000 },
        }
    }

    /// The targets' load: 100 orders/s for 20 s (the outage scenario longer).
    pub fn at_target_load(&self) -> bool {
        (self.rate - 100.0).abs() < 1e-9 && (self.duration.as_secs_f64() - 20.0).abs() < 1e-9
    }

    /// The load and the fault timeline of a scenario.
    pub fn load(&self, scenario: ScenarioName) -> (Load, Vec<(f64, Duration)>) {
        let open = |phases: Vec<(f64, Duration)>| {
            let offsets = Phases::new(phases.clone())
                .map(|p| p.offsets())
                .unwrap_or_default();
            (Load::Open { offsets }, phases)
        };
        match scenario {
            ScenarioName::GatewayOutage30s => {
                let length = self
                    .duration
                    .max(self.outage_after + self.outage_length + Duration::from_secs(5));
                open(vec![(self.rate, length)])
            }
            ScenarioName::Burst10x => {
                let rest = self
                    .duration
                    .saturating_sub(self.burst_after + self.burst_length);
                open(vec![
                    (self.rate, self.burst_after),
                    (self.rate * 10.0, self.burst_length),
                    (self.rate, rest),
                ])
            }
            ScenarioName::Capacity => (
                Load::Closed {
                    concurrency: self.concurrency as usize,
                    duration: Some(self.capacity_duration),
                    orders: None,
                },
                Vec::new(),
            ),
            _ => open(vec![(self.rate, self.duration)]),
        }
    }
}

/// One cell of the matrix.
#[derive(Debug, Clone, Copy)]
pub struct RunSpec {
    pub case: u8,
    pub scenario: ScenarioName,
    pub instances: Instances,
}

impl RunSpec {
    pub fn label(&self) -> String {
        match self.instances.variant() {
            None => format!("case {} × {}", self.case, self.scenario.title()),
            Some(v) => format!("case {} ({v}) × {}", self.case, self.scenario.title()),
        }
    }
}

/// The runs, in order: every case × scenario with `--instances` (default one of each),
/// and in full mode without `--instances` one more, case 3 × gateway-1s with two
/// payment and two notifier processes (does a second consumer per group help?).
pub fn matrix(
    mode: Mode,
    cases: &[u8],
    scenarios: &[ScenarioName],
    instances: Option<Instances>,
) -> Result<Vec<RunSpec>> {
    let chosen = instances.unwrap_or_default();
    let mut runs = Vec::new();
    for &case in cases {
        if let Some(why) = chosen.refusal(case) {
            bail!("case {case} with --instances: {why}");
        }
        for &scenario in scenarios {
            runs.push(RunSpec {
                case,
                scenario,
                instances: chosen,
            });
        }
    }
    if mode == Mode::Full
        && instances.is_none()
        && cases.contains(&3)
        && scenarios.contains(&ScenarioName::Gateway1s)
    {
        runs.push(RunSpec {
            case: 3,
            scenario: ScenarioName::Gateway1s,
            instances: Instances::TWO,
        });
    }
    Ok(runs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenarios_shape_their_load() {
        let args = Args::parse_from(["experiment", "--mode", "full"]);
        let plan = Plan::new(&args);
        assert!(plan.at_target_load());
        let (load, phases) = plan.load(ScenarioName::Burst10x);
        assert_eq!(phases.len(), 3);
        // 100/s for a third, ×10 for a third, 100/s for the rest (rounding at the edges).
        assert!((7_990..=8_010).contains(&load.total().unwrap()));
        let (load, _) = plan.load(ScenarioName::GatewayOutage30s);
        assert_eq!(load.total(), Some(4000));
        let (load, _) = plan.load(ScenarioName::Baseline);
        assert_eq!(load.total(), Some(2000));
        assert!(matches!(
            plan.load(ScenarioName::Capacity).0,
            Load::Closed { .. }
        ));
    }

    #[test]
    fn instances_parse_and_refuse() {
        let i = Instances::parse("payment=2, notifier=2").unwrap();
        assert_eq!(i, Instances::TWO);
        assert_eq!(i.variant().as_deref(), Some("payment=2,notifier=2"));
        assert_eq!(Instances::parse("notifier=3").unwrap().payment, 1);
        assert!(Instances::parse("order=2").is_err());
        assert!(Instances::parse("payment=0").is_err());
        assert!(Instances::parse("payment").is_err());
        assert!(i.refusal(3).is_none());
        assert!(i.refusal(2).is_some());
        assert!(Instances::default().variant().is_none());
    }

    #[test]
    fn full_matrix_adds_the_two_instance_run() {
        let all = ScenarioName::ALL;
        let runs = matrix(Mode::Full, &[3], &all, None).unwrap();
        assert_eq!(runs.len(), 8);
        let last = runs.last().unwrap();
        assert_eq!((last.case, last.scenario), (3, ScenarioName::Gateway1s));
        assert_eq!(last.instances, Instances::TWO);
        // Alone: only the variant.
        let one = [ScenarioName::Gateway1s];
        let runs = matrix(Mode::Full, &[3], &one, Some(Instances::TWO)).unwrap();
        assert_eq!(runs.len(), 1);
        assert_eq!(runs[0].instances, Instances::TWO);
        assert_eq!(matrix(Mode::Short, &[3], &one, None).unwrap().len(), 1);
        assert!(matrix(Mode::Full, &[1, 3], &one, Some(Instances::TWO)).is_err());
    }
}
