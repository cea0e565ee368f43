//! Link step only: the box's binaries pack their relative relocations (DT_RELR, glibc >= 2.36,
//! binutils >= 2.38; Debian 12 has both). A position-independent Rust binary carries one 24-byte
//! relocation per pointer in its static data (about 7,000 here); the loader reads them all at
//! start and they stay resident. Packed, they take 10 KiB instead of 170.
fn main() {
    // Without it, Cargo reruns this script, and so rebuilds the crate, when any file of the
    // package changes: editing a pipeline description or the README would cost a release
    // build with fat LTO before the next `scripts/run.sh`.
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
}
