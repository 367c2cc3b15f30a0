fn main() {
    // sqlx::migrate! embeds migrations/ at compile time but cannot watch the directory itself: without
    // this, a new migration file is not picked up until something else triggers a rebuild.
    println!("cargo:rerun-if-changed=migrations");

    // Relative relocations packed (DT_RELR, glibc 2.36: Raspberry Pi OS Bookworm, Debian 12). A
    // position-independent binary carries a relocation for every pointer in its read-only data; unpacked,
    // that table is 1.3 MB that the loader reads at every start and keeps resident (idle RSS).
    let target = |key: &str| std::env::var(key).unwrap_or_default();
    if target("CARGO_CFG_TARGET_OS") == "linux"
        && target("CARGO_CFG_TARGET_ENV") == "gnu"
        && matches!(target("CARGO_CFG_TARGET_ARCH").as_str(), "x86_64" | "aarch64")
    {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}
