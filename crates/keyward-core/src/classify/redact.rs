//! Masks anything that looks like a secret before text leaves the classifier.
//!
//! Provider messages quote keys back ("Incorrect API key provided: sk-VKMIs…"); tokens
//! and signatures appear in echoed headers. Every explanation, evidence value and provider
//! code passes through [`mask_secrets`]. It errs on the side of masking: a long
//! letters-and-digits run (a request id, an org id) is masked too, which costs nothing.

use std::borrow::Cow;

/// Prefixes that mark a provider secret (API keys, OAuth access tokens, JWTs, AWS ids).
const SECRET_PREFIXES: &[&str] = &[
    "sk-",
    "sk_",
    "rk-",
    "pk-",
    "AIza",
    "xai-",
    "gsk_",
    "ghp_",
    "gho_",
    "ghu_",
    "ghs_",
    "ghr_",
    "github_pat_",
    "ya29.",
    "eyJ",
    "AKIA",
    "ASIA",
    "sess-",
    "fw_",
    "nvapi-",
    "r8_",
    "hf_",
    "or-",
    "tgp_",
    "csk-",
    "pplx-",
    "jina_",
    "sk-or-",
    "sk-ant-",
];

/// Returns `text` with secret-looking tokens replaced by their first four characters and
/// `…[masked]`. Borrowed when nothing needed masking.
pub fn mask_secrets(text: &str) -> Cow<'_, str> {
    let mut out: Option<String> = None;
    let mut last = 0usize;
    let mut prev_word: &str = "";
    for (start, end) in tokens(text) {
        let tok = &text[start..end];
        if looks_secret(tok, prev_word) {
            let o = out.get_or_insert_with(|| String::with_capacity(text.len()));
            o.push_str(&text[last..start]);
            let keep: String = tok.chars().take(4).collect();
            o.push_str(&keep);
            o.push_str("…[masked]");
            last = end;
        }
        prev_word = tok;
    }
    match out {
        None => Cow::Borrowed(text),
        Some(mut o) => {
            o.push_str(&text[last..]);
            Cow::Owned(o)
        }
    }
}

fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '*' | '+' | '=' | '~')
}

fn tokens(text: &str) -> impl Iterator<Item = (usize, usize)> + '_ {
    let mut iter = text.char_indices().peekable();
    std::iter::from_fn(move || {
        while let Some(&(_, c)) = iter.peek() {
            if is_token_char(c) {
                break;
            }
            iter.next();
        }
        let (start, _) = *iter.peek()?;
        let mut end = start;
        while let Some(&(i, c)) = iter.peek() {
            if !is_token_char(c) {
                break;
            }
            end = i + c.len_utf8();
            iter.next();
        }
        // A sentence's full stop is not part of the token.
        while end > start && text.as_bytes()[end - 1] == b'.' {
            end -= 1;
        }
        Some((start, end))
    })
}

fn looks_secret(tok: &str, prev_word: &str) -> bool {
    let tok = tok.trim_end_matches('.');
    if tok.len() < 8 {
        return false;
    }
    if prev_word.eq_ignore_ascii_case("bearer") {
        return true;
    }
    if tok.len() >= 10 && SECRET_PREFIXES.iter().any(|p| tok.starts_with(p)) {
        return true;
    }
    if tok.len() >= 32 {
        let letters = tok.bytes().filter(u8::is_ascii_alphabetic).count();
        let digits = tok.bytes().filter(u8::is_ascii_digit).count();
        return letters > 0 && digits > 0;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_keys_tokens_and_long_runs() {
        let m = mask_secrets("Incorrect API key provided: sk-VKMIs*****wjh3. You can find");
        assert!(!m.contains("VKMIs"), "{m}");
        assert!(m.contains("sk-V…[masked]"));
        let m = mask_secrets("Authorization: Bearer abcdefgh12345678");
        assert!(!m.contains("abcdefgh1234"), "{m}");
        let m = mask_secrets("key AIzaSyA1234567890abcdefghijklmnop is bad");
        assert!(!m.contains("SyA123"), "{m}");
        let m = mask_secrets("token eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.abc");
        assert!(!m.contains("hbGci"), "{m}");
    }

    #[test]
    fn leaves_prose_alone() {
        let s = "This organization has been disabled. See https://docs.anthropic.com/en/api";
        assert!(matches!(mask_secrets(s), Cow::Borrowed(_)));
        assert_eq!(
            mask_secrets("model: claude-3-5-sonnet-20241022"),
            "model: claude-3-5-sonnet-20241022"
        );
    }
}
