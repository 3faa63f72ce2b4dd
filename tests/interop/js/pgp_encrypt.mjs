#!/usr/bin/env node
// Encrypts a file to an OpenPGP public key with openpgp.js, streaming, the way a
// customer's Node uploader does it (the vendor's example):
//
//   node pgp_encrypt.mjs <public-key.asc> <input> <output> [--armor]
//
// The public key is the armored output of `gpg --export -a`. Without --armor the
// output is binary OpenPGP packets (like `gpg --encrypt --output file.pgp`); with
// --armor it is an ASCII-armored "PGP MESSAGE" (like `gpg --encrypt --armor`).
//
// The vendor's example (openpgp.js v5) hands fs.createReadStream() straight to
// createMessage and pipes encrypt()'s result to fs.createWriteStream(). OpenPGP.js v6
// takes and returns Web Streams only, so the same pipeline converts at both ends with
// Node's own Readable.toWeb / Readable.fromWeb; the file is never read whole.

import fs from "node:fs";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import * as openpgp from "openpgp";

function usage(message) {
  if (message) console.error(`pgp_encrypt.mjs: ${message}`);
  console.error("usage: node pgp_encrypt.mjs <public-key.asc> <input> <output> [--armor]");
  process.exit(2);
}

const args = process.argv.slice(2);
const armor = args.includes("--armor");
const positional = args.filter((a) => a !== "--armor");
if (positional.some((a) => a.startsWith("--"))) usage(`unknown option in ${positional.join(" ")}`);
if (positional.length !== 3) usage("expected 3 paths");
const [publicKeyPath, inputPath, outputPath] = positional;

// --- snippet: begin ---
const encryptionKeys = await openpgp.readKey({
  armoredKey: await fs.promises.readFile(publicKeyPath, "utf8"),
});

const stream = Readable.toWeb(fs.createReadStream(inputPath));
const message = await openpgp.createMessage({ binary: stream });
const encrypted = await openpgp.encrypt({
  message,
  format: armor ? "armored" : "binary",
  encryptionKeys,
});

await pipeline(Readable.fromWeb(encrypted), fs.createWriteStream(outputPath));
// --- snippet: end ---
