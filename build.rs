//! Link step only, for the box's binaries.
//!
//! They pack their relative relocations (DT_RELR, glibc >= 2.36, binutils >= 2.38; Debian 12 has
//! both). A position-independent Rust binary carries one 24-byte relocation per pointer in its
//! static data (about 7,000 here); the loader reads them all at start and they stay resident.
//! Packed, they take 10 KiB instead of 170.
//!
//! In a release build they also put the functions a streaming session runs side by side, in the
//! order `link/hot-functions.txt` lists them (`scripts/hot-functions.sh` writes it). The kernel
//! maps a binary's code 64 KiB at a time around each page a process touches, so code that runs
//! scattered among code that never does keeps all of it resident: about 2.8 MiB of the box's
//! 4.4 MB of code, against under 1 MiB that runs. Names missing from the current binary (a
//! function renamed, a dependency updated) are skipped; the rest still pays.
use std::path::Path;

fn main() {
    // Without it, Cargo reruns this script, and so rebuilds the crate, when any file of the
    // package changes: editing a pipeline description or the README would cost a release
    // build with fat LTO before the next `scripts/run.sh`.
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");

    // Read when the script runs, not when it is compiled (`env!`): Cargo reuses a compiled
    // build script across checkouts that share a target folder, and a path baked in from
    // another checkout silently dropped the ordering.
    let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR").expect("set by Cargo");
    let order = Path::new(&manifest_dir).join("link/hot-functions.txt");
    println!("cargo:rerun-if-changed={}", order.display());
    // `--symbol-ordering-file` is LLD's: the linker Rust uses on this target unless told to
    // use another (RUSTC_LINKER is set when one is configured).
    let lld = std::env::var("TARGET").as_deref() == Ok("x86_64-unknown-linux-gnu")
        && std::env::var_os("RUSTC_LINKER").is_none();
    if std::env::var("PROFILE").as_deref() == Ok("release") && lld && order.is_file() {
        println!(
            "cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={}",
            order.display()
        );
        println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
    }
}
