//! The `ferry` executable: everything is in the library's `cli` module.

fn main() -> std::process::ExitCode {
    ferry::cli::main()
}
