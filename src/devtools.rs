//! Development helpers: `rowgate token` and `rowgate dev` (filled in once the
//! auth and embedded modules land).

/// Arguments of `rowgate token`.
#[derive(clap::Args, Debug)]
pub struct TokenArgs {}

/// Arguments of `rowgate dev`.
#[derive(clap::Args, Debug)]
pub struct DevArgs {}

/// Mints a token.
pub fn token(_: TokenArgs) -> Result<(), String> {
    Err("not yet".into())
}

/// Runs the demo.
pub async fn dev(_: DevArgs) -> Result<(), String> {
    Err("not yet".into())
}
