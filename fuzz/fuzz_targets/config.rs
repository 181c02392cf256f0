//! The config loader on arbitrary text: it never panics, it is deterministic, and no
//! secret it resolved ever appears in a problem it reports or in the loaded config's Debug
//! output (secrets are only referenced in the file; the environment holds them here).
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;

const SECRET: &str = "kw-fuzz-secret-value-3c9d";

fn env(name: &str) -> Option<String> {
    // Every variable resolves, so every `env:` reference loads the secret; a few are
    // empty to reach those errors too.
    if name.ends_with("EMPTY") {
        Some(String::new())
    } else {
        Some(format!("{SECRET}-{name}"))
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let first = keyward::config::Config::parse(text, Path::new("/nonexistent"), &env);
    let second = keyward::config::Config::parse(text, Path::new("/nonexistent"), &env);
    match (&first, &second) {
        (Ok(a), Ok(b)) => {
            let shown = format!("{a:?}");
            assert!(!shown.contains(SECRET), "a secret in the config's Debug output");
            assert_eq!(shown, format!("{b:?}"), "not deterministic");
        }
        (Err(a), Err(b)) => {
            let shown: Vec<String> = a.iter().map(ToString::to_string).collect();
            for p in &shown {
                assert!(!p.contains(SECRET), "a secret in a config problem: {p}");
            }
            let again: Vec<String> = b.iter().map(ToString::to_string).collect();
            assert_eq!(shown, again, "not deterministic");
        }
        _ => panic!("one parse succeeded and the other failed"),
    }
});
