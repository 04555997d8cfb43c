//! A node's TLS material (certificate from the consortium CA, the CA
//! certificate it trusts, and its identity key as TLS key), the mutual-TLS
//! configurations built from it, and the peer identity a server learns from
//! the client's certificate.

use std::path::PathBuf;

use sotto_crypto::identity::IdentityPublic;
use sotto_node::files::{read, write_atomic, Visibility};
use sotto_node::NodeHome;
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};
use x509_parser::prelude::{FromDer, X509Certificate};
use zeroize::Zeroizing;

use crate::NetError;

const TLS_DIR: &str = "tls";
const NODE_CERT: &str = "node.pem";
const TRUSTED_CA: &str = "ca.pem";
/// OID of Ed25519 public keys (RFC 8410).
const ED25519_OID: &str = "1.3.101.112";

/// Everything a node needs for mutual TLS.
pub struct TlsMaterial {
    cert_pem: String,
    ca_pem: String,
    key_pem: Zeroizing<String>,
}

fn tls_path(home: &NodeHome, file: &str) -> PathBuf {
    home.dir().join(TLS_DIR).join(file)
}

/// Stores a certificate issued for this node and the CA certificate it
/// chains to, after checking that the certificate certifies this node's
/// identity key.
pub fn install(home: &NodeHome, cert_pem: &str, ca_pem: &str) -> Result<(), NetError> {
    let key = certificate_identity(&pem_to_der(cert_pem)?)?;
    if key != home.identity().public() {
        return Err(NetError::PeerCertificate(format!(
            "the certificate is for identity {key}, not for this node's identity {}",
            home.identity().public()
        )));
    }
    let dir = home.dir().join(TLS_DIR);
    std::fs::create_dir_all(&dir)
        .map_err(|e| sotto_node::NodeError::io(&dir, "create directory", e))?;
    write_atomic(
        &tls_path(home, NODE_CERT),
        cert_pem.as_bytes(),
        Visibility::Public,
    )?;
    write_atomic(
        &tls_path(home, TRUSTED_CA),
        ca_pem.as_bytes(),
        Visibility::Public,
    )?;
    Ok(())
}

impl TlsMaterial {
    /// Loads the node's certificate, trusted CA and key from its home.
    pub fn load(home: &NodeHome) -> Result<Self, NetError> {
        let cert_path = tls_path(home, NODE_CERT);
        if !cert_path.exists() {
            return Err(NetError::NoCertificate { path: cert_path });
        }
        Ok(Self {
            cert_pem: String::from_utf8_lossy(&read(&cert_path)?).into_owned(),
            ca_pem: String::from_utf8_lossy(&read(&tls_path(home, TRUSTED_CA))?).into_owned(),
            key_pem: home.identity().to_pkcs8_pem()?,
        })
    }

    /// Checks that this node's own certificate is valid at `now`, so an
    /// expired certificate is reported plainly instead of as a failed
    /// handshake.
    pub fn check_validity(&self, now: time::OffsetDateTime) -> Result<(), NetError> {
        let der = pem_to_der(&self.cert_pem)?;
        let (_, cert) = X509Certificate::from_der(&der)
            .map_err(|e| NetError::PeerCertificate(format!("unparseable certificate: {e}")))?;
        let validity = cert.validity();
        let (from, until) = (
            validity.not_before.to_datetime(),
            validity.not_after.to_datetime(),
        );
        if now < from || now > until {
            return Err(NetError::Certificate {
                what: "this node's TLS certificate",
                reason: format!(
                    "valid from {from} until {until}, but now is {now}; ask the consortium CA for a new one (`sotto ca issue`)"
                ),
            });
        }
        Ok(())
    }

    /// The node certificate (PEM).
    pub(crate) fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The trusted CA certificate (PEM).
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The node's TLS key (PKCS#8 PEM).
    pub(crate) fn key_pem(&self) -> &str {
        &self.key_pem
    }

    fn identity(&self) -> Identity {
        Identity::from_pem(&self.cert_pem, self.key_pem.as_bytes())
    }

    /// SHA-256 of the trusted CA certificate (DER), as a ledger's block 0
    /// names it.
    pub fn ca_sha256(&self) -> Result<[u8; 32], NetError> {
        Ok(sotto_crypto::hash::sha256(&pem_to_der(&self.ca_pem)?))
    }

    /// Server side: present this node's certificate and require a client
    /// certificate from the consortium CA.
    pub fn server_config(&self) -> ServerTlsConfig {
        ServerTlsConfig::new()
            .identity(self.identity())
            .client_ca_root(Certificate::from_pem(&self.ca_pem))
    }

    /// Client side: present this node's certificate and accept only a server
    /// certificate from the consortium CA issued to `peer_name`.
    pub fn client_config(&self, peer_name: &str) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .identity(self.identity())
            .ca_certificate(Certificate::from_pem(&self.ca_pem))
            .domain_name(peer_name)
    }
}

fn pem_to_der(pem: &str) -> Result<Vec<u8>, NetError> {
    let (_, parsed) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .map_err(|e| NetError::PeerCertificate(format!("not a PEM certificate: {e}")))?;
    Ok(parsed.contents)
}

/// The Ed25519 identity key certified by a DER certificate.
pub fn certificate_identity(der: &[u8]) -> Result<IdentityPublic, NetError> {
    let (_, cert) = X509Certificate::from_der(der)
        .map_err(|e| NetError::PeerCertificate(format!("unparseable certificate: {e}")))?;
    let spki = &cert.tbs_certificate.subject_pki;
    if spki.algorithm.algorithm.to_id_string() != ED25519_OID {
        return Err(NetError::PeerCertificate(
            "the certificate key is not an Ed25519 identity key".into(),
        ));
    }
    Ok(IdentityPublic::from_bytes(&spki.subject_public_key.data)?)
}

/// The node name (common name) certified by a DER certificate.
pub fn certificate_name(der: &[u8]) -> Result<String, NetError> {
    let (_, cert) = X509Certificate::from_der(der)
        .map_err(|e| NetError::PeerCertificate(format!("unparseable certificate: {e}")))?;
    let name = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_owned);
    name.ok_or_else(|| NetError::PeerCertificate("the certificate names no node".into()))
}

/// The client of a gRPC request as its verified mutual-TLS certificate
/// states it: identity key and node name.
pub fn peer_certificate<T>(
    request: &tonic::Request<T>,
) -> Result<(IdentityPublic, String), NetError> {
    let certs = request
        .peer_certs()
        .ok_or_else(|| NetError::PeerCertificate("the client presented no certificate".into()))?;
    let first = certs
        .first()
        .ok_or_else(|| NetError::PeerCertificate("the client presented no certificate".into()))?;
    Ok((
        certificate_identity(first.as_ref())?,
        certificate_name(first.as_ref())?,
    ))
}

/// A transport error in words a user can act on: what went wrong (a
/// certificate refused by either side, nothing listening, a broken
/// connection), followed by the transport's own causes, each once.
pub fn describe_transport(err: &dyn std::error::Error) -> String {
    let mut parts: Vec<String> = vec![err.to_string()];
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = cause.source();
    }
    explained(&parts.join(": "))
}

/// A gRPC status from the transport (not an answer of ours) in the same
/// words as [`describe_transport`].
pub fn describe_status(status: &tonic::Status) -> String {
    match std::error::Error::source(status) {
        Some(source) => describe_transport(source),
        None => explained(status.message()),
    }
}

/// A call refused as it opened, in words: a connection the server closed
/// right after the TLS handshake is, in practice, the server refusing this
/// node's certificate (TLS 1.3 tells the client only by closing).
pub fn describe_refused_call(status: &tonic::Status) -> String {
    let text = describe_status(status);
    if std::error::Error::source(status).is_some() && text.starts_with("the connection broke") {
        return format!(
            "the server closed the connection as the call opened: it most likely refused our certificate (issued by another CA, expired, or not this node's) [{text}]"
        );
    }
    text
}

/// Known transport failures and what they mean for the user.
const EXPLANATIONS: &[(&[&str], &str)] = &[
    (
        &["BadSignature", "UnknownIssuer"],
        "the peer's certificate is not issued by this node's consortium CA",
    ),
    (
        &["Expired"],
        "the peer's certificate has expired; its CA must issue a new one (`sotto ca issue`)",
    ),
    (
        &["NotValidYet"],
        "the peer's certificate is not valid yet; check both machines' clocks",
    ),
    (
        &["NotValidForName", "not valid for name"],
        "the peer's certificate is issued to another node name than the one this side asked for",
    ),
    (
        &[
            "alert: BadCertificate",
            "alert: UnknownCA",
            "alert: CertificateRequired",
            "alert: DecryptError",
            "alert: CertificateUnknown",
        ],
        "the server refused our certificate: issued by another CA, expired, or not this node's",
    ),
    (
        &["Connection refused"],
        "nothing listens at that address: is the server running, and are host and port right?",
    ),
    (
        &[
            "h2 protocol error",
            "operation was canceled",
            "Connection reset",
            "broken pipe",
            "connection closed",
            "stream no longer needed",
        ],
        "the connection broke: the peer stopped, or the network between us failed",
    ),
    (
        &["timed out", "deadline has elapsed"],
        "no answer in time: the address may be wrong or filtered by a firewall",
    ),
];

fn explained(text: &str) -> String {
    match EXPLANATIONS
        .iter()
        .find(|(patterns, _)| patterns.iter().any(|p| text.contains(p)))
    {
        Some((_, meaning)) => format!("{meaning} ({text})"),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transport_failures_are_explained_once() {
        assert_eq!(
            explained("transport error: invalid peer certificate: BadSignature"),
            "the peer's certificate is not issued by this node's consortium CA (transport error: invalid peer certificate: BadSignature)"
        );
        assert!(
            explained("tcp connect error: Connection refused (os error 111)")
                .starts_with("nothing listens at that address")
        );
        assert!(
            explained("h2 protocol error: error reading a body from connection")
                .starts_with("the connection broke")
        );
        assert_eq!(
            explained("peer bank-c is not pinned"),
            "peer bank-c is not pinned"
        );
    }
    use crate::ca::ConsortiumCa;
    use rand_core::OsRng;
    use time::{Duration, OffsetDateTime};

    #[test]
    fn issued_certificate_binds_name_and_identity_key() {
        let dir = tempfile::tempdir().expect("tmp");
        let now = OffsetDateTime::now_utc();
        let ca =
            ConsortiumCa::init(&dir.path().join("ca"), "test consortium", now, 365).expect("ca");
        let home = NodeHome::init(
            &dir.path().join("n"),
            "bank-a".parse().expect("name"),
            2,
            &mut OsRng,
        )
        .expect("home");
        let pem = ca
            .issue(
                home.name(),
                &home.identity().public(),
                now,
                now + Duration::days(30),
            )
            .expect("issue");
        assert_eq!(
            certificate_identity(&pem_to_der(&pem).expect("pem")).expect("key"),
            home.identity().public()
        );
        install(&home, &pem, ca.cert_pem()).expect("install");
        assert!(TlsMaterial::load(&home).is_ok());
        let other = NodeHome::init(
            &dir.path().join("o"),
            "bank-b".parse().expect("name"),
            2,
            &mut OsRng,
        )
        .expect("home");
        assert!(matches!(
            install(&other, &pem, ca.cert_pem()),
            Err(NetError::PeerCertificate(_))
        ));
        let reopened = ConsortiumCa::open(&dir.path().join("ca")).expect("open");
        assert_eq!(reopened.cert_pem(), ca.cert_pem());
        assert!(matches!(
            ConsortiumCa::init(&dir.path().join("ca"), "again", now, 1),
            Err(NetError::CaExists { .. })
        ));
    }
}
