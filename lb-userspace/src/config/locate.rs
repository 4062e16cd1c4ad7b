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
    // Nested tables ("targets[1]", "health_check") are searched as
    // [[table.targets]] or [table.health_check] blocks; a path ending in
    // one (a target) is its header's line.
    let mut from = start;
    let mut prefix = table.to_string();
    while rest.len() > 1 || rest.first().is_some_and(|r| r.ends_with(']')) {
        let (sub, si) = match rest[0].split_once('[') {
            Some((s, i)) => (s, i.trim_end_matches(']').parse::<usize>().ok()?),
            None => (rest[0], 0),
        };
        prefix = format!("{prefix}.{sub}");
        let want = [format!("[[{prefix}]]"), format!("[{prefix}]")];
        // A block not written (defaults): the enclosing one's line.
        // Within this table's block: up to the next `[[table]]`.
        let Some(found) = lines
            .iter()
            .enumerate()
            .skip(from + 1)
            .take_while(|(_, l)| l.trim() != header)
            .filter(|(_, l)| want.iter().any(|w| l.trim() == w))
            .nth(si)
            .map(|(n, _)| n)
        else {
            return Some(from + 1);
        };
        from = found;
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

#[cfg(test)]
mod tests {
    use super::locate;

    const TEXT: &str = "[gateway]\nzone = \"a\"\n\n[[target_group]]\nname = \"web\"\n[[target_group.targets]]\naddress = \"10.1.0.1\"\nport = 80\n[[target_group.targets]]\naddress = \"10.1.0.2\"\nport = 80\n[target_group.health_check]\ninterval = \"5s\"\n";

    #[test]
    fn paths_point_at_their_own_lines() {
        assert_eq!(locate(TEXT, "gateway.zone"), Some(2));
        assert_eq!(locate(TEXT, "target_group[0].name"), Some(5));
        // A target's own header, not its group's.
        assert_eq!(locate(TEXT, "target_group[0].targets[1]"), Some(9));
        assert_eq!(locate(TEXT, "target_group[0].targets[1].port"), Some(11));
        assert_eq!(
            locate(TEXT, "target_group[0].health_check.interval"),
            Some(13)
        );
        // A key not written: the block's header.
        assert_eq!(
            locate(TEXT, "target_group[0].health_check.timeout"),
            Some(12)
        );
    }
}
