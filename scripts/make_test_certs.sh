#!/usr/bin/env bash
# Makes a throwaway PKI for TLS tests and local trials, in DIR:
#   ca.pem/ca.key        a CA                  other-ca.pem  a CA nobody trusts
#   server.pem/.key      signed by ca, for localhost, 127.0.0.1 and shard.tessera.test
#   client.pem/.key      signed by ca (mutual TLS)
#   rogue-client.pem/.key   signed by other-ca
#   other-server.pem/.key   signed by other-ca, for localhost and 127.0.0.1
# P-256 keys, valid 2 days. Not for production: use cert-manager there
# (docs/deploy.md "Security").
set -euo pipefail
dir=${1:?usage: make_test_certs.sh DIR}
mkdir -p "$dir"
cd "$dir"
key() { openssl ecparam -name prime256v1 -genkey -noout -out "$1.key" 2> /dev/null; }
ca() {
  key "$1"
  openssl req -x509 -new -key "$1.key" -out "$1.pem" -days 2 -subj "/CN=$1" 2> /dev/null
}
leaf() {  # name ca extensions
  key "$1"
  openssl req -new -key "$1.key" -out "$1.csr" -subj "/CN=$1" 2> /dev/null
  printf '%s\n' "$3" > "$1.ext"
  openssl x509 -req -in "$1.csr" -CA "$2.pem" -CAkey "$2.key" -CAcreateserial -out "$1.pem" \
    -days 2 -extfile "$1.ext" 2> /dev/null
  rm -f "$1.csr" "$1.ext"
}
ca ca
ca other-ca
leaf server ca "subjectAltName=DNS:localhost,IP:127.0.0.1,DNS:shard.tessera.test"
leaf other-server other-ca "subjectAltName=DNS:localhost,IP:127.0.0.1"
leaf client ca "extendedKeyUsage=clientAuth"
leaf rogue-client other-ca "extendedKeyUsage=clientAuth"
chmod 600 ./*.key
