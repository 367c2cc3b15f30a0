//! TLS to the broker with rustls and the `ring` provider (rumqttc's own rustls
//! features would also build aws-lc, and with both providers in the graph rustls cannot pick one).
//! The PEM files were read when the config was loaded; here they are parsed into a client config.

use std::path::PathBuf;
use std::sync::Arc;

use rumqttc::{TlsConfiguration, Transport};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::TlsConfig;

/// Why the TLS settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("mqtt.tls.ca: {path} holds no usable CA certificate: {reason}")]
    Ca { path: PathBuf, reason: String },
    #[error("mqtt.tls.cert/key: the client certificate or key cannot be used: {0}")]
    Client(String),
}

/// The transport for a TLS connection checked against the configured CA.
pub(super) fn transport(tls: &TlsConfig) -> Result<Transport, TlsError> {
    // Once per process; Err only means a provider is already installed, which is the one we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let ca_error = |reason: String| TlsError::Ca {
        path: tls.ca_path.clone(),
        reason,
    };
    let mut roots = rustls::RootCertStore::empty();
    for certificate in CertificateDer::pem_slice_iter(&tls.ca) {
        let certificate = certificate.map_err(|e| ca_error(e.to_string()))?;
        roots.add(certificate).map_err(|e| ca_error(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(ca_error("no certificate in it".into()));
    }
    let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
    let config = match &tls.client {
        None => builder.with_no_client_auth(),
        Some(client) => {
            let chain = CertificateDer::pem_slice_iter(&client.chain)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| TlsError::Client(format!("certificate: {e}")))?;
            let key = PrivateKeyDer::from_pem_slice(&client.key)
                .map_err(|e| TlsError::Client(format!("key: {e}")))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| TlsError::Client(e.to_string()))?
        }
    };
    Ok(Transport::tls_with_config(TlsConfiguration::Rustls(Arc::new(
        config,
    ))))
}
