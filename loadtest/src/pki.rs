//! Institution identities for the load: client certificates minted from the institution TLS CA,
//! as many as the run needs, each with its own P-256 key, in the profile the gateway accepts
//! (certs/gen.sh `tls_client`); and mutual-TLS channels made from them. Certificates live in
//! memory only. Signing goes through `ring` (rcgen's ring backend): no other crypto provider.

use std::{path::Path, time::Duration};

use anyhow::Context;
use rcgen::{
    CertificateParams, DnType, ExtendedKeyUsagePurpose, Issuer, KeyPair, KeyUsagePurpose, SanType,
    date_time_ymd,
};
use rxgate::{
    domain::ids::{Institution, InstitutionKind},
    tls::{CONNECT_TIMEOUT, SERVER_NAME},
};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// Issues institution client certificates with the CA's key.
pub struct Minter {
    issuer: Issuer<'static, KeyPair>,
    /// The CA certificate, trusted for the server certificate too (the dev PKI has one CA).
    ca_pem: String,
}

/// What a client presents and trusts: PEM, in memory.
#[derive(Clone)]
pub struct Credentials {
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
}

fn read(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

impl Minter {
    /// The CA of `dir`: `ca.cert.pem` and `ca.key.pem`.
    pub fn from_dir(dir: &Path) -> anyhow::Result<Self> {
        let ca_pem = read(&dir.join("ca.cert.pem"))?;
        let key = KeyPair::from_pem(&read(&dir.join("ca.key.pem"))?).context("the CA key")?;
        let issuer = Issuer::from_ca_cert_pem(&ca_pem, key).context("the CA certificate")?;
        Ok(Minter { issuer, ca_pem })
    }

    /// A client certificate naming `institution` with the URI SAN
    /// `urn:rxgate:institution:<kind>:<code>` (keyUsage digitalSignature, EKU clientAuth,
    /// subject C=JP, O, CN=<kind>-<code>), valid 2025–2075 like the committed dev certificates.
    pub fn mint(&self, institution: &Institution) -> anyhow::Result<Credentials> {
        let key = KeyPair::generate().context("an institution key")?;
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CountryName, "JP");
        params.distinguished_name.push(
            DnType::OrganizationName,
            format!("DEV load-test {}", institution.kind),
        );
        params.distinguished_name.push(
            DnType::CommonName,
            format!("{}-{}", institution.kind, institution.code),
        );
        params.subject_alt_names = vec![SanType::URI(institution.to_uri().try_into()?)];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        params.not_before = date_time_ymd(2025, 1, 1);
        params.not_after = date_time_ymd(2075, 1, 1);
        let cert = params
            .signed_by(&key, &self.issuer)
            .context("signing an institution certificate")?;
        Ok(Credentials {
            ca_pem: self.ca_pem.clone(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

impl Credentials {
    /// One HTTP/2 connection to `addr` over mutual TLS; calls give up after `timeout`.
    pub async fn connect(&self, addr: &str, timeout: Duration) -> anyhow::Result<Channel> {
        // As `rxgate::tls::ClientFiles::client_tls_config`, from PEM in memory.
        let tls = ClientTlsConfig::new()
            .domain_name(SERVER_NAME)
            .ca_certificate(Certificate::from_pem(&self.ca_pem))
            .identity(Identity::from_pem(&self.cert_pem, &self.key_pem));
        let channel = Endpoint::from_shared(addr.to_owned())?
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(timeout)
            .tls_config(tls)?
            .connect()
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        Ok(channel)
    }
}

/// The institution of kind `kind` numbered `n` within `block` (a 10-digit code: prefecture 13,
/// the kind digit of a 医療機関コード or 薬局コード, then `block` and the number).
pub fn institution(kind: InstitutionKind, block: u32, n: usize) -> Institution {
    let kind_digit = match kind {
        InstitutionKind::Pharmacy => 4,
        _ => 1,
    };
    let code = format!("13{kind_digit}{block}{:06}", n + 1);
    Institution {
        kind,
        code: code.parse().expect("10 digits by construction"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_certificates_name_their_institution() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../certs/tls");
        let minter = Minter::from_dir(&dir).unwrap();
        let pharmacy = institution(InstitutionKind::Pharmacy, 9, 41);
        assert_eq!(pharmacy.code.as_str(), "1349000042");
        let creds = minter.mint(&pharmacy).unwrap();
        let der = der_of(&creds.cert_pem);
        assert_eq!(rxgate::tls::institution_of(&der).unwrap(), pharmacy);
    }

    fn der_of(pem: &str) -> Vec<u8> {
        use x509_cert::der::{DecodePem, Encode};
        x509_cert::Certificate::from_pem(pem)
            .unwrap()
            .to_der()
            .unwrap()
    }
}
