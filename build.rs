// sqlx::migrate! embeds migrations/ at compile time but cannot watch the directory itself: without this,
// a new migration file is not picked up until something else triggers a rebuild.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
