//! Lines of field paths in the config text, for error messages.

/// Best-effort line of a field path like `listener[1].port` in the text.
pub fn locate(text: &str, path: &str) -> Option<usize> {
    let mut parts = path.split('.');
    let head = parts.next()?;
    let (table, idx) = match head.split_once('[') {
        Some((t, i)) => (t, i.trim_end_matches(']').parse::<usize>().ok()?),
        None if head == "gateway" || head == "announce" => (head, 0),
        None => return None,
    };
    let header = if table == "gateway" || table == "announce" {
        format!("[{table}]")
    } else {
        format!("[[{table}]]")
    };
    let lines: Vec<&str> = text.lines().collect();
    let start = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.trim() == header)
        .nth(idx)
        .map(|(n, _)| n)?;
    let mut rest: Vec<&str> = parts.collect();
    // Nested tables ("targets[1]") are searched as [[table.targets]] blocks.
    let mut from = start;
    let mut prefix = table.to_string();
    while rest.len() > 1 {
        let (sub, si) = match rest[0].split_once('[') {
            Some((s, i)) => (s, i.trim_end_matches(']').parse::<usize>().ok()?),
            None => (rest[0], 0),
        };
        prefix = format!("{prefix}.{sub}");
        let want = [format!("[[{prefix}]]"), format!("[{prefix}]")];
        from = lines
            .iter()
            .enumerate()
            .skip(from + 1)
            .filter(|(_, l)| want.iter().any(|w| l.trim() == w))
            .nth(si)
            .map(|(n, _)| n)?;
        rest.remove(0);
    }
    let Some(field) = rest.first() else {
        return Some(from + 1);
    };
    let field = field.split('[').next()?;
    for (n, l) in lines.iter().enumerate().skip(from + 1) {
        let t = l.trim();
        if t.starts_with('[') {
            break;
        }
        if t.split('=').next().map(str::trim) == Some(field) {
            return Some(n + 1);
        }
    }
    Some(from + 1)
}
