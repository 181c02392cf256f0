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

/// Whether any secret prefix starts with a given byte (built from [`SECRET_PREFIXES`]).
const PREFIX_FIRST_BYTES: [bool; 256] = {
    let mut table = [false; 256];
    let mut i = 0;
    while i < SECRET_PREFIXES.len() {
        table[SECRET_PREFIXES[i].as_bytes()[0] as usize] = true;
        i += 1;
    }
    table
};

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
            o.push_str(&tok[..tok.len().min(4)]);
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

/// Token characters are all ASCII, so tokens can be found on bytes: a token starts and
/// ends on ASCII bytes, which are always char boundaries.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'*' | b'+' | b'=' | b'~')
}

fn tokens(text: &str) -> impl Iterator<Item = (usize, usize)> + '_ {
    let b = text.as_bytes();
    let mut i = 0usize;
    std::iter::from_fn(move || {
        while i < b.len() && !is_token_byte(b[i]) {
            i += 1;
        }
        if i >= b.len() {
            return None;
        }
        let start = i;
        while i < b.len() && is_token_byte(b[i]) {
            i += 1;
        }
        // A sentence's full stop is not part of the token.
        let mut end = i;
        while end > start && b[end - 1] == b'.' {
            end -= 1;
        }
        Some((start, end))
    })
}

/// Appends `text` to `out`, cut to `max_chars` characters (with `…` when cut), runs of
/// whitespace folded to one space, and secret-looking tokens masked — in one pass, so the
/// explanation line costs one walk over each piece it quotes.
pub(crate) fn push_clean(out: &mut String, text: &str, max_chars: usize) {
    let b = text.trim().as_bytes();
    let text = text.trim();
    let mut chars = 0usize;
    let mut i = 0usize;
    let mut prev_word: &str = "";
    let mut last_space = false;
    while i < b.len() {
        if chars >= max_chars {
            out.push('…');
            return;
        }
        if is_token_byte(b[i]) {
            let start = i;
            while i < b.len() && is_token_byte(b[i]) {
                i += 1;
            }
            let mut end = i;
            while end > start && b[end - 1] == b'.' {
                end -= 1;
            }
            let tok = &text[start..end];
            if looks_secret(tok, prev_word) {
                out.push_str(&tok[..tok.len().min(4)]);
                out.push_str("…[masked]");
                chars += 13;
            } else {
                let room = max_chars.saturating_sub(chars);
                if tok.len() > room {
                    out.push_str(&tok[..room]);
                    out.push('…');
                    return;
                }
                out.push_str(tok);
                chars += tok.len();
            }
            // Trailing full stops are punctuation, not part of the token.
            let dots = i - end;
            if dots > 0 {
                let room = max_chars.saturating_sub(chars);
                out.push_str(&text[end..end + dots.min(room)]);
                chars += dots.min(room);
            }
            prev_word = tok;
            last_space = false;
            continue;
        }
        // A separator: one character (ASCII or not).
        if b[i] < 0x80 {
            if b[i].is_ascii_whitespace() {
                if !last_space {
                    out.push(' ');
                    chars += 1;
                }
                last_space = true;
            } else {
                out.push(char::from(b[i]));
                chars += 1;
                last_space = false;
            }
            i += 1;
            continue;
        }
        let ch_len = utf8_len(b[i]);
        let ch = &text[i..(i + ch_len).min(b.len())];
        if ch.chars().all(char::is_whitespace) {
            if !last_space {
                out.push(' ');
                chars += 1;
            }
            last_space = true;
        } else {
            out.push_str(ch);
            chars += 1;
            last_space = false;
        }
        i += ch_len;
    }
}

fn utf8_len(first: u8) -> usize {
    match first {
        0x00..=0x7f => 1,
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        _ => 4,
    }
}

fn looks_secret(tok: &str, prev_word: &str) -> bool {
    let tok = tok.trim_end_matches('.');
    if tok.len() < 8 {
        return false;
    }
    if prev_word.len() == 6 && prev_word.eq_ignore_ascii_case("bearer") {
        return true;
    }
    // Most words start with a byte no prefix starts with: no prefix compare for them.
    if tok.len() >= 10
        && PREFIX_FIRST_BYTES[usize::from(tok.as_bytes()[0])]
        && SECRET_PREFIXES.iter().any(|p| tok.starts_with(p))
    {
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
    fn push_clean_clips_folds_and_masks() {
        let mut out = String::new();
        push_clean(
            &mut out,
            "  key  sk-proj-abcdefghijklmnop1234.\n\n next  line  ",
            200,
        );
        assert_eq!(out, "key sk-p…[masked]. next line");
        let mut out = String::new();
        push_clean(&mut out, "héllo wörld, this is long", 8);
        assert_eq!(out, "héllo wö…");
        let mut out = String::new();
        push_clean(&mut out, "超出最大上下文长度", 3);
        assert_eq!(out, "超出最…");
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
