# tests/env/ldap/material.sh — sourced by tests/env/ldap-up: the LDAP test
# users and the material made for them once and cached (CAs, the server
# certificate, S/MIME certificates, OpenPGP keys, passwords, the LDIF both
# slapds are loaded from). Uses ldap-up's die, DOMAIN, BASE, … and sets
# USERS, PRIMARY_PROXY and CACHE.
# shellcheck shell=bash

# Bump when the generated material (users, keys, certificates, LDIF) changes.
MATERIAL_VERSION=v1

# Users. id|address|certificates|openpgp
#   certificates: space-separated, in the entry's order (empty: none):
#     valid           RSA 2048 from the user CA, 10 years, SAN email:<address>
#     valid=ADDR      the same, for another address (SAN email:ADDR)
#     expired         the same, valid 2020-01-01 … 2021-01-01
#     pkcs7           valid, stored in userSMIMECertificate as a DER PKCS#7
#                     SignedData bag instead of in userCertificate;binary
#   openpgp: binary | armored (how pgpKey holds it) | -
# Every person entry is uid=<id>,ou=people,dc=autoencrypt,dc=test with
# mail: <address>; primary also gets proxyAddresses (below).
USERS=(
  "one|one@$DOMAIN|valid|-"
  "two|two@$DOMAIN|valid valid|-"
  "expired|expired@$DOMAIN|expired valid|-"
  "onlyexpired|onlyexpired@$DOMAIN|expired|-"
  "pkcs7|pkcs7@$DOMAIN|pkcs7|-"
  "pgp|pgp@$DOMAIN||binary"
  "pgparmored|pgparmored@$DOMAIN||armored"
  "both|both@$DOMAIN|valid|binary"
  "nokey|nokey@$DOMAIN||-"
  "primary|primary@$DOMAIN|valid|-"
  "wrongaddr|wrongaddr@$DOMAIN|valid=someone-else@$DOMAIN|-"
  "local|local@$LOCAL_DOMAIN|valid|-"
  "dup1|dup@$DOMAIN|valid|-"
  "dup2|dup@$DOMAIN|valid|-"
  "upper|Mixed.Case@$DOMAIN|valid|-"
)
PRIMARY_PROXY=("SMTP:primary@$DOMAIN" "smtp:alias@$DOMAIN")

# ---------------------------------------------------------------------------
# Material cache: CAs, the server certificate, user certificates, OpenPGP
# keys, passwords and the LDIF built from them.

make_ca() { # dir name cn
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -noenc \
    -keyout "$1/$2-key.pem" -out "$1/$2.pem" -days 3650 -subj "/CN=$3" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    2>/dev/null || die "openssl could not make the CA $3"
}

make_server_cert() { # dir
  local d=$1
  make_ca "$d" ca "autoencrypt LDAP test CA"
  make_ca "$d" wrong-ca "autoencrypt LDAP unrelated CA"
  rm -f "$d/wrong-ca-key.pem"
  printf '%s\n' \
    "basicConstraints=critical,CA:FALSE" \
    "keyUsage=critical,digitalSignature" \
    "extendedKeyUsage=serverAuth" \
    "subjectAltName=IP:127.0.0.1,DNS:localhost" \
    "subjectKeyIdentifier=hash" \
    "authorityKeyIdentifier=keyid" >"$d/server.ext"
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -noenc \
    -keyout "$d/server-key.pem" -out "$d/server.csr" -subj "/CN=localhost" 2>/dev/null
  openssl x509 -req -in "$d/server.csr" -CA "$d/ca.pem" -CAkey "$d/ca-key.pem" -CAcreateserial \
    -days 3650 -extfile "$d/server.ext" -out "$d/server.pem" 2>/dev/null ||
    die "openssl could not issue the server certificate"
  rm -f "$d/server.csr" "$d/server.ext" "$d/ca-key.pem" "$d/ca.srl"
}

make_user_ca() { # dir
  local d=$1
  mkdir -p "$d/uca/new"
  : >"$d/uca/index.txt"
  openssl rand -hex 16 >"$d/uca/serial"
  openssl req -x509 -newkey rsa:2048 -noenc -keyout "$d/user-ca-key.pem" -out "$d/user-ca.pem" \
    -days 3650 -subj "/CN=autoencrypt LDAP user CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    2>/dev/null || die "openssl could not make the user CA"
  cat >"$d/uca/openssl.cnf" <<EOF
[ ca ]
default_ca = uca
[ uca ]
database = $d/uca/index.txt
new_certs_dir = $d/uca/new
serial = $d/uca/serial
certificate = $d/user-ca.pem
private_key = $d/user-ca-key.pem
default_md = sha256
policy = any
unique_subject = no
copy_extensions = none
email_in_dn = no
[ any ]
commonName = supplied
[ smime ]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = emailProtection
subjectAltName = email:\$ENV::SAN_EMAIL
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
EOF
}

make_user_cert() { # cadir userdir n email valid|expired
  local ca=$1 d=$2 n=$3 email=$4 kind=$5 dates
  if [ "$kind" = expired ]; then
    # openssl 3.0's x509/req cannot back-date; openssl ca can.
    dates=(-startdate 20200101000000Z -enddate 20210101000000Z)
  else
    dates=(-days 3650)
  fi
  openssl req -new -newkey rsa:2048 -noenc -keyout "$d/key$n.pem" -out "$d/req$n.csr" \
    -subj "/CN=$email" 2>/dev/null || die "openssl could not make a key for $email"
  SAN_EMAIL=$email openssl ca -batch -notext -config "$ca/uca/openssl.cnf" -extensions smime \
    -in "$d/req$n.csr" -out "$d/cert$n.pem" "${dates[@]}" 2>"$d/ca.log" || {
    cat "$d/ca.log" >&2
    die "openssl ca could not issue $email's certificate"
  }
  rm -f "$d/req$n.csr" "$d/ca.log"
  openssl x509 -in "$d/cert$n.pem" -outform DER -out "$d/cert$n.der"
  sha256sum "$d/cert$n.der" | cut -c1-64 >"$d/cert$n.sha256"
}

make_pgp() { # gnupghome userdir address
  local g=$1 d=$2 addr=$3 fpr
  local gpg=(gpg --homedir "$g" --batch --no-tty --pinentry-mode loopback --passphrase '')
  fpr=$("${gpg[@]}" --status-fd 1 --quick-gen-key "<$addr>" ed25519 sign never 2>/dev/null |
    awk '$2 == "KEY_CREATED" { print $4 }')
  [ -n "$fpr" ] || die "gpg did not create a key for $addr"
  "${gpg[@]}" --quick-add-key "$fpr" cv25519 encr never 2>/dev/null ||
    die "gpg did not add an encryption subkey for $addr"
  echo "$fpr" >"$d/pgp.fpr"
  "${gpg[@]}" --export "$fpr" >"$d/pgp-public.pgp" 2>/dev/null
  "${gpg[@]}" --armor --export "$fpr" >"$d/pgp-public.asc" 2>/dev/null
  [ -s "$d/pgp-public.pgp" ] || die "gpg exported nothing for $addr"
}

b64() { base64 -w0 <"$1"; }

# The LDIF both databases are loaded from.
write_ldif() { # material dir
  local m=$1 entry id addr certs pgp n c email
  cat <<EOF
dn: $BASE
objectClass: dcObject
objectClass: organization
dc: autoencrypt
o: autoencrypt-milter LDAP test directory

dn: $PEOPLE
objectClass: organizationalUnit
ou: people

dn: $SERVICES
objectClass: organizationalUnit
ou: services

dn: $BIND_DN
objectClass: organizationalRole
objectClass: simpleSecurityObject
cn: milter
description: the milter's service account (simple bind, password in milter.pw)
userPassword: $(slappasswd -h '{SSHA}' -s "$(cat "$m/milter.pw")")

EOF
  for entry in "${USERS[@]}"; do
    IFS='|' read -r id addr certs pgp <<<"$entry"
    echo "dn: uid=$id,$PEOPLE"
    echo "objectClass: inetOrgPerson"
    echo "objectClass: autoencryptPgpKeyHolder"
    echo "objectClass: autoencryptProxyAddresses"
    echo "uid: $id"
    echo "cn: $id"
    echo "sn: $id"
    echo "mail: $addr"
    if [ "$id" = primary ]; then
      for c in "${PRIMARY_PROXY[@]}"; do echo "proxyAddresses: $c"; done
    fi
    n=0
    for c in $certs; do
      n=$((n + 1))
      if [ "$c" = pkcs7 ]; then
        echo "userSMIMECertificate:: $(b64 "$m/users/$id/cert$n.p7b")"
      else
        echo "userCertificate;binary:: $(b64 "$m/users/$id/cert$n.der")"
      fi
    done
    case "$pgp" in
      binary) echo "pgpKey:: $(b64 "$m/users/$id/pgp-public.pgp")" ;;
      armored) echo "pgpKey:: $(b64 "$m/users/$id/pgp-public.asc")" ;;
    esac
    echo
  done
}

gen_material() { # target
  local target=$1 entry id addr certs pgp n c email kind
  # Not local: the EXIT trap (of the flock subshell this runs in) removes
  # them should anything fail.
  tmp=$(mktemp -d "$target.tmp.XXXXXX")
  g=$(mktemp -d /tmp/ael-gen.XXXXXX)
  trap 'gpgconf --homedir "$g" --kill all 2>/dev/null; rm -rf "$g" "$tmp"' EXIT
  make_server_cert "$tmp"
  make_user_ca "$tmp"
  for f in milter wrong admin; do openssl rand -hex 16 >"$tmp/$f.pw"; done
  # The password is the file's one line without its newline (slappasswd -T
  # and ldapsearch -y would take the newline too).
  slappasswd -h '{SSHA}' -s "$(cat "$tmp/admin.pw")" >"$tmp/admin.hash"
  for entry in "${USERS[@]}"; do
    IFS='|' read -r id addr certs pgp <<<"$entry"
    mkdir -p "$tmp/users/$id"
    n=0
    for c in $certs; do
      n=$((n + 1))
      email=$addr kind=valid
      case "$c" in
        valid | pkcs7) ;;
        expired) kind=expired ;;
        valid=*) email=${c#valid=} ;;
        *) die "unknown certificate kind $c for $id" ;;
      esac
      make_user_cert "$tmp" "$tmp/users/$id" "$n" "$email" "$kind"
      echo "$email" >"$tmp/users/$id/cert$n.email"
      if [ "$c" = pkcs7 ]; then
        openssl crl2pkcs7 -nocrl -certfile "$tmp/users/$id/cert$n.pem" -outform DER \
          -out "$tmp/users/$id/cert$n.p7b" || die "openssl crl2pkcs7 failed for $id"
      fi
    done
    [ "$pgp" = - ] || make_pgp "$g" "$tmp/users/$id" "$addr"
  done
  gpgconf --homedir "$g" --kill all 2>/dev/null || true
  mkdir -p "$tmp/gnupg"
  cp -r "$g/pubring.kbx" "$g/trustdb.gpg" "$g/private-keys-v1.d" "$tmp/gnupg/"
  rm -rf "$g" "$tmp/uca"
  write_ldif "$tmp" >"$tmp/data.ldif"
  echo "$MATERIAL_VERSION" >"$tmp/VERSION"
  mv -T "$tmp" "$target"
}

cache_base=${LDAP_ENV_CACHE:-${CARGO_TARGET_DIR:-$repo/target}/ldap-env-cache}
mkdir -p "$cache_base"
CACHE=$cache_base/$MATERIAL_VERSION
if [ ! -f "$CACHE/VERSION" ]; then
  (
    flock 9
    if [ ! -f "$CACHE/VERSION" ]; then
      rm -rf "$CACHE"
      gen_material "$CACHE"
    fi
  ) 9>"$cache_base/$MATERIAL_VERSION.lock"
fi
# The certificates must still be valid (the cache may be years old).
for f in "$CACHE/server.pem" "$CACHE/users/one/cert1.pem"; do
  openssl x509 -checkend 86400 -noout -in "$f" >/dev/null ||
    die "$f expires within a day: remove $CACHE"
done
