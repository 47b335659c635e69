//! `[tls]`: certificate and key files for the HTTP and gRPC ports, an optional client CA (mTLS)
//! and how often the files are checked for a new version. Off unless `cert_file` is set.

use std::path::PathBuf;

use serde::Deserialize;

use super::ConfigError;

/// A port TLS can be enabled on. The metrics port stays plain: Prometheus scrapes inside the
/// pod or cluster network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsPort {
    Http,
    Grpc,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first. Setting it (with `key_file`) turns TLS on.
    pub cert_file: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) matching the leaf certificate.
    pub key_file: Option<PathBuf>,
    /// PEM CA certificates: when set, every client must present a certificate they issued.
    pub client_ca_file: Option<PathBuf>,
    /// The ports served with TLS.
    pub ports: Vec<TlsPort>,
    /// Seconds between checks of the files; a changed, valid set is used for new connections.
    pub reload_poll_secs: f64,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            cert_file: None,
            key_file: None,
            client_ca_file: None,
            ports: vec![TlsPort::Http, TlsPort::Grpc],
            reload_poll_secs: 5.0,
        }
    }
}

impl TlsConfig {
    /// Whether `port` is served with TLS.
    pub fn on(&self, port: TlsPort) -> bool {
        self.cert_file.is_some() && self.ports.contains(&port)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: &str| Err(ConfigError::Invalid(format!("tls: {m}")));
        match (&self.cert_file, &self.key_file) {
            (Some(_), None) => return invalid("cert_file is set but key_file is not"),
            (None, Some(_)) => return invalid("key_file is set but cert_file is not"),
            (None, None) if self.client_ca_file.is_some() => {
                return invalid("client_ca_file needs cert_file and key_file")
            }
            _ => {}
        }
        if !(0.05..=86_400.0).contains(&self.reload_poll_secs) {
            return invalid(&format!(
                "reload_poll_secs must be 0.05..=86400, got {}",
                self.reload_poll_secs
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml_text: &str) -> Result<TlsConfig, String> {
        let cfg: TlsConfig = toml::from_str(toml_text).map_err(|e| e.to_string())?;
        cfg.validate().map_err(|e| e.to_string())?;
        Ok(cfg)
    }

    #[test]
    fn tls_is_off_by_default_and_on_for_both_ports_with_a_cert() {
        let off = parse("").unwrap();
        assert!(!off.on(TlsPort::Http) && !off.on(TlsPort::Grpc));
        let on = parse("cert_file = \"c.pem\"\nkey_file = \"k.pem\"").unwrap();
        assert!(on.on(TlsPort::Http) && on.on(TlsPort::Grpc));
        let grpc = parse("cert_file = \"c\"\nkey_file = \"k\"\nports = [\"grpc\"]").unwrap();
        assert!(!grpc.on(TlsPort::Http) && grpc.on(TlsPort::Grpc));
    }

    #[test]
    fn incomplete_or_unknown_tls_settings_are_refused_by_name() {
        assert!(parse("cert_file = \"c\"").unwrap_err().contains("key_file"));
        assert!(parse("key_file = \"k\"").unwrap_err().contains("cert_file"));
        assert!(parse("client_ca_file = \"ca\"")
            .unwrap_err()
            .contains("client_ca_file"));
        assert!(parse("ports = [\"metrics\"]")
            .unwrap_err()
            .contains("metrics"));
        assert!(parse("cert = \"c\"").unwrap_err().contains("cert"));
        let poll = "cert_file = \"c\"\nkey_file = \"k\"\nreload_poll_secs = 0";
        assert!(parse(poll).unwrap_err().contains("reload_poll_secs"));
    }
}
