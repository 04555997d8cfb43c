//! The consortium certificate authority. Its Ed25519 key stays in the CA
//! directory (mode 0600); it signs node certificates over the node's identity
//! public key, read from the node's home, without ever seeing a node's
//! private key.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SanType, SignatureAlgorithm, PKCS_ED25519,
};
use sotto_crypto::identity::IdentityPublic;
use sotto_node::files::{read, write_atomic, Visibility};
use sotto_node::NodeName;
use time::{Duration, OffsetDateTime};
use zeroize::Zeroizing;

use crate::NetError;

const CA_CERT: &str = "ca.pem";
const CA_KEY: &str = "ca.key";

/// An opened consortium CA.
pub struct ConsortiumCa {
    dir: PathBuf,
    cert_pem: String,
    key: KeyPair,
}

/// A node's identity key as the subject key of its certificate.
struct SubjectKey([u8; 32]);

impl PublicKeyData for SubjectKey {
    fn der_bytes(&self) -> &[u8] {
        &self.0
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        &PKCS_ED25519
    }
}

impl ConsortiumCa {
    /// Creates a CA named `name` in `dir` (which must not hold one), valid for
    /// `valid_days` from `now`.
    pub fn init(
        dir: &Path,
        name: &str,
        now: OffsetDateTime,
        valid_days: i64,
    ) -> Result<Self, NetError> {
        if dir.join(CA_KEY).exists() || dir.join(CA_CERT).exists() {
            return Err(NetError::CaExists {
                path: dir.to_owned(),
            });
        }
        sotto_node::outputs::check_new_dir(dir)?;
        sotto_node::files::create_private_dir(dir)?;
        let key = KeyPair::generate_for(&PKCS_ED25519)
            .map_err(NetError::cert("generating the CA key"))?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.not_before = now - Duration::minutes(5);
        params.not_after = now + Duration::days(valid_days);
        let cert = params
            .self_signed(&key)
            .map_err(NetError::cert("self-signing the CA certificate"))?;
        let key_pem = Zeroizing::new(key.serialize_pem());
        write_atomic(&dir.join(CA_KEY), key_pem.as_bytes(), Visibility::Private)?;
        write_atomic(
            &dir.join(CA_CERT),
            cert.pem().as_bytes(),
            Visibility::Public,
        )?;
        Ok(Self {
            dir: dir.to_owned(),
            cert_pem: cert.pem(),
            key,
        })
    }

    /// Opens an existing CA.
    pub fn open(dir: &Path) -> Result<Self, NetError> {
        if !dir.join(CA_KEY).exists() || !dir.join(CA_CERT).exists() {
            return Err(NetError::NotACa {
                path: dir.to_owned(),
            });
        }
        sotto_node::files::warn_if_exposed(&dir.join(CA_KEY));
        let key_pem =
            Zeroizing::new(String::from_utf8_lossy(&read(&dir.join(CA_KEY))?).into_owned());
        let key = KeyPair::from_pem(&key_pem).map_err(NetError::cert("reading the CA key"))?;
        let cert_pem = String::from_utf8_lossy(&read(&dir.join(CA_CERT))?).into_owned();
        Ok(Self {
            dir: dir.to_owned(),
            cert_pem,
            key,
        })
    }

    /// The CA certificate (PEM), which every node trusts.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Issues a certificate for the node of `home` (its name and identity
    /// key), valid from `not_before` to `not_after`, and installs it in the
    /// home with this CA's certificate.
    pub fn enroll(
        &self,
        home: &sotto_node::NodeHome,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> Result<(), NetError> {
        let pem = self.issue(
            home.name(),
            &home.identity().public(),
            not_before,
            not_after,
        )?;
        crate::tls::install(home, &pem, self.cert_pem())
    }

    /// Issues a certificate for node `name` with identity key `identity`,
    /// valid from `not_before` to `not_after`, usable as TLS server and
    /// client. The node name is the certificate's DNS name.
    pub fn issue(
        &self,
        name: &NodeName,
        identity: &IdentityPublic,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> Result<String, NetError> {
        let dns = name
            .as_str()
            .try_into()
            .map_err(|_| NetError::Certificate {
                what: "node name as a DNS name",
                reason: format!("{name} is not a valid DNS name"),
            })?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, name.as_str());
        params.subject_alt_names = vec![SanType::DnsName(dns)];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.not_before = not_before;
        params.not_after = not_after;
        let issuer = Issuer::from_ca_cert_pem(&self.cert_pem, &self.key)
            .map_err(NetError::cert("reading the CA certificate"))?;
        let cert = params
            .signed_by(&SubjectKey(identity.to_bytes()), &issuer)
            .map_err(NetError::cert("signing the node certificate"))?;
        Ok(cert.pem())
    }
}
