#!/usr/bin/env bash
# =====================================================================
#  rxgate DEVELOPMENT PKI -- DEVELOPMENT ONLY -- NEVER FOR PRODUCTION
#
#  Every private key generated here is committed to the repository and
#  therefore PUBLIC. Nothing issued by these CAs may ever be trusted
#  outside tests and local development.
# =====================================================================
#
# Regenerates, from scratch, everything under certs/hpki/, certs/tls/ and certs/gateway/
# (see README.md for what each file is for). Uses only the openssl CLI
# (OpenSSL 3.0+) and bash. The openssl CA databases live in a temp dir
# that is deleted on exit.
#
# Usage: certs/gen.sh        (can be run from any directory)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")"
CNF="$PWD/openssl/rxgate-dev.cnf"
[[ -f $CNF ]] || { echo "missing $CNF" >&2; exit 1; }

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

# Validity of everything that is meant to be valid (tests must never rot).
NOT_BEFORE=20250101000000Z
NOT_AFTER=20750101000000Z

# Dev-only policy OIDs under 1.3.6.1.4.1.32473, the enterprise number IANA reserves for
# documentation and examples (RFC 5612): never a real policy. (A 2.25 UUID OID would not do:
# its 128-bit arc exceeds what common X.509 libraries decode.)
POLICY_SIGN=1.3.6.1.4.1.32473.1.1
POLICY_AUTH=1.3.6.1.4.1.32473.1.2

# HPKI role (hcRole) OIDs.
ROLE_DOCTOR=1.2.392.100495.1.6.1.1
ROLE_DENTIST=1.2.392.100495.1.6.1.2
ROLE_PHARMACIST=1.2.392.100495.1.6.1.3
ROLE_DIRECTOR=1.2.392.100495.1.6.2.1

# Every $ENV:: variable referenced by the config must exist whenever openssl
# loads it; the functions below set the ones that matter per call.
export CA_DIR="$WORK/none" EE_KEY_USAGE=unset EE_POLICY=unset \
       HPKI_ROLE_OID=unset HPKI_ROLE_TEXT=unset TLS_CLIENT_URI=unset

# run CMD...: run quietly; on failure print the command's output and abort.
run() {
    local out
    if ! out="$("$@" 2>&1)"; then
        printf '%s\n' "$out" >&2
        echo "gen.sh: FAILED: $*" >&2
        exit 1
    fi
}

# genkey FILE ALG: unencrypted PKCS#8 PEM key. ALG: rsa2048 | rsa1024 | p256
genkey() {
    case $2 in
        rsa*) run openssl genpkey -algorithm RSA -pkeyopt "rsa_keygen_bits:${2#rsa}" -out "$1" ;;
        p256) run openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 \
                  -pkeyopt ec_param_enc:named_curve -out "$1" ;;
        *) echo "unknown key algorithm $2" >&2; exit 1 ;;
    esac
}

# use_ca CA: select (creating on first use) the throwaway database of CA,
# where CA is the path prefix of its files, e.g. hpki/sign-ca.
use_ca() {
    export CA_DIR="$WORK/db/$1"
    if [[ ! -d $CA_DIR ]]; then
        mkdir -p "$CA_DIR/newcerts"
        : > "$CA_DIR/index.txt"
        echo 01 > "$CA_DIR/serial"
        echo 01 > "$CA_DIR/crlnumber"
    fi
}

# issue ISSUER OUT ALG SUBJECT PROFILE [NOT_BEFORE NOT_AFTER]
#   The one place where certificates are made. ISSUER is the path prefix of
#   the issuing CA (e.g. hpki/sign-ca) or "self" for a self-signed root.
#   Writes OUT.key.pem and OUT.cert.pem. PROFILE is an extension section of
#   openssl/rxgate-dev.cnf.
issue() {
    local issuer=$1 out=$2 alg=$3 subj=$4 profile=$5
    local nb=${6:-$NOT_BEFORE} na=${7:-$NOT_AFTER}
    local -a signer

    genkey "$out.key.pem" "$alg"
    run openssl req -new -config "$CNF" -key "$out.key.pem" -subj "$subj" -out "$WORK/req.pem"
    if [[ $issuer == self ]]; then
        use_ca "$out"
        signer=(-selfsign -keyfile "$out.key.pem")
    else
        use_ca "$issuer"
        signer=(-cert "$issuer.cert.pem" -keyfile "$issuer.key.pem")
    fi
    run openssl ca -batch -notext -config "$CNF" "${signer[@]}" \
        -extensions "$profile" -startdate "$nb" -enddate "$na" \
        -in "$WORK/req.pem" -out "$out.cert.pem"
}

# hpki_ee NAME ALG CN SERIALNUMBER ORG ROLE_OID ROLE_TEXT [options]
#   HPKI document-signing end entity hpki/NAME. ROLE_OID "-" = no
#   SubjectDirectoryAttributes extension at all. Options (defaults):
#     --ku BITS          keyUsage, critical     (nonRepudiation)
#     --policy OID       certificatePolicies    ($POLICY_SIGN)
#     --issuer CA        issuing CA             (hpki/sign-ca)
#     --valid FROM TO    validity               ($NOT_BEFORE $NOT_AFTER)
hpki_ee() {
    local name=$1 alg=$2 cn=$3 sn=$4 org=$5 role_oid=$6 role_text=$7
    shift 7
    local ku=nonRepudiation policy=$POLICY_SIGN issuer=hpki/sign-ca
    local nb=$NOT_BEFORE na=$NOT_AFTER profile=hpki_ee
    while (($#)); do
        case $1 in
            --ku)     ku=$2; shift 2 ;;
            --policy) policy=$2; shift 2 ;;
            --issuer) issuer=$2; shift 2 ;;
            --valid)  nb=$2; na=$3; shift 3 ;;
            *) echo "hpki_ee: unknown option $1" >&2; exit 1 ;;
        esac
    done
    [[ $role_oid == - ]] && profile=hpki_ee_norole
    export EE_KEY_USAGE=$ku EE_POLICY=$policy HPKI_ROLE_OID=$role_oid HPKI_ROLE_TEXT=$role_text
    issue "$issuer" "hpki/$name" "$alg" "/C=JP/O=$org/CN=$cn/serialNumber=$sn" "$profile" "$nb" "$na"
}

# tls_client NAME KIND CODE ORG [ISSUER]
#   Institution mTLS client certificate tls/NAME, named by the URI SAN
#   urn:rxgate:institution:KIND:CODE, subject C=JP, O=ORG, CN=KIND-CODE.
tls_client() {
    local name=$1 kind=$2 code=$3 org=$4 issuer=${5:-tls/ca}
    export TLS_CLIENT_URI="urn:rxgate:institution:$kind:$code"
    issue "$issuer" "tls/$name" p256 "/C=JP/O=$org/CN=$kind-$code" tls_client
}

# revoke CA NAME REASON: revoke CA's certificate NAME (path prefix).
#   The revocation date is pinned to 2025-01-02T00:00:00Z (by editing the
#   throwaway database) so that the CRLs are reproducible and the fixed-date
#   "stale" CRL below is consistent with it.
REVOKED_AT=250102000000Z
revoke() {
    use_ca "$1"
    run openssl ca -batch -config "$CNF" -cert "$1.cert.pem" -keyfile "$1.key.pem" \
        -revoke "$2.cert.pem" -crl_reason "$3"
    sed -i -E "s/^(R\t[^\t]*\t)[0-9]+Z,/\1$REVOKED_AT,/" "$CA_DIR/index.txt"
}

# gencrl CA OUT [openssl ca options]: CRL of CA (default: 36500 days) in OUT.
gencrl() {
    local ca=$1 out=$2
    shift 2
    use_ca "$ca"
    run openssl ca -batch -config "$CNF" -cert "$ca.cert.pem" -keyfile "$ca.key.pem" \
        -gencrl -crldays 36500 "$@" -out "$out"
}

rm -rf hpki tls gateway
mkdir hpki tls gateway

# =========================================================== A. HPKI
DEV_O="rxgate development"
issue self         hpki/root    rsa2048 "/C=JP/O=$DEV_O/CN=DEV rxgate HPKI Root CA"    hpki_root_ca
issue hpki/root    hpki/sign-ca rsa2048 "/C=JP/O=$DEV_O/CN=DEV rxgate HPKI Signing CA" hpki_sign_ca

CLINIC="DEV Minato Clinic"
DENTAL="DEV Minato Dental Clinic"
PHARMACY="DEV Minato Pharmacy"
HOSPITAL="DEV Minato Hospital"
#       name              alg     CN                             serialNumber O          role OID          role text
hpki_ee doctor            rsa2048 "DEV Doctor Taro Iryo"          DEV-DR-0001 "$CLINIC"   $ROLE_DOCTOR     "Medical Doctor"
hpki_ee doctor-ec         p256    "DEV Doctor Hanako Iryo"        DEV-DR-0002 "$CLINIC"   $ROLE_DOCTOR     "Medical Doctor"
hpki_ee dentist           rsa2048 "DEV Dentist Jiro Shika"        DEV-DDS-0001 "$DENTAL"  $ROLE_DENTIST    "Dentist"
hpki_ee pharmacist        rsa2048 "DEV Pharmacist Saburo Yakuzai" DEV-PH-0001 "$PHARMACY" $ROLE_PHARMACIST "Pharmacist"
hpki_ee pharmacist-ec     p256    "DEV Pharmacist Yoko Yakuzai"   DEV-PH-0002 "$PHARMACY" $ROLE_PHARMACIST "Pharmacist"
# negative cases
hpki_ee director          rsa2048 "DEV Director Shiro Kanri"      DEV-DIR-0001 "$HOSPITAL" $ROLE_DIRECTOR  "Director of Hospital"
hpki_ee norole            rsa2048 "DEV No Role"                   DEV-NR-0001 "$CLINIC"   -                -
hpki_ee doctor-mismatch   rsa2048 "DEV Doctor Mismatch"           DEV-DR-0009 "$CLINIC"   $ROLE_DOCTOR     "Pharmacist"
hpki_ee doctor-auth       rsa2048 "DEV Doctor Taro Iryo (auth)"   DEV-DR-0001 "$CLINIC"   $ROLE_DOCTOR     "Medical Doctor" \
        --ku digitalSignature --policy $POLICY_AUTH
hpki_ee doctor-authpolicy rsa2048 "DEV Doctor Taro Iryo"          DEV-DR-0001 "$CLINIC"   $ROLE_DOCTOR     "Medical Doctor" \
        --policy $POLICY_AUTH
hpki_ee doctor-expired    rsa2048 "DEV Doctor Expired"            DEV-DR-0003 "$CLINIC"   $ROLE_DOCTOR     "Medical Doctor" \
        --valid 20200101000000Z 20210101000000Z
hpki_ee doctor-revoked    rsa2048 "DEV Doctor Revoked"            DEV-DR-0004 "$CLINIC"   $ROLE_DOCTOR     "Medical Doctor"
hpki_ee doctor-rsa1024    rsa1024 "DEV Doctor Weak Key"           DEV-DR-0005 "$CLINIC"   $ROLE_DOCTOR     "Medical Doctor"
hpki_ee pharmacist-revoked rsa2048 "DEV Pharmacist Revoked"       DEV-PH-0004 "$PHARMACY" $ROLE_PHARMACIST "Pharmacist"

# CRLs. The stale CRL is issued first (lower CRL number) with fixed dates
# (thisUpdate 2025-01-03, nextUpdate one day later) so it is already past
# its nextUpdate the moment it is generated; the current CRL supersedes it.
revoke hpki/sign-ca hpki/doctor-revoked keyCompromise
revoke hpki/sign-ca hpki/pharmacist-revoked keyCompromise
gencrl hpki/sign-ca hpki/sign-ca-stale.crl.pem -crl_lastupdate 20250103000000Z -crl_nextupdate 20250104000000Z
gencrl hpki/sign-ca hpki/sign-ca.crl.pem
gencrl hpki/root    hpki/root.crl.pem

# Untrusted hierarchy (not chained to hpki/root).
issue self hpki/untrusted-root rsa2048 "/C=JP/O=$DEV_O/CN=DEV rxgate UNTRUSTED Root CA" hpki_root_ca
hpki_ee untrusted-doctor  rsa2048 "DEV Doctor Untrusted"          DEV-DR-0006 "$CLINIC"   $ROLE_DOCTOR     "Medical Doctor" \
        --issuer hpki/untrusted-root

cat hpki/sign-ca.cert.pem hpki/root.cert.pem > hpki/chain.pem

# ========================================================= B. TLS (mTLS)
issue self   tls/ca     p256 "/C=JP/O=$DEV_O/CN=DEV rxgate Institution Root CA" tls_ca
issue tls/ca tls/server p256 "/C=JP/O=$DEV_O/CN=DEV rxgate server"              tls_server

#          name             kind       code       O
tls_client clinic           clinic     1310000001 "DEV Minato Clinic"
tls_client clinic2          clinic     1310000002 "DEV Shibuya Clinic"
tls_client pharmacy         pharmacy   1340000001 "DEV Minato Pharmacy"
tls_client pharmacy2        pharmacy   1340000002 "DEV Shibuya Pharmacy"
tls_client management       management 9990000001 "DEV Management Service"
tls_client operator         operator   9990000002 "DEV rxgate Operations"
tls_client pharmacy-revoked pharmacy   1340000099 "DEV Closed Pharmacy"
# Sixteen more pharmacies, for the test in which pharmacies race to receive one prescription.
for i in $(seq -w 1 16); do
    tls_client "race-pharmacy-$i" pharmacy "13410000$i" "DEV Race Pharmacy $i"
done

revoke tls/ca tls/pharmacy-revoked cessationOfOperation
gencrl tls/ca tls/ca.crl.pem

# Untrusted TLS CA and a client issued by it.
issue self tls/untrusted-ca p256 "/C=JP/O=$DEV_O/CN=DEV rxgate UNTRUSTED Institution Root CA" tls_ca
tls_client untrusted-clinic clinic     1310000099 "DEV Untrusted Clinic" tls/untrusted-ca

# ============================================================ gateway signing identity
# The gateway's own ECDSA P-256 key and a self-signed certificate ([gateway] in the config): it
# signs relay attestations. Receiving intakes pin the certificate (intake.trusted_senders). The
# untrusted one signs attestations that a receiving intake must refuse.
gateway_identity() {
    genkey "gateway/$1.key.pem" p256
    run openssl req -x509 -new -key "gateway/$1.key.pem" -subj "/C=JP/O=$DEV_O/CN=$2" \
        -days 18000 -addext "keyUsage=critical,digitalSignature" \
        -addext "basicConstraints=critical,CA:FALSE" -out "gateway/$1.cert.pem"
}
gateway_identity gateway           "DEV rxgate gateway signing"
gateway_identity untrusted-gateway "DEV rxgate UNTRUSTED gateway signing"
# Two more gateways, for the tests of several gateways over one database (each its own identity).
gateway_identity gateway-b         "DEV rxgate gateway B signing"
gateway_identity gateway-c         "DEV rxgate gateway C signing"

# ============================================================ self-check
# The SubjectDirectoryAttributes of hpki/doctor must be byte-identical to
# the real HPKI Medical Doctor encoding.
SDA_DOCTOR=303430320606288185420001312831263024a0223120a00c060a2a830886910f01060101a2100c0e4d65646963616c20446f63746f72
off=$(openssl asn1parse -in hpki/doctor.cert.pem |
      awk '/:X509v3 Subject Directory Attributes/ { getline; sub(/:.*/, ""); print $1 + 0; exit }')
openssl asn1parse -in hpki/doctor.cert.pem -strparse "$off" -noout -out "$WORK/sda.der"
got=$(od -An -v -tx1 "$WORK/sda.der" | tr -d ' \n')
[[ $got == "$SDA_DOCTOR" ]] || { echo "SDA of hpki/doctor differs from the reference: $got" >&2; exit 1; }

for n in doctor doctor-ec dentist pharmacist pharmacist-ec director norole doctor-mismatch \
         doctor-auth doctor-authpolicy doctor-revoked pharmacist-revoked doctor-rsa1024; do
    run openssl verify -CAfile hpki/root.cert.pem -untrusted hpki/sign-ca.cert.pem -purpose any "hpki/$n.cert.pem"
done
for n in server clinic clinic2 pharmacy pharmacy2 management operator pharmacy-revoked; do
    run openssl verify -CAfile tls/ca.cert.pem "tls/$n.cert.pem"
done

echo "gen.sh: DEV PKI regenerated in $PWD (DEVELOPMENT ONLY -- NEVER FOR PRODUCTION)"
