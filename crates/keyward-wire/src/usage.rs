//! Token usage from a response body or a stream event, whatever the API: Anthropic
//! (`usage`, `message.usage` in `message_start`), OpenAI Chat (`usage.prompt_tokens` /
//! `completion_tokens`), Responses (`response.usage`), Gemini (`usageMetadata`).
//!
//! Counts in streams are cumulative, so a stream's usage is the largest value seen for
//! each side. Events without the word are skipped before any JSON parsing.

use serde::Deserialize;

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

#[derive(Deserialize)]
struct Inner {
    usage: Option<Counts>,
}

#[derive(Deserialize)]
struct Doc {
    usage: Option<Counts>,
    #[serde(rename = "usageMetadata")]
    usage_metadata: Option<Counts>,
    message: Option<Inner>,
    response: Option<Inner>,
}

/// The usage a JSON document reports, if any.
pub fn usage(json: &[u8]) -> Option<Usage> {
    memchr::memmem::find(json, b"sage")?;
    let doc: Doc = serde_json::from_slice(json).ok()?;
    let c = doc
        .usage
        .or(doc.usage_metadata)
        .or(doc.message.and_then(|m| m.usage))
        .or(doc.response.and_then(|r| r.usage))?;
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
