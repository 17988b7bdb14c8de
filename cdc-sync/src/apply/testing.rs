//! A small compiled mapping shared by the apply unit tests.

use std::sync::Arc;

use crate::config::parse_with_env;
use crate::mapping::{Mapping, Way};

pub(crate) fn mapping() -> Arc<Mapping> {
    let cfg = parse_with_env(
        "t",
        "name='t'\n[source]\nurl='a'\n[target]\nurl='b'\n[[table]]\nsource='items'\ntarget='items2'\nkey=['id']\n[table.columns]\nid='id'\nbody='body'\nn='n'\n",
        &|_| None,
    )
    .unwrap();
    let mut m = Mapping::compile(&cfg, Way::Forward);
    for t in &mut m.tables {
        t.input_types = vec!["integer".into(), "text".into(), "integer".into()];
        t.output_types =
            t.outputs.iter().map(|o| if o.column == "body" { "text".into() } else { "integer".into() }).collect();
    }
    Arc::new(m)
}
