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
    let mut out = String::new();
    for row in rows {
        let line: Vec<String> = row.iter().zip(widths).map(|(c, w)| format!("{c:<w$}")).collect();
        out.push_str(line.join("  ").trim_end());
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
    }
}
