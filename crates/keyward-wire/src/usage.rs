//! Token usage from a response body or a stream event, whatever the API: Anthropic
//! (`usage`, `message.usage` in `message_start`), OpenAI Chat (`usage.prompt_tokens` /
//! `completion_tokens`), Responses (`response.usage`), Gemini (`usageMetadata`).
//!
//! Counts in streams are cumulative, so a stream's usage is the largest value seen for
//! each side. Events without the word are skipped before any JSON parsing.

use std::ops::Range;

use serde::Deserialize;

use crate::splice;

/// Tokens in and out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub input: u64,
    pub output: u64,
}

impl Usage {
    /// The larger of each side (streams report cumulative counts).
    pub fn max(self, other: Usage) -> Usage {
        Usage {
            input: self.input.max(other.input),
            output: self.output.max(other.output),
        }
    }
}

#[derive(Deserialize, Default)]
struct Counts {
    #[serde(alias = "prompt_tokens", alias = "promptTokenCount")]
    input_tokens: Option<u64>,
    #[serde(alias = "completion_tokens", alias = "candidatesTokenCount")]
    output_tokens: Option<u64>,
}

/// The usage a JSON document reports, if any: `usage` or `usageMetadata` at the top level,
/// else `message.usage` or `response.usage`. Only the usage object is decoded; the rest
/// (the answer's text) is skipped structurally (`splice::members`), which made this a
/// fifth of what it cost with a full parse of the document.
pub fn usage(json: &[u8]) -> Option<Usage> {
    memchr::memmem::find(json, b"sage")?;
    let found = splice::members(json, KEYS)?;
    counted(json, found)
}

/// A whole answer's usage, read in the pass that checks the answer is one whole JSON
/// object (nothing cut, nothing after it): `None` if it is not, `Some(None)` if it is and
/// reports no usage. A non-streaming success is walked once for both questions.
pub fn of_whole_object(json: &[u8]) -> Option<Option<Usage>> {
    let found = splice::whole_object_members(json, KEYS)?;
    Some(counted(json, found))
}

/// Where usage is reported: at the top level, or in `message` / `response`.
const KEYS: [&[u8]; 4] = [b"usage", b"usageMetadata", b"message", b"response"];

fn counted(json: &[u8], found: [Option<Range<usize>>; 4]) -> Option<Usage> {
    let [usage, metadata, message, response] = found;
    let counts = |r: Option<Range<usize>>| -> Option<Counts> {
        serde_json::from_slice::<Option<Counts>>(json.get(r?)?)
            .ok()
            .flatten()
    };
    let nested = |r: Option<Range<usize>>| -> Option<Counts> {
        let r = r?;
        let [inner] = splice::members(json.get(r.clone())?, [b"usage"])?;
        counts(inner.map(|i| r.start + i.start..r.start + i.end))
    };
    let c = counts(usage)
        .or_else(|| counts(metadata))
        .or_else(|| nested(message))
        .or_else(|| nested(response))?;
    if c.input_tokens.is_none() && c.output_tokens.is_none() {
        return None;
    }
    Some(Usage {
        input: c.input_tokens.unwrap_or(0),
        output: c.output_tokens.unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u(input: u64, output: u64) -> Option<Usage> {
        Some(Usage { input, output })
    }

    #[test]
    fn every_api_shape() {
        // Anthropic Messages, whole and streamed.
        assert_eq!(
            usage(br#"{"type":"message","usage":{"input_tokens":12,"output_tokens":6}}"#),
            u(12, 6)
        );
        assert_eq!(usage(br#"{"type":"message_start","message":{"usage":{"input_tokens":25,"output_tokens":1}}}"#), u(25, 1));
        assert_eq!(
            usage(br#"{"type":"message_delta","delta":{},"usage":{"output_tokens":15}}"#),
            u(0, 15)
        );
        // OpenAI Chat Completions, whole and the final stream chunk.
        assert_eq!(usage(br#"{"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":12,"total_tokens":21}}"#), u(9, 12));
        // Responses.
        assert_eq!(usage(br#"{"type":"response.completed","response":{"usage":{"input_tokens":5,"output_tokens":7}}}"#), u(5, 7));
        // Gemini.
        assert_eq!(usage(br#"{"candidates":[],"usageMetadata":{"promptTokenCount":4,"candidatesTokenCount":3}}"#), u(4, 3));
        // Nothing to report.
        assert_eq!(
            usage(br#"{"choices":[{"delta":{"content":"usage"}}]}"#),
            None
        );
        assert_eq!(usage(br#"{"usage":null}"#), None);
        assert_eq!(usage(b"not json usage"), None);
        assert_eq!(usage(br#"{"type":"ping"}"#), None);
    }

    #[test]
    fn only_the_usage_object_counts_whatever_surrounds_it() {
        // Text that looks like usage, escapes, nesting and arrays are skipped unread.
        let body = br#"{"id":"m","content":[{"type":"text","text":"\"usage\": {\"input_tokens\": 99} } ] \\"}],"meta":{"usage":{"input_tokens":98}},"usage":{"output_tokens":3,"input_tokens":2,"cache_read_input_tokens":0}}"#;
        assert_eq!(usage(body), u(2, 3));
        // An escaped key is still that key.
        assert_eq!(usage(br#"{"\u0075sage":{"input_tokens":1}}"#), u(1, 0));
        // A repeated key is ambiguous, a cut document is not counted.
        assert_eq!(
            usage(br#"{"usage":{"input_tokens":1},"usage":{"input_tokens":2}}"#),
            None
        );
        let whole = br#"{"usage":{"input_tokens":4,"output_tokens":5}}"#;
        for cut in 1..whole.len() {
            assert_eq!(usage(&whole[..cut]), None, "{cut}");
        }
        // A top-level usage wins over a nested one; usageMetadata over message.usage.
        assert_eq!(
            usage(br#"{"message":{"usage":{"input_tokens":7}},"usageMetadata":{"promptTokenCount":8}}"#),
            u(8, 0)
        );
    }

    #[test]
    fn a_whole_answer_is_checked_and_counted_in_one_pass() {
        let whole = br#" {"id":"m","content":[{"text":"a } \" ]"}],"usage":{"input_tokens":3,"output_tokens":4}} "#;
        assert_eq!(of_whole_object(whole), Some(u(3, 4)));
        assert_eq!(of_whole_object(br#"{"id":"m"}"#), Some(None));
        assert_eq!(of_whole_object(br#"{}"#), Some(None));
        for cut in 1..whole.len() - 1 {
            assert_eq!(of_whole_object(&whole[..cut]), None, "{cut}");
        }
        assert_eq!(of_whole_object(br#"{"a":1} {"b":2}"#), None);
        assert_eq!(of_whole_object(br#"{"a":1,}"#), None);
        assert_eq!(of_whole_object(br#"[{"usage":{}}]"#), None);
        assert_eq!(of_whole_object(b"<html></html>"), None);
    }

    #[test]
    fn streams_keep_the_largest_count_of_each_side() {
        let a = Usage {
            input: 25,
            output: 1,
        };
        let b = Usage {
            input: 0,
            output: 15,
        };
        assert_eq!(
            a.max(b),
            Usage {
                input: 25,
                output: 15
            }
        );
    }
}
