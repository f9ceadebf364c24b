//! The HPKI signer profile: key usage, signature policy, the signer's identity and the healthcare
//! role carried in SubjectDirectoryAttributes (ISO 17090 HCActor). Reads certificates only.

use std::fmt;

use const_oid::{ObjectIdentifier, db::rfc4519, db::rfc5280};
use der::{Decode, Encode as _, Reader, SliceReader, Tag, TagNumber, Tagged, asn1::AnyRef};
use x509_cert::{
    Certificate,
    ext::pkix::{
        CertificatePolicies, KeyUsage, KeyUsages, SubjectDirectoryAttributes, name::DirectoryString,
    },
};

/// The ISO 17090 healthcare-actor attribute type inside SubjectDirectoryAttributes.
pub(super) const HC_ACTOR_ATTRIBUTE: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.0.17090.0.1");

/// A qualification that can sign documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Doctor,
    Dentist,
    Pharmacist,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Doctor => "doctor",
            Role::Dentist => "dentist",
            Role::Pharmacist => "pharmacist",
        })
    }
}

/// One row of the role table: an HCActor codedData OID, the role it grants and the English name
/// the certificate must carry with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleEntry {
    pub oid: ObjectIdentifier,
    pub role: Role,
    pub name: String,
}

/// The configured OID → role table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleTable(pub Vec<RoleEntry>);

impl Default for RoleTable {
    /// 1.2.392.100495.1.6.1.1 (Medical Doctor) is read from a real MEDIS certificate; Dentist (.2)
    /// and Pharmacist (.3) follow the numbering of the MHLW HPKI certificate policy's qualification
    /// table and must be confirmed against the policy before production.
    fn default() -> Self {
        let entry = |oid, role, name: &str| RoleEntry {
            oid: ObjectIdentifier::new_unwrap(oid),
            role,
            name: name.to_owned(),
        };
        RoleTable(vec![
            entry("1.2.392.100495.1.6.1.1", Role::Doctor, "Medical Doctor"),
            entry("1.2.392.100495.1.6.1.2", Role::Dentist, "Dentist"),
            entry("1.2.392.100495.1.6.1.3", Role::Pharmacist, "Pharmacist"),
        ])
    }
}

/// One HCActor of the certificate: its codedData OID and the English name beside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HcActor {
    pub oid: ObjectIdentifier,
    pub name: Option<String>,
}

/// Why a certificate's role attribute could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed healthcare role attribute: {0}")]
pub struct RoleAttributeError(String);

fn malformed(what: &str) -> impl Fn(der::Error) -> RoleAttributeError + '_ {
    move |e| RoleAttributeError(format!("{what}: {e}"))
}

/// Reads every HCActor from the certificate's SubjectDirectoryAttributes. A certificate without
/// the extension or the attribute has none.
pub fn hc_actors(cert: &Certificate) -> Result<Vec<HcActor>, RoleAttributeError> {
    let sda = match cert
        .tbs_certificate()
        .get_extension::<SubjectDirectoryAttributes>()
    {
        Ok(Some((_critical, sda))) => sda,
        Ok(None) => return Ok(Vec::new()),
        Err(e) => return Err(malformed("SubjectDirectoryAttributes")(e)),
    };
    let mut actors = Vec::new();
    for attribute in sda.0.iter().filter(|a| a.oid == HC_ACTOR_ATTRIBUTE) {
        for value in attribute.values.iter() {
            // HCActorData ::= SET OF HCActor
            let actor_data = value.to_der().map_err(malformed("HCActorData"))?;
            parse_actor_data(&actor_data, &mut actors)?;
        }
    }
    Ok(actors)
}

fn context(number: u32) -> Tag {
    Tag::ContextSpecific {
        constructed: true,
        number: TagNumber(number),
    }
}

/// HCActorData ::= SET OF HCActor; HCActor ::= SEQUENCE { [0] EXPLICIT SET { codedData [0]
/// EXPLICIT OID, … [2] EXPLICIT UTF8String } … } as in the MEDIS certificate (DOMAIN.md).
fn parse_actor_data(der: &[u8], out: &mut Vec<HcActor>) -> Result<(), RoleAttributeError> {
    let set = AnyRef::from_der(der).map_err(malformed("HCActorData"))?;
    if set.tag() != Tag::Set {
        return Err(RoleAttributeError("HCActorData is not a SET".into()));
    }
    let mut actors = SliceReader::new(set.value()).map_err(malformed("HCActorData"))?;
    while !actors.is_finished() {
        let actor: AnyRef<'_> = actors.decode().map_err(malformed("HCActor"))?;
        if actor.tag() != Tag::Sequence {
            return Err(RoleAttributeError("HCActor is not a SEQUENCE".into()));
        }
        let mut fields = SliceReader::new(actor.value()).map_err(malformed("HCActor"))?;
        while !fields.is_finished() {
            let field: AnyRef<'_> = fields.decode().map_err(malformed("HCActor field"))?;
            if field.tag() != context(0) {
                continue; // other HCActor fields carry no qualification
            }
            let role_set = AnyRef::from_der(field.value()).map_err(malformed("role"))?;
            if role_set.tag() != Tag::Set {
                return Err(RoleAttributeError("role is not a SET".into()));
            }
            out.push(parse_role(role_set.value())?);
        }
    }
    Ok(())
}

fn parse_role(der: &[u8]) -> Result<HcActor, RoleAttributeError> {
    let mut reader = SliceReader::new(der).map_err(malformed("role"))?;
    let (mut oid, mut name) = (None, None);
    while !reader.is_finished() {
        let item: AnyRef<'_> = reader.decode().map_err(malformed("role item"))?;
        if item.tag() == context(0) {
            oid = Some(ObjectIdentifier::from_der(item.value()).map_err(malformed("codedData"))?);
        } else if item.tag() == context(2) {
            let text =
                der::asn1::Utf8StringRef::from_der(item.value()).map_err(malformed("role name"))?;
            name = Some(text.as_str().to_owned());
        }
    }
    let oid = oid.ok_or_else(|| RoleAttributeError("role without codedData".into()))?;
    Ok(HcActor { oid, name })
}

/// What the role attribute grants, judged against the role table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum RoleOutcome {
    /// The qualifications whose OID is in the table and whose name agrees.
    Qualified(Vec<Role>),
    /// A table OID whose English name disagrees with the table: the attribute is not trusted.
    NameMismatch { oid: ObjectIdentifier },
}

/// Judges the certificate's HCActors against `table`. Actors whose OID is not in the table (a
/// Director role, for one) grant nothing.
pub(super) fn judge_roles(actors: &[HcActor], table: &RoleTable) -> RoleOutcome {
    let mut roles = Vec::new();
    for actor in actors {
        let Some(entry) = table.0.iter().find(|e| e.oid == actor.oid) else {
            continue;
        };
        if actor.name.as_deref() != Some(entry.name.as_str()) {
            return RoleOutcome::NameMismatch { oid: actor.oid };
        }
        roles.push(entry.role);
    }
    RoleOutcome::Qualified(roles)
}

/// The key usage bits of a certificate, if it has the extension.
pub(super) fn key_usage(cert: &Certificate) -> Result<Option<KeyUsage>, der::Error> {
    Ok(cert
        .tbs_certificate()
        .get_extension::<KeyUsage>()?
        .map(|(_, ku)| ku))
}

/// True when the certificate may make signatures that bind its holder: keyUsage contains
/// nonRepudiation (contentCommitment).
pub(super) fn has_non_repudiation(cert: &Certificate) -> bool {
    matches!(key_usage(cert), Ok(Some(ku)) if ku.0.contains(KeyUsages::NonRepudiation))
}

/// The certificate's policy OIDs (empty without the extension).
pub(super) fn policies(cert: &Certificate) -> Result<Vec<ObjectIdentifier>, der::Error> {
    Ok(cert
        .tbs_certificate()
        .get_extension::<CertificatePolicies>()?
        .map(|(_, cp)| cp.0.iter().map(|p| p.policy_identifier).collect())
        .unwrap_or_default())
}

/// The subject's commonName and serialNumber, the identity a document's prescriber or
/// pharmacist must match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct SubjectIdentity {
    pub name: String,
    pub serial_number: String,
}

/// Reads the subject identity; a subject without exactly one commonName and one serialNumber has
/// none.
pub(super) fn subject_identity(cert: &Certificate) -> Option<SubjectIdentity> {
    let read = |oid: ObjectIdentifier| {
        let mut values = cert
            .tbs_certificate()
            .subject()
            .iter()
            .filter(|atv| atv.oid == oid)
            .map(|atv| directory_string(&atv.value));
        let first = values.next()??;
        values.next().is_none().then_some(first)
    };
    Some(SubjectIdentity {
        name: read(rfc4519::CN)?,
        serial_number: read(rfc4519::SERIAL_NUMBER)?,
    })
}

fn directory_string(value: &der::Any) -> Option<String> {
    match DirectoryString::try_from(value).ok()? {
        DirectoryString::PrintableString(s) => Some(s.to_string()),
        DirectoryString::Utf8String(s) => Some(s),
        DirectoryString::TeletexString(_) | DirectoryString::BmpString(_) => None,
    }
}

/// anyPolicy, which a signer certificate cannot use to claim a signature policy.
pub(super) const ANY_POLICY: ObjectIdentifier = rfc5280::ANY_POLICY;

#[cfg(test)]
mod tests {
    use super::*;

    /// The SubjectDirectoryAttributes value of the real MEDIS test certificate (DOMAIN.md).
    const MEDIS_SDA: &str = "303430320606288185420001312831263024a0223120a00c060a2a830886910f01060101a2100c0e4d65646963616c20446f63746f72";

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn the_medis_attribute_names_a_medical_doctor() {
        let sda = SubjectDirectoryAttributes::from_der(&hex(MEDIS_SDA)).unwrap();
        let mut actors = Vec::new();
        for value in sda.0[0].values.iter() {
            parse_actor_data(&value.to_der().unwrap(), &mut actors).unwrap();
        }
        assert_eq!(
            actors,
            vec![HcActor {
                oid: ObjectIdentifier::new_unwrap("1.2.392.100495.1.6.1.1"),
                name: Some("Medical Doctor".into()),
            }]
        );
        assert_eq!(
            judge_roles(&actors, &RoleTable::default()),
            RoleOutcome::Qualified(vec![Role::Doctor])
        );
    }

    #[test]
    fn judging_roles() {
        let actor = |oid: &str, name: &str| HcActor {
            oid: ObjectIdentifier::new_unwrap(oid),
            name: Some(name.into()),
        };
        let table = RoleTable::default();
        let cases: Vec<(Vec<HcActor>, RoleOutcome)> = vec![
            (vec![], RoleOutcome::Qualified(vec![])),
            (
                vec![actor("1.2.392.100495.1.6.1.3", "Pharmacist")],
                RoleOutcome::Qualified(vec![Role::Pharmacist]),
            ),
            // a Director role is not in the table: it grants nothing
            (
                vec![actor("1.2.392.100495.1.6.2.1", "Director of Hospital")],
                RoleOutcome::Qualified(vec![]),
            ),
            (
                vec![actor("1.2.392.100495.1.6.1.1", "Pharmacist")],
                RoleOutcome::NameMismatch {
                    oid: ObjectIdentifier::new_unwrap("1.2.392.100495.1.6.1.1"),
                },
            ),
            (
                vec![HcActor {
                    oid: ObjectIdentifier::new_unwrap("1.2.392.100495.1.6.1.2"),
                    name: None,
                }],
                RoleOutcome::NameMismatch {
                    oid: ObjectIdentifier::new_unwrap("1.2.392.100495.1.6.1.2"),
                },
            ),
        ];
        for (actors, expected) in cases {
            assert_eq!(judge_roles(&actors, &table), expected, "{actors:?}");
        }
    }
}
