//! `catalog`: the extracted catalog service. See `catalog --help`.

fn main() -> anyhow::Result<()> {
    catalog::service().main()
}
