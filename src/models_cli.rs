//! `ferroserve models list|load|unload`: the repository API of a running server, over gRPC, for
//! operators (the same calls as Triton's `tritonclient` `load_model`/`unload_model`); `models
//! add`: a file into the repository on disk as a new version (`registry::add`).

use std::path::PathBuf;

use anyhow::Context;
use ferroserve::proto::inference as pb;
use ferroserve::registry::add::AddRequest;
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
    /// Copy an ONNX file (and its external data) into the repository as a new version, checked
    /// as the server loads it; writes config.toml when the model has none. Works on the
    /// repository's directory, not through a server.
    Add(AddArgs),
}

#[derive(clap::Args)]
struct AddArgs {
    /// The ONNX file; sidecar files its tensors name as external data are copied with it.
    file: PathBuf,
    /// The model's name in the repository.
    #[arg(long)]
    name: String,
    /// The version number (default: the next after the highest present).
    #[arg(long)]
    version: Option<u64>,
    /// The model repository (default: the server's, `models`).
    #[arg(long, env = "FERROSERVE_MODEL_REPOSITORY")]
    repository: Option<PathBuf>,
    /// The ONNX Runtime shared library (default: ORT_DYLIB_PATH, then
    /// .cache/onnxruntime/libonnxruntime.so).
    #[arg(long, value_name = "PATH")]
    onnxruntime_library: Option<PathBuf>,
}

pub fn run(args: ModelsArgs) -> anyhow::Result<()> {
    match args.action {
        Action::Add(add) => run_add(add),
        action => remote(args.conn, action),
    }
}

fn run_add(args: AddArgs) -> anyhow::Result<()> {
    ferroserve::backend::configure_onnxruntime(args.onnxruntime_library);
    let repository = args
        .repository
        .unwrap_or_else(|| ferroserve::config::ServerConfig::default().model_repository);
    let added = ferroserve::registry::add::add(&AddRequest {
        file: &args.file,
        name: &args.name,
        version: args.version,
        repository: &repository,
    })?;
    let files: Vec<String> = added
        .files
        .iter()
        .map(|f| f.display().to_string())
        .collect();
    println!(
        "added {} version {} at {} ({})",
        args.name,
        added.version,
        added.dir.display(),
        files.join(", ")
    );
    println!("engine: {}", added.backend.as_str());
    if !added.note.is_empty() {
        println!("  {}", added.note);
    }
    match &added.config_written {
        Some(text) => println!(
            "wrote {}:\n{text}",
            added.dir.with_file_name("config.toml").display()
        ),
        None => println!("kept the model's config.toml"),
    }
    println!(
        "a server in poll mode serves it after its next scan; in explicit mode run:\n  \
         ferroserve models load {}",
        args.name
    );
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn remote(conn: Connection, action: Action) -> anyhow::Result<()> {
    let mut client = GrpcInferenceServiceClient::connect(conn.url.clone())
        .await
        .with_context(|| format!("cannot connect to {}", conn.url))?;
    match action {
        // Handled by `run` before connecting.
        Action::Add(_) => {}
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
                conn.token()?.as_deref(),
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
                conn.token()?.as_deref(),
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
