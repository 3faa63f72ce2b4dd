#!/usr/bin/env bash
# A customer's encrypted upload, exactly as docs/intake-customers.md shows it
# (tests/readme.rs keeps the two equal); tests/intake.rs runs this file against a real
# sshd and the gateway.
#   customer_upload.sh FILE.csv
# --- snippet: begin ---
set -euo pipefail
# Your settings, from your account manager:
GATEWAY="${GATEWAY:-https://gateway.example.com}"        # the gateway's public URL
ACCOUNT="${ACCOUNT:-ACCT-1}"                              # your account id
KEY_ID="${KEY_ID:-ec491319-9823-48cd-b6a1-6bb0bc666d75}"  # the keyId of your key
RECIPIENT="${RECIPIENT:-email1@company1.com}"             # the key's user id (email)
CLIENT_EMAIL="${CLIENT_EMAIL:-email1@company1.com}"       # who gets the notices
SFTP_TARGET="${SFTP_TARGET:-acct1@sftp.example.com}"      # your SFTP login
SFTP_OPTS="${SFTP_OPTS:--i $HOME/.ssh/id_ed25519}"
FILE="$1"                                                 # users_data.csv

# 1. Fetch the current public key before each upload (a rotation brings a new one).
curl -fsS -o intake-key.asc "$GATEWAY/.well-known/pgp-keys/$ACCOUNT?keyId=$KEY_ID"
gpg --batch --import intake-key.asc

# 2. Encrypt: FILE.asc, ASCII-armored (binary .pgp works too, and is smaller).
gpg --batch --yes --encrypt --armor --trust-model always -r "$RECIPIENT" "$FILE"

# 3. The manifest: which key, what the file holds, how its columns map.
cat > "$FILE.manifest" <<JSON
{
  "fileName": "$FILE.asc",
  "type": "profile",
  "columns": {
    "email": {"ctName": "identity", "dataType": "String"},
    "name": {"ctName": "Name", "dataType": "String"},
    "age": {"dataType": "Integer"}
  },
  "clientEmail": "$CLIENT_EMAIL",
  "keyId": "$KEY_ID"
}
JSON

# 4. Upload the file, then its manifest, over SFTP.
sftp -b - $SFTP_OPTS "$SFTP_TARGET" <<SFTP
put $FILE.asc
put $FILE.manifest
SFTP
# --- snippet: end ---
