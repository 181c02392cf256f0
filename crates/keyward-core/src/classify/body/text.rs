//! Text helpers the classifier shares: a case-insensitive ASCII substring search, and the
//! `<title>` of an HTML error page.

pub(super) fn html_title(html: &str) -> Option<&str> {
    let lower_at = find_ascii_ci(html, "<title")?;
    let after = &html[lower_at..];
    let open_end = after.find('>')? + 1;
    let rest = &after[open_end..];
    let close = find_ascii_ci(rest, "</title").unwrap_or(rest.len().min(200));
    let t = rest.get(..close)?.trim();
    (!t.is_empty()).then_some(t)
}

/// Case-insensitive ASCII substring search: memchr finds the candidates for the first
/// byte (either case), only those are compared.
pub(crate) fn find_ascii_ci(hay: &str, needle: &str) -> Option<usize> {
    let h = hay.as_bytes();
    let n = needle.as_bytes();
    let (&first, rest) = n.split_first()?;
    if h.len() < n.len() {
        return None;
    }
    let last_start = h.len() - n.len();
    let search = &h[..=last_start];
    memchr::memchr2_iter(
        first.to_ascii_lowercase(),
        first.to_ascii_uppercase(),
        search,
    )
    .find(|&i| h[i + 1..i + n.len()].eq_ignore_ascii_case(rest))
}

#[cfg(test)]
mod tests {
    use super::find_ascii_ci;

    #[test]
    fn finds_case_insensitively() {
        assert_eq!(
            find_ascii_ci("Rate limit reached for GPT", "reached FOR "),
            Some(11)
        );
        assert_eq!(find_ascii_ci("MODEL", "model"), Some(0));
        assert_eq!(find_ascii_ci("abc", "abcd"), None);
        assert_eq!(find_ascii_ci("abc", ""), None);
        assert_eq!(find_ascii_ci("xxmodelxx", "model"), Some(2));
        assert_eq!(find_ascii_ci("modeL", "model"), Some(0));
        assert_eq!(find_ascii_ci("mode", "model"), None);
        assert_eq!(find_ascii_ci("héllo model", "model"), Some(7));
    }
}
