//! TLS for the HTTPS (HTTP + JSON) services that outside users reach, with
//! rustls directly: the server presents its node certificate and verifies
//! a client certificate from the consortium CA when one is presented (an
//! API token may stand in its place); the client trusts only the CA.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;

use crate::tls::TlsMaterial;
use crate::NetError;

fn bad(what: &'static str) -> impl Fn(String) -> NetError {
    move |reason| NetError::Certificate { what, reason }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots(ca_pem: &str) -> Result<RootCertStore, NetError> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        let cert = cert.map_err(|e| bad("the CA certificate")(e.to_string()))?;
        roots
            .add(cert)
            .map_err(|e| bad("the CA certificate")(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(bad("the CA certificate")(
            "no certificate in the PEM".into(),
        ));
    }
    Ok(roots)
}

fn chain_and_key(
    cert_pem: &str,
    key_pem: &str,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), NetError> {
    let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad("the node certificate")(e.to_string()))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| bad("the node key")(e.to_string()))?;
    Ok((chain, key))
}

impl TlsMaterial {
    /// HTTPS server: this node's certificate; a client certificate is
    /// optional and, when presented, must chain to the consortium CA.
    pub fn https_server_config(&self) -> Result<rustls::ServerConfig, NetError> {
        let (chain, key) = chain_and_key(self.cert_pem(), self.key_pem())?;
        let verifier = WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots(self.ca_pem())?),
            provider(),
        )
        .allow_unauthenticated()
        .build()
        .map_err(|e| bad("the client certificate verifier")(e.to_string()))?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| bad("the TLS versions")(e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .map_err(|e| bad("the node certificate")(e.to_string()))?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(config)
    }
}

/// HTTPS client trusting only the CA in `ca_pem`; presenting the
/// certificate and key of `identity` when given.
pub fn https_client_config(
    ca_pem: &str,
    identity: Option<&TlsMaterial>,
) -> Result<rustls::ClientConfig, NetError> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| bad("the TLS versions")(e.to_string()))?
        .with_root_certificates(roots(ca_pem)?);
    match identity {
        Some(material) => {
            let (chain, key) = chain_and_key(material.cert_pem(), material.key_pem())?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| bad("the node certificate")(e.to_string()))
        }
        None => Ok(builder.with_no_client_auth()),
    }
}
