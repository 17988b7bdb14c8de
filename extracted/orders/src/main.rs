//! `orders`: the extracted orders service. See `orders --help`.

fn main() -> anyhow::Result<()> {
    orders::service().main()
}
