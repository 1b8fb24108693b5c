//! Compiles the C library with the `cc` crate, which finds the C compiler a
//! Rust toolchain already needs, and links it into this crate.

fn main() {
    println!("cargo:rerun-if-changed=c/sensorlib.c");
    println!("cargo:rerun-if-changed=c/sensorlib.h");
    cc::Build::new()
        .file("c/sensorlib.c")
        .flag_if_supported("-Wall")
        .flag_if_supported("-Wextra")
        .flag_if_supported("-pthread")
        .warnings_into_errors(true)
        .compile("sensorlib");
    println!("cargo:rustc-link-lib=pthread");
}
