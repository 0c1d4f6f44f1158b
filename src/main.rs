fn main() {
    std::process::exit(rowgate::cli::main());
}
