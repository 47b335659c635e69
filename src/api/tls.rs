//! TLS on the HTTP and gRPC ports (rustls with the ring provider): the certificate, key and
//! optional client CA read from their files, the rustls configuration each port's new
//! connections take (swapped atomically when the files change), the handshake, and the
//! socket type both accept loops serve (plain or TLS).
//!
//! The handshake runs on the connection's own task, on a socket that already holds a slot of
//! the port's table (`conn`), so it counts against `max_connections` and its watchdog: a client
//! that never sends its ClientHello is closed at the handshake timeout like a silent plain one.
//! A reload builds a whole new configuration; a file that does not parse, or a key that does not
//! match the certificate, keeps the current one and is logged (and counted in
//! `ferroserve_tls_reloads_total{result="error"}`), never stopping the server.

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::sign::CertifiedKey;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use super::conn::Guarded;
use crate::config::{TlsConfig, TlsPort};
use crate::metrics::Metrics;

/// PEM files larger than this are refused: a chain of a few certificates is a few KiB.
const MAX_PEM_BYTES: u64 = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
#[error("tls: {}: {why}", path.display())]
pub struct TlsError {
    path: PathBuf,
    why: String,
}

fn file_error(path: &Path, why: impl std::fmt::Display) -> TlsError {
    TlsError {
        path: path.to_path_buf(),
        why: why.to_string(),
    }
}

/// One port's TLS: the shared configurations and which of them the port takes.
#[derive(Clone)]
pub struct PortTls {
    pub tls: Arc<Tls>,
    pub port: TlsPort,
}

impl PortTls {
    pub fn acceptor(&self) -> TlsAcceptor {
        self.tls.acceptor(self.port)
    }
}

/// The files' contents as last read: a change in any of them (or in a read error) is a reload.
type Snapshot = Vec<Result<Vec<u8>, String>>;

/// The configured files, and how a server configuration is made of them.
struct Files {
    cert: PathBuf,
    key: PathBuf,
    client_ca: Option<PathBuf>,
    provider: Arc<CryptoProvider>,
}

type Configs = (Arc<rustls::ServerConfig>, Arc<rustls::ServerConfig>);

/// The ports' TLS configurations, current for new connections.
pub struct Tls {
    files: Files,
    http: ArcSwap<rustls::ServerConfig>,
    grpc: ArcSwap<rustls::ServerConfig>,
    seen: Mutex<Snapshot>,
    metrics: Arc<Metrics>,
}

impl Tls {
    /// Reads and checks the configured files; `None` when TLS is off. An error names the file.
    pub fn load(config: &TlsConfig, metrics: Arc<Metrics>) -> Result<Option<Arc<Tls>>, TlsError> {
        let (Some(cert), Some(key)) = (&config.cert_file, &config.key_file) else {
            return Ok(None);
        };
        let files = Files {
            cert: cert.clone(),
            key: key.clone(),
            client_ca: config.client_ca_file.clone(),
            provider: Arc::new(rustls::crypto::ring::default_provider()),
        };
        let snapshot = files.read();
        let (http, grpc) = files.build(&snapshot)?;
        Ok(Some(Arc::new(Tls {
            files,
            http: ArcSwap::new(http),
            grpc: ArcSwap::new(grpc),
            seen: Mutex::new(snapshot),
            metrics,
        })))
    }

    /// The acceptor for a new connection on `port`, with the configuration current now.
    pub fn acceptor(&self, port: TlsPort) -> TlsAcceptor {
        match port {
            TlsPort::Http => TlsAcceptor::from(self.http.load_full()),
            TlsPort::Grpc => TlsAcceptor::from(self.grpc.load_full()),
        }
    }

    /// Re-reads the files every `period` and on SIGHUP until `stop` completes.
    pub fn watch(
        self: &Arc<Self>,
        period: Duration,
        stop: impl Future<Output = ()> + Send + 'static,
    ) {
        let tls = self.clone();
        tokio::spawn(async move {
            tokio::pin!(stop);
            let mut hup =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
            let start = tokio::time::Instant::now() + period;
            let mut tick = tokio::time::interval_at(start, period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => tls.reload(false),
                    Some(()) = hangup(&mut hup) => tls.reload(true),
                    () = &mut stop => break,
                }
            }
        });
    }

    /// Swaps in the files' new contents when they changed (or when `forced`) and are valid.
    fn reload(&self, forced: bool) {
        let snapshot = self.files.read();
        {
            let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            if !forced && *seen == snapshot {
                return;
            }
            // A broken file is reported once, not at every poll until it is fixed.
            seen.clone_from(&snapshot);
        }
        match self.files.build(&snapshot) {
            Ok((http, grpc)) => {
                self.http.store(http);
                self.grpc.store(grpc);
                self.metrics.count_tls_reload(true);
                tracing::info!(
                    cert = %self.files.cert.display(),
                    "tls: certificate reloaded; new connections use it"
                );
            }
            Err(e) => {
                self.metrics.count_tls_reload(false);
                tracing::error!("{e}; keeping the current certificate");
            }
        }
    }
}

impl Files {
    fn files(&self) -> impl Iterator<Item = &Path> {
        [Some(&self.cert), Some(&self.key), self.client_ca.as_ref()]
            .into_iter()
            .flatten()
            .map(PathBuf::as_path)
    }

    fn read(&self) -> Snapshot {
        self.files().map(read_bounded).collect()
    }

    fn build(&self, snapshot: &Snapshot) -> Result<Configs, TlsError> {
        let contents: Vec<(&Path, &[u8])> = self
            .files()
            .zip(snapshot)
            .map(|(path, read)| match read {
                Ok(bytes) => Ok((path, bytes.as_slice())),
                Err(why) => Err(file_error(path, why)),
            })
            .collect::<Result<_, _>>()?;
        // `files()` always yields the certificate, then the key, then the optional CA.
        let [(cert_path, cert_pem), (key_path, key_pem), ca @ ..] = contents.as_slice() else {
            return Err(file_error(&self.cert, "internal: the key file is missing"));
        };
        let (cert_path, cert_pem, key_path, key_pem) = (*cert_path, *cert_pem, *key_path, *key_pem);
        let chain = certificates(cert_path, cert_pem)?;
        let key = PrivateKeyDer::from_pem_slice(key_pem)
            .map_err(|e| file_error(key_path, format!("no usable private key: {e}")))?;
        CertifiedKey::from_der(chain.clone(), key.clone_key(), &self.provider).map_err(|e| {
            file_error(
                key_path,
                format!("does not match {}: {e}", cert_path.display()),
            )
        })?;
        let builder = rustls::ServerConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(rustls::DEFAULT_VERSIONS)
            .map_err(|e| file_error(cert_path, e))?;
        let builder = match ca.first() {
            Some(&(ca_path, ca_pem)) => {
                let mut roots = rustls::RootCertStore::empty();
                let (added, _) = roots.add_parsable_certificates(certificates(ca_path, ca_pem)?);
                if added == 0 {
                    return Err(file_error(ca_path, "no usable CA certificate"));
                }
                let verifier = WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    self.provider.clone(),
                )
                .build()
                .map_err(|e| file_error(ca_path, e))?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut http = builder
            .with_single_cert(chain, key)
            .map_err(|e| file_error(cert_path, e))?;
        let mut grpc = http.clone();
        http.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        grpc.alpn_protocols = vec![b"h2".to_vec()];
        Ok((Arc::new(http), Arc::new(grpc)))
    }
}

async fn hangup(hup: &mut Option<tokio::signal::unix::Signal>) -> Option<()> {
    match hup {
        Some(signal) => signal.recv().await,
        None => std::future::pending().await,
    }
}

fn read_bounded(path: &Path) -> Result<Vec<u8>, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("cannot read: {e}"))?;
    let mut bytes = Vec::new();
    use std::io::Read;
    file.take(MAX_PEM_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read: {e}"))?;
    if bytes.len() as u64 > MAX_PEM_BYTES {
        return Err(format!("larger than {MAX_PEM_BYTES} bytes"));
    }
    Ok(bytes)
}

fn certificates(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let chain = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(path, format!("not a PEM certificate file: {e}")))?;
    if chain.is_empty() {
        return Err(file_error(path, "no CERTIFICATE in the PEM file"));
    }
    Ok(chain)
}

/// Runs the TLS handshake on an admitted connection, within `timeout` (the watchdog bounds it
/// too). A failure is logged without the client's bytes: certificate refusals at warn,
/// anything else (plain HTTP on a TLS port, a scanner, a timeout) at debug.
pub async fn handshake(acceptor: TlsAcceptor, io: Guarded, timeout: Duration) -> Option<MaybeTls> {
    let peer = io.peer_addr();
    match tokio::time::timeout(timeout, acceptor.accept(io)).await {
        Ok(Ok(stream)) => Some(MaybeTls::Tls(Box::new(stream))),
        Ok(Err(e)) => {
            let refused = e
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
                .is_some_and(|r| {
                    matches!(
                        r,
                        rustls::Error::InvalidCertificate(_)
                            | rustls::Error::NoCertificatesPresented
                    )
                });
            if refused {
                tracing::warn!(?peer, "tls: client certificate refused: {e}");
            } else {
                tracing::debug!(?peer, "tls: handshake failed: {e}");
            }
            None
        }
        Err(_) => {
            tracing::debug!(?peer, "tls: handshake timed out");
            None
        }
    }
}

/// An admitted connection's socket, plain or after its TLS handshake.
pub enum MaybeTls {
    Plain(Guarded),
    Tls(Box<TlsStream<Guarded>>),
}

impl MaybeTls {
    pub fn guarded(&self) -> &Guarded {
        match self {
            MaybeTls::Plain(io) => io,
            MaybeTls::Tls(tls) => tls.get_ref().0,
        }
    }
}

impl AsyncRead for MaybeTls {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(io) => Pin::new(io).poll_read(cx, buf),
            MaybeTls::Tls(tls) => Pin::new(tls.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for MaybeTls {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, b: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MaybeTls::Plain(io) => Pin::new(io).poll_write(cx, b),
            MaybeTls::Tls(tls) => Pin::new(tls.as_mut()).poll_write(cx, b),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MaybeTls::Plain(io) => Pin::new(io).poll_write_vectored(cx, bufs),
            MaybeTls::Tls(tls) => Pin::new(tls.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            MaybeTls::Plain(io) => io.is_write_vectored(),
            MaybeTls::Tls(tls) => tls.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(io) => Pin::new(io).poll_flush(cx),
            MaybeTls::Tls(tls) => Pin::new(tls.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(io) => Pin::new(io).poll_shutdown(cx),
            MaybeTls::Tls(tls) => Pin::new(tls.as_mut()).poll_shutdown(cx),
        }
    }
}
