//! `ferroserve models list|load|unload`: the repository API of a running server, over gRPC, for
//! operators (the same calls as Triton's `tritonclient` `load_model`/`unload_model`).

use anyhow::Context;
use ferroserve::proto::inference as pb;
use pb::grpc_inference_service_client::GrpcInferenceServiceClient;
use tonic::metadata::MetadataValue;

/// Where the server is and the token mutations need.
#[derive(clap::Args)]
pub struct Connection {
    /// The server's gRPC endpoint.
    #[arg(long, default_value = "http://127.0.0.1:8001", global = true)]
    pub url: String,
    /// Bearer token for changes: load, unload, traffic, rollouts (the server's admin_token).
    #[arg(
        long,
        env = "FERROSERVE_ADMIN_TOKEN",
        hide_env_values = true,
        global = true
    )]
    pub token: Option<String>,
    /// Without --token: the file a server without a configured token wrote its token to (the
    /// server's admin_token_file).
    #[arg(
        long,
        env = "FERROSERVE_ADMIN_TOKEN_FILE",
        global = true,
        value_name = "PATH"
    )]
    pub token_file: Option<std::path::PathBuf>,
}

impl Connection {
    /// --token, else the token in --token-file (default: where a local server writes it), else
    /// none (the server then answers UNAUTHENTICATED unless it allows unauthenticated admin).
    pub fn token(&self) -> anyhow::Result<Option<String>> {
        if let Some(t) = &self.token {
            return Ok(Some(t.clone()));
        }
        let path = self
            .token_file
            .clone()
            .unwrap_or_else(ferroserve::config::default_admin_token_file);
        ferroserve::api::admin_token::read(&path)
            .with_context(|| format!("cannot read the admin token file {}", path.display()))
    }
}

#[derive(clap::Args)]
pub struct ModelsArgs {
    #[command(flatten)]
    conn: Connection,
    #[command(subcommand)]
    action: Action,
}

#[derive(clap::Subcommand)]
enum Action {
    /// Every model of the repository with its versions and their states.
    List {
        /// Only versions that are ready.
        #[arg(long)]
        ready: bool,
    },
    /// Load (or reload from disk) a model; returns once its versions serve, or with the reason.
    Load { name: String },
    /// Unload a model; returns once its requests in flight are answered.
    Unload { name: String },
}

#[tokio::main(flavor = "current_thread")]
pub async fn run(args: ModelsArgs) -> anyhow::Result<()> {
    let mut client = GrpcInferenceServiceClient::connect(args.conn.url.clone())
        .await
        .with_context(|| format!("cannot connect to {}", args.conn.url))?;
    match args.action {
        Action::List { ready } => {
            let index = client
                .repository_index(pb::RepositoryIndexRequest {
                    repository_name: String::new(),
                    ready,
                })
                .await
                .map_err(status)?
                .into_inner();
            println!("{:<24} {:>8}  {:<12} REASON", "MODEL", "VERSION", "STATE");
            for m in index.models {
                let version = if m.version.is_empty() {
                    "-"
                } else {
                    &m.version
                };
                println!(
                    "{:<24} {:>8}  {:<12} {}",
                    m.name, version, m.state, m.reason
                );
            }
        }
        Action::Load { name } => {
            let req = authorized(
                args.conn.token()?.as_deref(),
                tonic::Request::new(pb::RepositoryModelLoadRequest {
                    repository_name: String::new(),
                    model_name: name.clone(),
                    parameters: Default::default(),
                }),
            )?;
            client.repository_model_load(req).await.map_err(status)?;
            println!("loaded {name}");
        }
        Action::Unload { name } => {
            let req = authorized(
                args.conn.token()?.as_deref(),
                tonic::Request::new(pb::RepositoryModelUnloadRequest {
                    repository_name: String::new(),
                    model_name: name.clone(),
                    parameters: Default::default(),
                }),
            )?;
            client.repository_model_unload(req).await.map_err(status)?;
            println!("unloaded {name}");
        }
    }
    Ok(())
}

/// `req` with the bearer token, when there is one.
pub fn authorized<T>(
    token: Option<&str>,
    mut req: tonic::Request<T>,
) -> anyhow::Result<tonic::Request<T>> {
    if let Some(token) = token {
        let value: MetadataValue<_> = format!("Bearer {token}")
            .parse()
            .context("the token is not a valid header value")?;
        req.metadata_mut().insert("authorization", value);
    }
    Ok(req)
}

pub fn status(s: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{:?}: {}", s.code(), s.message())
}
