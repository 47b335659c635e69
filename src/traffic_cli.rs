//! `ferroserve traffic get|set|promote` and `ferroserve rollout start|status|abort`: the traffic
//! control plane of a running server, over gRPC (`ferroserve.admin.v1.TrafficAdmin`).

use anyhow::Context;
use ferroserve::proto::admin as pb;
use pb::traffic_admin_client::TrafficAdminClient;
use tonic::transport::Channel;

use crate::models_cli::{authorized, status, Connection};

#[derive(clap::Args)]
pub struct TrafficArgs {
    #[command(flatten)]
    conn: Connection,
    #[command(subcommand)]
    action: TrafficAction,
}

#[derive(clap::Subcommand)]
enum TrafficAction {
    /// Show a model's weights, shadow and latest rollout.
    Get { model: String },
    /// Replace a model's policy: `--weight 1=90 --weight 2=10 [--shadow 3=5]`; no weight and no
    /// shadow clears it (the highest ready version serves).
    Set {
        model: String,
        /// VERSION=WEIGHT (repeat).
        #[arg(long = "weight", value_name = "VERSION=WEIGHT")]
        weights: Vec<String>,
        /// VERSION=PERCENT: mirror that share of routed requests to VERSION.
        #[arg(long, value_name = "VERSION=PERCENT")]
        shadow: Option<String>,
    },
    /// Send all traffic to one version at once (blue/green switch).
    Promote { model: String, version: String },
}

#[derive(clap::Args)]
pub struct RolloutArgs {
    #[command(flatten)]
    conn: Connection,
    #[command(subcommand)]
    action: RolloutAction,
}

#[derive(clap::Subcommand)]
enum RolloutAction {
    /// Start a progressive rollout of a candidate version.
    Start {
        model: String,
        #[arg(long)]
        candidate: String,
        /// The version compared against (default: the largest weight, else the highest other).
        #[arg(long)]
        stable: Option<String>,
        /// The candidate's percentage at each step.
        #[arg(long, value_delimiter = ',', default_value = "5,25,50,100")]
        steps: Vec<i64>,
        /// Seconds per step.
        #[arg(long, default_value_t = 30.0)]
        step_duration: f64,
        #[arg(long)]
        max_error_rate_increase: Option<f64>,
        #[arg(long)]
        max_p99_ratio: Option<f64>,
        /// Candidate requests a step needs before it can pass (it is extended until then).
        #[arg(long)]
        min_requests: Option<i64>,
    },
    /// Show the state of a model's latest rollout.
    Status { model: String },
    /// Stop a running rollout; all traffic goes back to the stable version.
    Abort { model: String },
}

async fn connect(url: &str) -> anyhow::Result<TrafficAdminClient<Channel>> {
    TrafficAdminClient::connect(url.to_owned())
        .await
        .with_context(|| format!("cannot connect to {url}"))
}

fn pair(text: &str, what: &str) -> anyhow::Result<(String, String)> {
    text.split_once('=')
        .map(|(a, b)| (a.trim().to_owned(), b.trim().to_owned()))
        .with_context(|| format!("{what} {text:?}: expected VERSION=VALUE"))
}

#[tokio::main(flavor = "current_thread")]
pub async fn traffic(args: TrafficArgs) -> anyhow::Result<()> {
    let mut client = connect(&args.conn.url).await?;
    let token = args.conn.token()?;
    let token = token.as_deref();
    let policy = match args.action {
        TrafficAction::Get { model } => client
            .get_traffic(pb::GetTrafficRequest { model })
            .await
            .map_err(status)?,
        TrafficAction::Set {
            model,
            weights,
            shadow,
        } => {
            let mut map = std::collections::HashMap::new();
            for w in &weights {
                let (v, w) = pair(w, "--weight")?;
                let w: i64 = w
                    .parse()
                    .with_context(|| format!("--weight {v}={w}: not an integer"))?;
                map.insert(v, w);
            }
            let shadow = shadow
                .map(|s| -> anyhow::Result<pb::Shadow> {
                    let (version, p) = pair(&s, "--shadow")?;
                    let percent = p
                        .parse()
                        .with_context(|| format!("--shadow {s}: not a number"))?;
                    Ok(pb::Shadow { version, percent })
                })
                .transpose()?;
            let req = pb::SetTrafficRequest {
                model,
                weights: map,
                shadow,
            };
            client
                .set_traffic(authorized(token, tonic::Request::new(req))?)
                .await
                .map_err(status)?
        }
        TrafficAction::Promote { model, version } => {
            let req = pb::PromoteRequest { model, version };
            client
                .promote(authorized(token, tonic::Request::new(req))?)
                .await
                .map_err(status)?
        }
    }
    .into_inner();
    print_policy(&policy);
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
pub async fn rollout(args: RolloutArgs) -> anyhow::Result<()> {
    let mut client = connect(&args.conn.url).await?;
    let token = args.conn.token()?;
    let token = token.as_deref();
    let s = match args.action {
        RolloutAction::Start {
            model,
            candidate,
            stable,
            steps,
            step_duration,
            max_error_rate_increase,
            max_p99_ratio,
            min_requests,
        } => {
            let req = pb::StartRolloutRequest {
                model,
                candidate,
                stable: stable.unwrap_or_default(),
                steps,
                step_duration_s: step_duration,
                max_error_rate_increase,
                max_p99_ratio,
                min_requests,
                max_prediction_drift: None,
            };
            client
                .start_rollout(authorized(token, tonic::Request::new(req))?)
                .await
                .map_err(status)?
        }
        RolloutAction::Status { model } => client
            .get_rollout(pb::GetRolloutRequest { model })
            .await
            .map_err(status)?,
        RolloutAction::Abort { model } => {
            let req = pb::AbortRolloutRequest { model };
            client
                .abort_rollout(authorized(token, tonic::Request::new(req))?)
                .await
                .map_err(status)?
        }
    }
    .into_inner();
    print_rollout(&s);
    Ok(())
}

fn print_policy(p: &pb::TrafficPolicy) {
    let mut weights: Vec<(u64, String, i64)> = p
        .weights
        .iter()
        .map(|(v, w)| (v.parse().unwrap_or(u64::MAX), v.clone(), *w))
        .collect();
    weights.sort();
    let weights: Vec<String> = weights.iter().map(|(_, v, w)| format!("{v}={w}")).collect();
    println!("model    {}", p.model);
    if weights.is_empty() {
        println!("weights  none (the highest ready version serves)");
    } else {
        println!("weights  {}", weights.join(" "));
    }
    match &p.shadow {
        Some(s) => println!("shadow   version {} at {}%", s.version, s.percent),
        None => println!("shadow   none"),
    }
    match &p.rollout {
        Some(r) => print_rollout(r),
        None => println!("rollout  none"),
    }
}

fn print_rollout(r: &pb::RolloutStatus) {
    println!(
        "rollout  {} of version {} against {}: step {}/{} at {}%{}",
        r.state,
        r.candidate,
        r.stable,
        r.step,
        r.steps.len(),
        r.percent,
        if r.reason.is_empty() {
            String::new()
        } else {
            format!(" ({})", r.reason)
        }
    );
    for (name, w) in [
        ("candidate", &r.candidate_window),
        ("stable", &r.stable_window),
    ] {
        if let Some(w) = w {
            println!(
                "  {name:<9} {} requests, {} errors ({:.2}%), p99 {}",
                w.requests,
                w.errors,
                w.error_rate * 100.0,
                w.p99_ms.map_or("-".into(), |p| format!("{p:.3} ms"))
            );
        }
    }
}
