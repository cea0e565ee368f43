//! Link step only: the box's binaries pack their relative relocations (DT_RELR, glibc >= 2.36,
//! binutils >= 2.38; Debian 12 has both). A position-independent Rust binary carries one 24-byte
//! relocation per pointer in its static data (about 7,000 here); the loader reads them all at
//! start and they stay resident. Packed, they take 10 KiB instead of 170.
fn main() {
    println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
}
