#!/usr/bin/env node
// An hpke-gateway client as a customer would write it, on @hpke/core (RFC 9180): base
// mode, empty AAD, info = the account id, in every suite the gateway speaks (X25519 with
// AES-256-GCM, AES-128-GCM or ChaCha20-Poly1305, and post-quantum X-Wing with
// AES-256-GCM). Envelope, both ways: enc (32 bytes; X-Wing 1,120) || ciphertext || tag.
//
//   node client.mjs keys --dir DIR [--suite NAME]
//       writes DIR/js-customer.{private,pub}.b64 (X25519, raw 32 bytes, base64), or for
//       an X-Wing suite DIR/js-xwing-customer.{private,pub}.b64 (32-byte seed; 1,216 bytes)
//   node client.mjs run --url URL --server-public FILE|published --customer-private FILE \
//       --account ACCT --off-account ACCT_OFF --name NAME [--suite NAME]
//       runs the interop cases against a gateway, one JSON line per case on stdout;
//       exits 1 if any expectation fails. FILE for --server-public: raw base64 or SPKI
//       PEM; `published` fetches /.well-known/hpke-keys?suite=NAME&format=raw.

// --- snippet: begin ---
import { Aes256Gcm, CipherSuite, HkdfSha256 } from "@hpke/core";
import { DhkemX25519HkdfSha256 } from "@hpke/dhkem-x25519";

const HPKE = "application/octet-stream+hpke";
// The gateway's default suite, x25519-aes-256-gcm (for the others, see below).
const suite = new CipherSuite({
  kem: new DhkemX25519HkdfSha256(),
  kdf: new HkdfSha256(),
  aead: new Aes256Gcm(),
});

// Seal a request body to the gateway's public key: enc || ciphertext || tag, raw bytes.
async function sealRequest(suite, serverPublicKey, account, plaintext) {
  const info = new TextEncoder().encode(account); // HPKE info = the account id
  const { enc, ct } = await suite.seal({ recipientPublicKey: serverPublicKey, info }, plaintext);
  return Buffer.concat([new Uint8Array(enc), new Uint8Array(ct)]);
}

// Open a response envelope with the customer's private key: it begins with enc.
async function openResponse(suite, customerPrivateKey, account, envelope) {
  const info = new TextEncoder().encode(account);
  const enc = envelope.subarray(0, suite.kem.encSize); // 32 bytes for X25519
  const ct = envelope.subarray(suite.kem.encSize);
  return new Uint8Array(await suite.open({ recipientKey: customerPrivateKey, enc, info }, ct));
}

// POST an encrypted body (e.g. to `${gateway}/1/upload`) and decrypt the encrypted answer.
// serverPublicKey:    await suite.kem.deserializePublicKey(gatewayPublicKeyBytes)
// customerPrivateKey: await suite.kem.deserializePrivateKey(yourPrivateKeyBytes)
async function postEncrypted(url, { suite, serverPublicKey, customerPrivateKey, account, passcode, headers }, plaintext) {
  const res = await fetch(url, {
    method: "POST",
    headers: {
      "Content-Type": HPKE,
      "Accept": HPKE,
      "X-CleverTap-Account-Id": account,
      "X-CleverTap-Passcode": passcode,
      ...headers,
    },
    body: await sealRequest(suite, serverPublicKey, account, plaintext),
  });
  const body = new Uint8Array(await res.arrayBuffer()); // bytes, never res.text()
  if (!isHpke(res)) return { status: res.status, error: body }; // gateway errors are plain JSON
  const answer = await openResponse(suite, customerPrivateKey, account, body).catch((cause) => {
    throw Object.assign(new Error(`HTTP ${res.status}: the response does not decrypt`, { cause }), { status: res.status });
  });
  return { status: res.status, plaintext: answer };
}

const isHpke = (res) => (res.headers.get("content-type") ?? "").split(";")[0].trim().toLowerCase() === HPKE;
// --- snippet: end ---

// --- snippet: begin pq ---
// npm install @hpke/hybridkem-x-wing@0.7.0 (and, for ChaCha20-Poly1305 suites, @hpke/chacha20poly1305)
import { XWing } from "@hpke/hybridkem-x-wing";

// Post-quantum: X-Wing (ML-KEM-768 + X25519) with AES-256-GCM, the gateway's xwing-aes-256-gcm.
const xwingSuite = new CipherSuite({ kem: new XWing(), kdf: new HkdfSha256(), aead: new Aes256Gcm() });

// Once: your key pair. Keep the private key (a 32-byte seed); send us the public key
// (1,216 bytes, base64) with `public_key_suite = "xwing-aes-256-gcm"`.
async function newXWingKeyPair() {
  const { privateKey, publicKey } = await xwingSuite.kem.generateKeyPair();
  return {
    privateKey: new Uint8Array(await xwingSuite.kem.serializePrivateKey(privateKey)),
    publicKey: new Uint8Array(await xwingSuite.kem.serializePublicKey(publicKey)),
  };
}

// Before uploading: the gateway's X-Wing key, as it publishes it (the one to use first).
async function gatewayKey(gateway, suite = xwingSuite, name = "xwing-aes-256-gcm") {
  const res = await fetch(`${gateway}/.well-known/hpke-keys?suite=${name}&format=raw`);
  if (!res.ok) throw new Error(`HTTP ${res.status} for the gateway's ${name} key`);
  const line = (await res.text()).split("\n")[0];
  return suite.kem.deserializePublicKey(new Uint8Array(Buffer.from(line, "base64")));
}

// Then, as above: postEncrypted(url, { suite: xwingSuite, serverPublicKey: await gatewayKey(gateway),
//   customerPrivateKey: await xwingSuite.kem.deserializePrivateKey(yourPrivateKey), account, passcode }, body)
// --- snippet: end pq ---

import { Aes128Gcm } from "@hpke/core";
import { Chacha20Poly1305 } from "@hpke/chacha20poly1305";

import { mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { parseArgs } from "node:util";

const PASSCODE = "interop-passcode";
const UPLOAD_JSON =
  '{"d":[{"identity":"18121994201671","type":"profile","profileData":{"Name":"Test Name","Email":"test@example.com"}}]}';
const EVENTS_JSON = '{"event_name":"App Launched","from":20240101,"to":20240131}';
const ECHO_BYTES = 1024 * 1024;
// DER prefix of an X25519 SubjectPublicKeyInfo: SEQUENCE { SEQUENCE { OID 1.3.101.110 }, BIT STRING (32 bytes) }
const X25519_SPKI_PREFIX = Buffer.from("302a300506032b656e032100", "hex");

const utf8 = (s) => new TextEncoder().encode(s);
const b64 = (bytes) => Buffer.from(bytes ?? []).toString("base64");
const text = (bytes) => (bytes ? new TextDecoder().decode(bytes) : "");

// The gateway's suites by name (`--suite`), as its configuration and CLI name them.
const SUITES = {
  "x25519-aes-256-gcm": suite,
  "x25519-aes-128-gcm": new CipherSuite({ kem: new DhkemX25519HkdfSha256(), kdf: new HkdfSha256(), aead: new Aes128Gcm() }),
  "x25519-chacha20-poly1305": new CipherSuite({ kem: new DhkemX25519HkdfSha256(), kdf: new HkdfSha256(), aead: new Chacha20Poly1305() }),
  "xwing-aes-256-gcm": xwingSuite,
};

function suiteNamed(name = "x25519-aes-256-gcm") {
  const s = SUITES[name];
  if (!s) throw new Error(`--suite: expected one of ${Object.keys(SUITES).join(", ")}, got ${name}`);
  return s;
}

function decodeBase64Key(text, what, length) {
  const s = text.trim();
  const bytes = Buffer.from(s, "base64");
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(s) || bytes.length !== length) {
    throw new Error(`${what}: expected ${length} bytes in standard base64, got ${JSON.stringify(s.slice(0, 60))}`);
  }
  return new Uint8Array(bytes);
}

// The gateway's public key: raw base64 (`public-key --format raw`) or, for X25519, SPKI
// PEM (`--format pem`).
async function loadServerPublicKey(file, suite) {
  const text = await readFile(file, "utf8");
  let raw;
  if (text.includes("-----BEGIN")) {
    const m = /-----BEGIN PUBLIC KEY-----([\s\S]*?)-----END PUBLIC KEY-----/.exec(text);
    if (!m) throw new Error(`${file}: expected a "PUBLIC KEY" PEM block`);
    const der = Buffer.from(m[1].replace(/\s+/g, ""), "base64");
    if (der.length !== 44 || !der.subarray(0, 12).equals(X25519_SPKI_PREFIX)) {
      throw new Error(`${file}: not an X25519 SubjectPublicKeyInfo (${der.length} bytes of DER)`);
    }
    raw = new Uint8Array(der.subarray(der.length - 32));
  } else {
    raw = decodeBase64Key(text, file, suite.kem.publicKeySize);
  }
  return suite.kem.deserializePublicKey(raw);
}

async function loadCustomerPrivateKey(file, suite) {
  return suite.kem.deserializePrivateKey(decodeBase64Key(await readFile(file, "utf8"), file, suite.kem.privateKeySize));
}

async function keys({ dir, suite: name }) {
  if (!dir) throw new Error("keys: --dir DIR is required");
  await mkdir(dir, { recursive: true });
  const s = suiteNamed(name);
  let sk, pk, file;
  if (s === xwingSuite) {
    ({ privateKey: sk, publicKey: pk } = await newXWingKeyPair());
    file = "js-xwing-customer";
  } else {
    const { privateKey, publicKey } = await s.kem.generateKeyPair();
    sk = new Uint8Array(await s.kem.serializePrivateKey(privateKey));
    pk = new Uint8Array(await s.kem.serializePublicKey(publicKey));
    file = "js-customer";
  }
  await writeFile(join(dir, `${file}.private.b64`), b64(sk) + "\n", { mode: 0o600 });
  await writeFile(join(dir, `${file}.pub.b64`), b64(pk) + "\n", { mode: 0o644 });
}

function randomBytes(n) {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i += 65536) crypto.getRandomValues(out.subarray(i, Math.min(i + 65536, n)));
  return out;
}

async function run(opts) {
  for (const k of ["url", "server-public", "customer-private", "account", "off-account", "name"]) {
    if (!opts[k]) throw new Error(`run: --${k} is required`);
  }
  const base = opts.url.replace(/\/+$/, "");
  const name = opts.name;
  const suiteName = opts.suite ?? "x25519-aes-256-gcm";
  const suite = suiteNamed(suiteName);
  const ctx = {
    suite,
    serverPublicKey: opts["server-public"] === "published"
      ? await gatewayKey(base, suite, suiteName)
      : await loadServerPublicKey(opts["server-public"], suite),
    customerPrivateKey: await loadCustomerPrivateKey(opts["customer-private"], suite),
    account: opts.account,
    passcode: PASSCODE,
  };
  const failures = [];
  const caseHeaders = (c) => ({ "X-Interop-Case": `${name}:${c}` });

  // One JSON line per case; `check` records a failed expectation without stopping the run.
  const report = (c, status, sent, plaintext, errorCode) =>
    process.stdout.write(JSON.stringify({
      client: name, case: c, status, sent_b64: b64(sent),
      response_plaintext_b64: b64(plaintext), error_code: errorCode,
    }) + "\n");
  const check = (c, ok, msg) => { if (!ok) failures.push(`${c}: ${msg}`); return ok; };
  const errorCodeOf = (bytes) => {
    try { return JSON.parse(text(bytes)).code ?? null; } catch { return null; }
  };

  // A success case: 200 and an encrypted answer that decrypts. `exchange` resolves to
  // { status, plaintext } or { status, error } (a plain JSON answer), or rejects with
  // an error carrying `status` when the answer does not decrypt.
  async function expectOk(c, sent, exchange) {
    let r;
    try {
      r = await exchange;
    } catch (e) {
      if (e.status === undefined) throw e;
      r = { status: e.status, failure: `${e.message} (${e.cause})` };
    }
    report(c, r.status, sent, r.plaintext, r.error ? errorCodeOf(r.error) : null);
    check(c, r.status === 200, `status ${r.status}, expected 200`);
    check(c, r.plaintext, r.failure ?? `response not ${HPKE}: ${text(r.error)}`);
    return r.plaintext;
  }

  const okPost = (c, path, sent) =>
    expectOk(c, sent, postEncrypted(base + path, { ...ctx, headers: caseHeaders(c) }, sent));

  // A bodyless GET: Accept alone asks for an encrypted answer (Content-Type as the vendor's docs send it).
  const okGet = (c, path) => expectOk(c, null, (async () => {
    const res = await fetch(base + path, {
      headers: {
        "Content-Type": "application/json",
        "Accept": HPKE,
        "X-CleverTap-Account-Id": ctx.account,
        "X-CleverTap-Passcode": PASSCODE,
        ...caseHeaders(c),
      },
    });
    const body = new Uint8Array(await res.arrayBuffer());
    if (!isHpke(res)) return { status: res.status, error: body };
    const plaintext = await openResponse(suite, ctx.customerPrivateKey, ctx.account, body).catch((cause) => {
      throw Object.assign(new Error(`HTTP ${res.status}: the response does not decrypt`, { cause }), { status: res.status });
    });
    return { status: res.status, plaintext };
  })());

  // A request the gateway must refuse with a JSON error.
  async function refused(c, account, body, sent, wantStatus, wantCode) {
    const res = await fetch(base + "/1/upload", {
      method: "POST",
      headers: {
        "Content-Type": HPKE,
        "Accept": HPKE,
        "X-CleverTap-Account-Id": account,
        "X-CleverTap-Passcode": PASSCODE,
        ...caseHeaders(c),
      },
      body,
    });
    const bytes = new Uint8Array(await res.arrayBuffer());
    const code = errorCodeOf(bytes);
    report(c, res.status, sent, null, code);
    check(c, res.status === wantStatus && code === wantCode,
      `got ${res.status} ${JSON.stringify(text(bytes).slice(0, 200))}, expected ${wantStatus} code ${wantCode}`);
  }

  const cases = [
    ["upload", () => okPost("upload", "/1/upload", utf8(UPLOAD_JSON))],
    ["events_cursor", async () => {
      const pt = await okPost("events_cursor", "/1/events.json?batch_size=50", utf8(EVENTS_JSON));
      ctx.cursor = pt && JSON.parse(text(pt)).cursor;
      check("events_cursor", typeof ctx.cursor === "string" && ctx.cursor, "no cursor in the response");
    }],
    ["events_page", async () => {
      if (!ctx.cursor) return check("events_page", false, "skipped: no cursor from events_cursor");
      await okGet("events_page", `/1/events.json?cursor=${encodeURIComponent(ctx.cursor)}`);
    }],
    ["profile_get", () => okGet("profile_get", "/1/profile.json?email=jack%40gmail.com")],
    ["echo_1mib", async () => {
      const sent = randomBytes(ECHO_BYTES);
      const pt = await okPost("echo_1mib", "/echo", sent);
      if (pt) check("echo_1mib", Buffer.from(pt).equals(Buffer.from(sent)), `echo differs (${pt.length} bytes back)`);
    }],
    ["err_plaintext_body", () => {
      const sent = utf8(UPLOAD_JSON);
      return refused("err_plaintext_body", ctx.account, sent, sent, 400, 4006);
    }],
    ["err_tampered", async () => {
      const sent = utf8(UPLOAD_JSON);
      const envelope = await sealRequest(suite, ctx.serverPublicKey, ctx.account, sent);
      envelope[envelope.length - 1] ^= 0x01;
      await refused("err_tampered", ctx.account, envelope, sent, 400, 4008);
    }],
    ["err_encryption_off", async () => {
      const sent = utf8(UPLOAD_JSON);
      const off = opts["off-account"];
      await refused("err_encryption_off", off, await sealRequest(suite, ctx.serverPublicKey, off, sent), sent, 403, 4005);
    }],
  ];
  for (const [c, fn] of cases) {
    try {
      await fn();
    } catch (e) {
      // "fetch failed" and the like say what happened in `cause`; anything else is a bug here.
      failures.push(`${c}: ${e?.cause ? `${e.message} (${e.cause})` : (e?.stack ?? e)}`);
    }
  }
  if (failures.length) {
    for (const f of failures) console.error(`FAIL ${f}`);
    process.exitCode = 1;
  }
}

const USAGE = `usage:
  node client.mjs keys --dir DIR [--suite NAME]
  node client.mjs run --url URL --server-public FILE|published --customer-private FILE --account ACCT --off-account ACCT_OFF --name NAME [--suite NAME]`;

try {
  const { positionals, values } = parseArgs({
    allowPositionals: true,
    options: Object.fromEntries(
      ["dir", "url", "server-public", "customer-private", "account", "off-account", "name", "suite"].map((k) => [k, { type: "string" }]),
    ),
  });
  const command = { keys, run }[positionals[0]];
  if (!command || positionals.length !== 1) throw new Error(USAGE);
  await command(values);
} catch (e) {
  console.error(`${e?.message ?? e}${e?.cause ? ` (cause: ${e.cause})` : ""}`);
  process.exitCode = 2;
}
