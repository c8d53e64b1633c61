//! Rebuilds the crate when a migration is added, changed or removed:
//! `sqlx::migrate!` reads the migration directories while compiling, and
//! cargo does not otherwise know that a new file there matters.

fn main() {
    println!("cargo:rerun-if-changed=../../migrations");
    println!("cargo:rerun-if-changed=build.rs");
}
