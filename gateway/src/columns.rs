//! Plain-text tables for the CLI (`check`, `shadow report`): left-aligned columns two spaces
//! apart, widths from the widest cell, no trailing spaces.

/// Renders `rows` (the first is usually the header) as aligned columns, one line per row.
pub fn render<const N: usize>(rows: &[[String; N]]) -> String {
    let mut widths = [0usize; N];
    for row in rows {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    // written straight into one string (a `format!` per cell and a `join` per row were most of
    // `check`'s printing of 10,000 routes)
    let mut out = String::new();
    for row in rows {
        let start = out.len();
        for (i, (c, w)) in row.iter().zip(widths).enumerate() {
            if i > 0 {
                out.push_str("  ");
            }
            out.push_str(c);
            out.extend(std::iter::repeat_n(' ', w.saturating_sub(c.chars().count())));
        }
        let kept = out[start..].trim_end().len();
        out.truncate(start + kept);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn columns_align_on_the_widest_cell_without_trailing_spaces() {
        let rows =
            [["ROUTE".to_string(), "STAGE".into()], ["products".into(), "shadow".into()], ["x".into(), "".into()]];
        assert_eq!(super::render(&rows), "ROUTE     STAGE\nproducts  shadow\nx\n");
        // widths count characters, not bytes
        let rows = [["é".to_string(), "x".into()], ["ab".into(), "y".into()]];
        assert_eq!(super::render(&rows), "é   x\nab  y\n");
    }
}
