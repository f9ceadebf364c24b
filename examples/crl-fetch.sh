#!/bin/sh
# Fetches one CA's CRL and puts it where rxgate reads it, only if it is better than the one there.
#
#   crl-fetch.sh URL CA_CERT DEST
#
# URL      where the CA publishes its CRL (its CRL distribution point; http(s):// or file://),
#          DER or PEM.
# CA_CERT  the CA that must have signed it (PEM), as the gateway's configuration names it.
# DEST     the CRL file the gateway's configuration names (`[signing] crls`, `[tls] client_crls`).
#
# The new CRL replaces DEST (atomically, as PEM) only if its signature verifies against CA_CERT,
# its nextUpdate is still ahead and its CRL number is not lower than DEST's. Otherwise DEST stays
# as it is and the script exits non-zero with the reason, so a timer's failure is visible. The
# gateway re-reads DEST every `crl_refresh_secs` and verifies it again before putting it in
# force; this job only brings it there. docs/OPERATIONS.md, "Certificates and CRLs".
set -eu

if [ "$#" -ne 3 ]; then
  echo "usage: crl-fetch.sh URL CA_CERT DEST" >&2
  exit 2
fi
url=$1
ca=$2
dest=$3

fail() {
  echo "crl-fetch: $dest: $*" >&2
  exit 1
}

work=$(mktemp -d "$(dirname "$dest")/.crl-fetch.XXXXXX")
trap 'rm -rf "$work"' EXIT

# Bounded: a CRL of a large CA is a few MiB; a stuck server does not hold the job for ever.
curl --fail --silent --show-error --location --max-time 60 --max-filesize 67108864 \
  --proto =http,https,file --proto-redir =http,https \
  --output "$work/fetched" --url "$url" || fail "fetching $url failed"

if ! openssl crl -inform DER -in "$work/fetched" -out "$work/new.pem" 2>/dev/null &&
  ! openssl crl -inform PEM -in "$work/fetched" -out "$work/new.pem" 2>/dev/null; then
  fail "what $url served is not a CRL"
fi

# `openssl crl -CAfile` exits 0 on a signature that does not verify (it prints "verify
# failure"): only its "verify OK" counts.
verdict=$(openssl crl -in "$work/new.pem" -CAfile "$ca" -noout 2>&1) || true
[ "$verdict" = "verify OK" ] || fail "the CRL from $url is not signed by $ca"

next=$(openssl crl -in "$work/new.pem" -noout -nextupdate | sed 's/^nextUpdate=//')
[ -n "$next" ] || fail "the CRL from $url has no nextUpdate"
# GNU date reads OpenSSL's date format; anything it cannot read fails closed.
next_s=$(date -u -d "$next" +%s) || fail "cannot read the nextUpdate $next"
if [ "$next_s" -le "$(date -u +%s)" ]; then
  fail "the CRL from $url is stale (nextUpdate $next)"
fi

number() {
  # The CRL number as 40 upper-case hex digits, so that numbers of up to 20 octets (RFC 5280)
  # compare as strings; absent: all zeros.
  # OpenSSL 3 prints crlNumber=0x0A, 1.1 crlNumber=0A.
  hex=$(openssl crl -in "$1" -noout -crlnumber 2>/dev/null | sed -n 's/^crlNumber=\(0x\)\{0,1\}//p')
  printf '%40s\n' "$hex" | tr ' abcdef' '0ABCDEF'
}
if [ -f "$dest" ]; then
  old=$(number "$dest")
  new=$(number "$work/new.pem")
  lower=$(printf '%s\n%s\n' "$old" "$new" | LC_ALL=C sort | head -n 1)
  if [ "$new" != "$old" ] && [ "$lower" = "$new" ]; then
    fail "the CRL from $url (number $new) is older than the one in place ($old)"
  fi
  if cmp -s "$work/new.pem" "$dest"; then
    exit 0
  fi
fi

chmod 0644 "$work/new.pem"
sync "$work/new.pem"
mv "$work/new.pem" "$dest"
echo "crl-fetch: $dest: replaced (nextUpdate $next)"
