//! The `ferry` executable: everything is in the library's `cli` module.

// glibc's malloc serialises threads on its arena locks once processors decode requests into
// many small allocations (measured in BENCHMARKS.md, "Processors: what a chain costs").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    ferry::cli::main()
}
