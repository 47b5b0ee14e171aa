//! Rebuilds the crate when a migration is added or changed: `db::migrate` embeds the
//! `migrations/` folder at compile time.
fn main() {
    println!("cargo:rerun-if-changed=../migrations");
}
