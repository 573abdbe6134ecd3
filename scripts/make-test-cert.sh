#!/usr/bin/env bash
# Makes a test CA and a server certificate it signs, for trying tickgate's TLS locally:
#   scripts/make-test-cert.sh [DIR] [NAME...]
# DIR (default ./tls-test) gets ca.pem (trust this in the client), chain.pem (server
# certificate then CA: tls.cert_file), key.pem (tls.key_file). NAMEs are the server's DNS
# names (default: localhost; 127.0.0.1 is always added as an IP). ECDSA P-256, valid 30 days.
# Not for production: use your CA or ACME (Let's Encrypt) there.
set -euo pipefail

dir="${1:-tls-test}"
shift || true
names=("$@")
[ "${#names[@]}" -gt 0 ] || names=(localhost)

command -v openssl >/dev/null || { echo "make-test-cert: openssl is needed (apt-get install openssl)" >&2; exit 1; }
mkdir -p "$dir"
cd "$dir"

san="IP:127.0.0.1"
for name in "${names[@]}"; do san="$san,DNS:$name"; done

openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
    -subj "/CN=tickgate test CA" -keyout ca-key.pem -out ca.pem \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -subj "/CN=${names[0]}" -keyout key.pem -out server.csr 2>/dev/null
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 30 -out server.pem \
    -extfile <(printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n' "$san") 2>/dev/null
cat server.pem ca.pem > chain.pem
rm -f server.csr ca.srl
chmod 600 key.pem ca-key.pem

echo "made in $dir: ca.pem (trust it), chain.pem (tls.cert_file), key.pem (tls.key_file) for $san"
