//! The sync file's key for schema changes while syncing: a table's `add_columns` (what the
//! forward direction does with a source column its mapping does not read), with its validation.
//! Part of [`crate::config`]; the behaviour is in [`crate::schema`] and [`crate::apply::ddl`].

use serde::Deserialize;
use toml::Spanned;

/// What the forward direction does with a column that appears at the source and that the
/// table's mapping does not read (`[[table]] add_columns`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum AddColumns {
    /// Leave it out of the target; logged and shown in `/status` once as an unmapped source
    /// column (default).
    #[default]
    Ignore,
    /// Carry it under its own name: added to the target table (same type, nullable) when
    /// missing, back-filled for the rows already there, written from the next change on.
    Propagate,
}

/// `add_columns` of one table: `propagate` only for forward-only tables (a column cdc-sync adds
/// to the service's table is not written back to legacy; see the README's "Schema changes during
/// a migration").
/// `forward`: the table's direction is `forward`.
pub(super) fn add_columns_of(
    key: Option<&Spanned<AddColumns>>,
    forward: bool,
    source: &str,
    push: &mut dyn FnMut(std::ops::Range<usize>, String),
) -> AddColumns {
    let Some(a) = key else { return AddColumns::Ignore };
    if *a.get_ref() == AddColumns::Propagate && !forward {
        push(
            a.span(),
            format!(
                "table {source}: add_columns = \"propagate\" needs direction = \"forward\"; for reverse/both tables \
                 add the column on both sides and map it explicitly"
            ),
        );
    }
    *a.get_ref()
}
