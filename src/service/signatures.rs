//! Signatures as stored: a CMS signature's bytes with the certificates it carries cut out, each
//! certificate kept once, by its SHA-256, in [`Table::Certificates`]. Every prescription carries
//! its signer's certificate and intermediates (two thirds of its record); a signer signs many.
//!
//! Invariant: [`restore`] gives back the exact bytes [`cut`] was handed. A signature whose
//! layout this module does not recognise is kept whole (no cuts), never altered.

use der::{Decode, Header, Reader, SliceReader, Tag, TagNumber};

use super::{
    records::{CutV1, SignatureV1},
    schema::certificate_key,
};
use crate::domain::hash::sha256;
use crate::store::{self, Table, Txn};

/// One DER header at the start of `der`: (tag, header length, content length). `None` for what
/// DER does not allow or what runs short.
fn header(der: &[u8]) -> Option<(Tag, usize, usize)> {
    let mut reader = SliceReader::new(der).ok()?;
    let header = Header::decode(&mut reader).ok()?;
    let h = usize::try_from(reader.position()).ok()?;
    let l = usize::try_from(header.length()).ok()?;
    (der.len() >= h + l).then_some((header.tag(), h, l))
}

/// The elements of a constructed value's content: (tag, offset from `base`, length with header).
fn elements(content: &[u8], base: usize) -> Option<Vec<(Tag, usize, usize)>> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < content.len() {
        let (tag, h, l) = header(&content[at..])?;
        out.push((tag, base + at, h + l));
        at += h + l;
    }
    Some(out)
}

/// The content of the single value that `der` consists of, with its offset, if its tag is `tag`.
fn inside(der: &[u8], base: usize, tag: Tag) -> Option<(&[u8], usize)> {
    let (t, h, l) = header(der)?;
    (t == tag && h + l == der.len()).then(|| (&der[h..h + l], base + h))
}

const SEQUENCE: Tag = Tag::Sequence;
/// The constructed context-specific tag [0].
const CONTEXT_0: Tag = Tag::ContextSpecific {
    constructed: true,
    number: TagNumber(0),
};

/// Where the certificates of a ContentInfo { signed-data, SignedData } lie: the ranges of the
/// `Certificate` choices in `certificates [0] IMPLICIT CertificateSet` (RFC 5652 §5.1). Empty
/// when the layout is not that one.
fn certificate_ranges(cms: &[u8]) -> Vec<(usize, usize)> {
    let found = || -> Option<Vec<(usize, usize)>> {
        let (info, base) = inside(cms, 0, SEQUENCE)?;
        let info = elements(info, base)?;
        let &[_, (CONTEXT_0, at, len)] = info.as_slice() else {
            return None;
        };
        let (explicit, base) = inside(&cms[at..at + len], at, CONTEXT_0)?;
        let (signed, base) = inside(explicit, base, SEQUENCE)?;
        // version, digestAlgorithms, encapContentInfo, then the optional certificates.
        let &(tag, at, len) = elements(signed, base)?.get(3)?;
        if tag != CONTEXT_0 {
            return None;
        }
        let (_, h, _) = header(&cms[at..])?;
        let set = elements(&cms[at + h..at + len], at + h)?;
        Some(
            set.into_iter()
                .filter(|&(tag, _, _)| tag == SEQUENCE)
                .map(|(_, at, len)| (at, len))
                .collect(),
        )
    };
    found().unwrap_or_default()
}

/// A certificate cut out of a signature, to be stored by [`store_certificates`].
pub(super) struct Certificate {
    sha256: [u8; 32],
    der: Vec<u8>,
}

/// Cuts the certificates out of `cms`: the signature as stored, and the certificates to store
/// with it. Pure, so that it can run before the transaction.
pub(super) fn cut(cms: &[u8]) -> (SignatureV1, Vec<Certificate>) {
    let mut rest = Vec::with_capacity(cms.len());
    let mut cuts = Vec::new();
    let mut certificates = Vec::new();
    let mut from = 0;
    for (at, len) in certificate_ranges(cms) {
        let der = cms[at..at + len].to_vec();
        let sha256 = sha256(&der);
        rest.extend_from_slice(&cms[from..at]);
        cuts.push(CutV1 {
            at: at as u32,
            sha256,
        });
        certificates.push(Certificate { sha256, der });
        from = at + len;
    }
    rest.extend_from_slice(&cms[from..]);
    (SignatureV1 { rest, cuts }, certificates)
}

/// Stores each of `certificates` not yet stored.
pub(super) fn store_certificates(
    tx: &mut dyn Txn,
    certificates: &[Certificate],
) -> Result<(), store::Error> {
    for c in certificates {
        let key = certificate_key(&c.sha256);
        if tx.get(Table::Certificates, key)?.is_none() {
            tx.put(Table::Certificates, key, &c.der);
        }
    }
    Ok(())
}

/// The signature's original bytes.
pub(super) fn restore(tx: &dyn Txn, signature: &SignatureV1) -> Result<Vec<u8>, store::Error> {
    let corrupt = |what: &str| store::Error::Corrupt(format!("stored signature: {what}"));
    let mut out = Vec::with_capacity(signature.rest.len() + 2048 * signature.cuts.len());
    let mut rest = signature.rest.as_slice();
    for cut in &signature.cuts {
        let certificate = tx
            .get(Table::Certificates, certificate_key(&cut.sha256))?
            .ok_or_else(|| corrupt("a certificate is missing"))?;
        let take = (cut.at as usize)
            .checked_sub(out.len())
            .filter(|n| *n <= rest.len())
            .ok_or_else(|| corrupt("a cut lies outside it"))?;
        out.extend_from_slice(&rest[..take]);
        rest = &rest[take..];
        if sha256(&certificate) != cut.sha256 {
            return Err(corrupt("a certificate does not match its hash"));
        }
        out.extend_from_slice(&certificate);
    }
    out.extend_from_slice(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::SystemTime;

    use super::*;
    use crate::dev_pki::DevPki;
    use crate::store::{EmbeddedStore, Store};

    /// A detached signature by the dev signer `name`, carrying the signing CA.
    fn signed_by(name: &str, content: &[u8]) -> Vec<u8> {
        DevPki::repository()
            .signer(name)
            .unwrap()
            .sign(content, SystemTime::now())
            .unwrap()
    }

    async fn within<T: Send + 'static>(
        store: &Arc<dyn Store>,
        f: impl Fn(&mut dyn Txn) -> Result<T, store::Error> + Send + Sync + 'static,
    ) -> Result<T, store::Error> {
        store.transact(f).await.unwrap()
    }

    /// Signatures lose their certificates to the table, which holds each one once, and come
    /// back byte for byte; what is not a SignedData with certificates is kept whole.
    #[tokio::test]
    async fn signatures_come_back_exactly_with_each_certificate_stored_once() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
        let signatures = vec![
            signed_by("doctor", b"one"),
            signed_by("doctor", b"two"),
            signed_by("doctor-ec", b"three"),
            b"not a signature".to_vec(),
            signed_by("doctor", b"four")[..100].to_vec(),
        ];
        let originals = signatures.clone();
        let (kept, certificates) = within(&store, move |tx| {
            let kept = signatures
                .iter()
                .map(|s| {
                    let (kept, certificates) = cut(s);
                    store_certificates(tx, &certificates).map(|()| kept)
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok((kept, tx.scan_prefix(Table::Certificates, b"", 10)?))
        })
        .await
        .unwrap();
        let restored = {
            let kept = kept.clone();
            within(&store, move |tx| {
                kept.iter()
                    .map(|k| restore(tx, k))
                    .collect::<Result<Vec<_>, _>>()
            })
            .await
            .unwrap()
        };
        assert_eq!(restored, originals);
        // doctor, doctor-ec and the signing CA they share
        assert_eq!(certificates.len(), 3);
        for (hash, der) in &certificates {
            assert_eq!(hash.as_slice(), sha256(der));
            x509_cert::Certificate::from_der(der).expect("a whole certificate");
        }
        for k in &kept[..3] {
            assert_eq!(k.cuts.len(), 2, "the signer and the CA");
            assert!(k.rest.len() < 700, "{} bytes left", k.rest.len());
        }
        assert_eq!(kept[3], SignatureV1::whole(originals[3].clone()));
        assert_eq!(kept[4], SignatureV1::whole(originals[4].clone()));
    }

    /// A stored certificate that no longer matches its hash, or is gone, fails the restore.
    #[tokio::test]
    async fn a_damaged_certificate_table_is_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
        let (kept, certificates) = cut(&signed_by("doctor", b"one"));
        within(&store, move |tx| store_certificates(tx, &certificates))
            .await
            .unwrap();
        let (first, second) = (kept.cuts[0].sha256, kept.cuts[1].sha256);
        let damaged = {
            let kept = kept.clone();
            within(&store, move |tx| {
                tx.put(Table::Certificates, certificate_key(&first), b"\x30\x00");
                restore(tx, &kept)
            })
            .await
        };
        assert!(
            matches!(damaged, Err(store::Error::Corrupt(_))),
            "{damaged:?}"
        );
        let missing = within(&store, move |tx| {
            tx.delete(Table::Certificates, certificate_key(&second));
            restore(tx, &kept)
        })
        .await;
        assert!(
            matches!(missing, Err(store::Error::Corrupt(_))),
            "{missing:?}"
        );
    }
}
