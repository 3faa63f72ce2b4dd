//! The envelope against its crypto floor, in the same run: seal and open at 64 B to
//! 16 MiB beside one X25519 scalar multiplication and raw AES-256-GCM of the same size
//! (x25519-dalek and RustCrypto; with `--features aws-lc` aws-lc-rs's too), then the
//! ratios `open / (1 DH + AES-GCM)` and `seal / (2 DH + AES-GCM)`, each backend against
//! its own primitives. rust-hpke
//! (the `hpke` crate) runs beside the gateway's backend for comparison.
//!
//! Then a 1 KiB round trip (seal and open) in each suite, with each suite's ratio to
//! the default `x25519-aes-256-gcm` (`-- roundtrip` runs only those).
//!
//! `cargo bench --bench envelope` (add `-- --quick` for a fast, rougher run).

use std::hint::black_box;

use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use criterion::{BenchmarkId, Criterion, Throughput};
use hpke_envelope::{self as envelope, Prefix, PrivateKey};

const SIZES: [(usize, &str); 5] = [
    (64, "64B"),
    (1024, "1KiB"),
    (64 * 1024, "64KiB"),
    (1024 * 1024, "1MiB"),
    (16 * 1024 * 1024, "16MiB"),
];

fn baselines(c: &mut Criterion) {
    let secret = x25519_dalek::StaticSecret::from([7u8; 32]);
    let point = x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from([9u8; 32]));
    c.bench_function("baseline/x25519_dh", |b| {
        b.iter(|| black_box(secret.diffie_hellman(black_box(&point))))
    });
    let cipher = Aes256Gcm::new_from_slice(&[3u8; 32]).unwrap();
    let nonce = Nonce::from([1u8; 12]);
    in_place_per_size(c, "baseline/aes256gcm", |buf| {
        black_box(
            cipher
                .encrypt_inout_detached(&nonce, &[], buf.into())
                .unwrap(),
        );
    });
    #[cfg(feature = "aws-lc")]
    aws_lc_baselines(c);
}

/// One benchmark per size in [`SIZES`] of an operation on a zeroed buffer of that size.
fn in_place_per_size(c: &mut Criterion, group: &str, mut op: impl FnMut(&mut [u8])) {
    let mut group = c.benchmark_group(group);
    for (size, name) in SIZES {
        group.throughput(Throughput::Bytes(size as u64));
        let mut buf = vec![0u8; size];
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| op(&mut buf))
        });
    }
    group.finish();
}

/// The aws-lc backend's own floor: one X25519 agreement (the key parsed once, as a
/// loaded server key is) and AES-256-GCM from aws-lc-rs.
#[cfg(feature = "aws-lc")]
fn aws_lc_baselines(c: &mut Criterion) {
    use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce as AwsNonce, UnboundKey};
    use aws_lc_rs::agreement::{self, PrivateKey as AwsPrivateKey, UnparsedPublicKey, X25519};

    let secret = AwsPrivateKey::from_private_key(&X25519, &[7u8; 32]).unwrap();
    let peer = AwsPrivateKey::from_private_key(&X25519, &[9u8; 32])
        .unwrap()
        .compute_public_key()
        .unwrap();
    let peer = peer.as_ref().to_vec();
    c.bench_function("baseline/aws-lc/x25519_dh", |b| {
        b.iter(|| {
            agreement::agree(
                &secret,
                UnparsedPublicKey::new(&X25519, black_box(&peer)),
                (),
                |z| Ok(black_box(z[0])),
            )
            .unwrap()
        })
    });
    let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &[3u8; 32]).unwrap());
    in_place_per_size(c, "baseline/aws-lc/aes256gcm", |buf| {
        let nonce = AwsNonce::assume_unique_for_key([1u8; 12]);
        let _tag = black_box(
            key.seal_in_place_separate_tag(nonce, Aad::empty(), buf)
                .unwrap(),
        );
    });
}

fn envelope_ops(c: &mut Criterion) {
    let sk = PrivateKey::derive(&[1u8; 32]);
    let pk = sk.public_key();
    let mut seal = c.benchmark_group(format!("envelope/seal/{}", envelope::BACKEND));
    for (size, name) in SIZES {
        seal.throughput(Throughput::Bytes(size as u64));
        let pt = vec![0x42u8; size];
        seal.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| black_box(envelope::seal(&pk, Prefix::Tink(1), b"ACCT-1", &pt).unwrap()))
        });
    }
    seal.finish();
    let mut open = c.benchmark_group(format!("envelope/open/{}", envelope::BACKEND));
    for (size, name) in SIZES {
        open.throughput(Throughput::Bytes(size as u64));
        let sealed = envelope::seal(&pk, Prefix::Raw, b"ACCT-1", &vec![0x42u8; size]).unwrap();
        let mut buf = sealed.clone();
        open.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| {
                // In place, as the gateway does; restore the ciphertext for the next round.
                let n = envelope::open_in_place(&sk, b"ACCT-1", &mut buf)
                    .unwrap()
                    .len();
                black_box(n);
                buf.copy_from_slice(&sealed);
            })
        });
    }
    open.finish();
}

/// rust-hpke (the `hpke` crate) on the same inputs: the implementation the default
/// backend replaced, whose Decap recomputes the recipient's public key per message.
fn rust_hpke_ops(c: &mut Criterion) {
    use hpke::aead::AesGcm256;
    use hpke::kdf::HkdfSha256;
    use hpke::kem::X25519HkdfSha256 as Kem;
    use hpke::{Kem as _, OpModeR, OpModeS};

    let (sk, pk) = Kem::derive_keypair(&[1u8; 32]);
    let mut seal = c.benchmark_group("envelope/seal/rust-hpke");
    for (size, name) in SIZES {
        seal.throughput(Throughput::Bytes(size as u64));
        let mut pt = vec![0x42u8; size];
        seal.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| {
                let (enc, mut ctx) = hpke::setup_sender::<AesGcm256, HkdfSha256, Kem>(
                    &OpModeS::Base,
                    &pk,
                    b"ACCT-1",
                )
                .unwrap();
                black_box((enc, ctx.seal_inout_detached(pt.as_mut_slice().into(), b"")))
            })
        });
    }
    seal.finish();
    let mut open = c.benchmark_group("envelope/open/rust-hpke");
    for (size, name) in SIZES {
        open.throughput(Throughput::Bytes(size as u64));
        let (enc, mut ctx) =
            hpke::setup_sender::<AesGcm256, HkdfSha256, Kem>(&OpModeS::Base, &pk, b"ACCT-1")
                .unwrap();
        let mut sealed = vec![0x42u8; size];
        let tag = ctx
            .seal_inout_detached(sealed.as_mut_slice().into(), b"")
            .unwrap();
        let mut buf = sealed.clone();
        open.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| {
                let mut ctx = hpke::setup_receiver::<AesGcm256, HkdfSha256, Kem>(
                    &OpModeR::Base,
                    &sk,
                    &enc,
                    b"ACCT-1",
                )
                .unwrap();
                ctx.open_inout_detached(buf.as_mut_slice().into(), b"", &tag)
                    .unwrap();
                buf.copy_from_slice(&sealed);
            })
        });
    }
    open.finish();
}

/// A 1 KiB round trip, seal then open in place, in every suite.
fn suite_round_trips(c: &mut Criterion) {
    let mut group = c.benchmark_group(format!("roundtrip_1KiB/{}", envelope::BACKEND));
    let pt = vec![0x42u8; 1024];
    for suite in envelope::Suite::ALL {
        let sk = PrivateKey::derive_for(*suite, &[1u8; 32]);
        let pk = sk.public_key();
        group.bench_function(BenchmarkId::from_parameter(suite.name()), |b| {
            b.iter(|| {
                let mut sealed = envelope::seal(&pk, Prefix::Raw, b"ACCT-1", &pt).unwrap();
                let n = envelope::open_in_place(&sk, b"ACCT-1", &mut sealed)
                    .unwrap()
                    .len();
                black_box(n)
            })
        });
    }
    group.finish();
}

fn print_suite_ratios() {
    for backend in ["rustcrypto", "aws-lc"] {
        let id = |s: &str| format!("roundtrip_1KiB_{backend}/{s}");
        let Some(base) = median_ns(&id("x25519-aes-256-gcm")) else {
            continue;
        };
        println!(
            "
1 KiB round trip (seal + open) per suite, {backend}, against x25519-aes-256-gcm:"
        );
        for suite in envelope::Suite::ALL {
            if let Some(t) = median_ns(&id(suite.name())) {
                println!(
                    "{:>26}  {:>8.1} µs  {:>5.2}x",
                    suite.name(),
                    t / 1e3,
                    t / base
                );
            }
        }
    }
}

/// Median of a finished benchmark, in nanoseconds, from criterion's own estimates.
fn median_ns(id: &str) -> Option<f64> {
    let dir = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into());
    let path = format!("{dir}/criterion/{id}/new/estimates.json");
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
    v["median"]["point_estimate"].as_f64()
}

fn print_ratios() {
    println!(
        "\nenvelope vs crypto floor, per backend (medians; a backend appears once its bench has run:"
    );
    println!(
        "`cargo bench -p hpke-envelope --bench envelope` and again with `--features aws-lc`; each"
    );
    println!(
        "backend against its own primitives: x25519-dalek and RustCrypto AES-GCM, or aws-lc-rs's)"
    );
    println!(
        "{:>10} {:>6}  {:>9} {:>11} {:>11} {:>11}  {:>21} {:>21}",
        "backend",
        "size",
        "DH",
        "AES-GCM",
        "open",
        "seal",
        "open/(1 DH + AES-GCM)",
        "seal/(2 DH + AES-GCM)"
    );
    for backend in ["rustcrypto", "aws-lc", "rust-hpke"] {
        let floor = if backend == "aws-lc" {
            "baseline_aws-lc_"
        } else {
            "baseline_"
        };
        let Some(dh) = median_ns(&format!("{floor}x25519_dh")) else {
            continue;
        };
        for (_, name) in SIZES {
            let (Some(aes), Some(open), Some(seal)) = (
                median_ns(&format!("{floor}aes256gcm/{name}")),
                median_ns(&format!("envelope_open_{backend}/{name}")),
                median_ns(&format!("envelope_seal_{backend}/{name}")),
            ) else {
                continue;
            };
            println!(
                "{backend:>10} {name:>6}  {:>7.1}µs {:>9.1}µs {:>9.1}µs {:>9.1}µs  {:>21.2} {:>21.2}",
                dh / 1e3,
                aes / 1e3,
                open / 1e3,
                seal / 1e3,
                open / (dh + aes),
                seal / (2.0 * dh + aes)
            );
        }
    }
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    baselines(&mut c);
    envelope_ops(&mut c);
    rust_hpke_ops(&mut c);
    suite_round_trips(&mut c);
    c.final_summary();
    print_ratios();
    print_suite_ratios();
}
