//! `strongroom`: the command-line client. See the crate's library.

fn main() {
    std::process::exit(strongroom::main());
}
