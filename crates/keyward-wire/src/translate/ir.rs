//! The neutral form every wire format is read into and written from: a conversation
//! (system text, turns of parts, tools), an answer, and the events of a streamed answer.
//! Four formats meet here instead of twelve pairs knowing each other.

use serde_json::Value;

/// Who speaks a turn. System text lives beside the turns ([`Request::system`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    User,
    Assistant,
}

/// An image, inline or by URL.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Image {
    Base64 { media_type: String, data: String },
    Url(String),
}

/// One part of a turn.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Part {
    Text(String),
    Image(Image),
    /// The model asked for a tool: `arguments` is the JSON text of its input.
    ToolCall {
        id: String,
        name: String,
        arguments: String,
    },
    /// A tool's answer. `name` is found from the call with the same id when the format
    /// does not carry it (Gemini needs it).
    ToolResult {
        id: String,
        name: Option<String>,
        content: Vec<Part>,
        is_error: bool,
    },
    /// The model's reasoning; `signature` is Anthropic's proof that it is unaltered.
    Thinking {
        text: String,
        signature: Option<String>,
    },
}

/// One turn.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Message {
    pub(crate) role: Role,
    pub(crate) parts: Vec<Part>,
}

/// A tool the model may call.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Tool {
    pub(crate) name: String,
    pub(crate) description: Option<String>,
    /// JSON Schema of its input.
    pub(crate) schema: Value,
}

/// Whether and which tool the model must call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ToolChoice {
    Auto,
    /// Some tool (Anthropic `any`, OpenAI `required`, Gemini `ANY`).
    Any,
    None,
    Named(String),
}

/// Structured output: JSON, to a schema when one is given.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct JsonOutput {
    pub(crate) name: String,
    pub(crate) schema: Option<Value>,
    pub(crate) strict: Option<bool>,
}

/// How much the model may reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reasoning {
    /// A token budget (Anthropic `thinking.budget_tokens`, Gemini `thinkingBudget`).
    Budget(u64),
    /// An effort level (OpenAI `reasoning_effort` / `reasoning.effort`).
    Effort(Effort),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Effort {
    Minimal,
    Low,
    Medium,
    High,
}

impl Effort {
    pub(crate) fn parse(s: &str) -> Option<Effort> {
        Some(match s {
            "minimal" | "none" => Effort::Minimal,
            "low" => Effort::Low,
            "medium" => Effort::Medium,
            "high" | "xhigh" => Effort::High,
            _ => return None,
        })
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Effort::Minimal => "minimal",
            Effort::Low => "low",
            Effort::Medium => "medium",
            Effort::High => "high",
        }
    }

    /// A token budget of about this effort.
    pub(crate) fn budget(self) -> u64 {
        match self {
            Effort::Minimal => 1024,
            Effort::Low => 2048,
            Effort::Medium => 8192,
            Effort::High => 24_576,
        }
    }

    /// The effort of about this budget.
    pub(crate) fn of_budget(tokens: u64) -> Effort {
        match tokens {
            0..=1535 => Effort::Minimal,
            1536..=4095 => Effort::Low,
            4096..=16_383 => Effort::Medium,
            _ => Effort::High,
        }
    }
}

impl Reasoning {
    pub(crate) fn budget(self) -> u64 {
        match self {
            Reasoning::Budget(b) => b,
            Reasoning::Effort(e) => e.budget(),
        }
    }

    pub(crate) fn effort(self) -> Effort {
        match self {
            Reasoning::Budget(b) => Effort::of_budget(b),
            Reasoning::Effort(e) => e,
        }
    }
}

/// A request, in no format.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct Request {
    pub(crate) system: Vec<String>,
    pub(crate) messages: Vec<Message>,
    pub(crate) tools: Vec<Tool>,
    pub(crate) tool_choice: Option<ToolChoice>,
    pub(crate) parallel_tool_calls: Option<bool>,
    pub(crate) max_tokens: Option<u64>,
    pub(crate) temperature: Option<f64>,
    pub(crate) top_p: Option<f64>,
    pub(crate) top_k: Option<u64>,
    pub(crate) stop: Vec<String>,
    pub(crate) json: Option<JsonOutput>,
    pub(crate) reasoning: Option<Reasoning>,
    pub(crate) user: Option<String>,
}

/// Why an answer stopped.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) enum Stop {
    #[default]
    End,
    MaxTokens,
    Sequence(Option<String>),
    ToolUse,
    ContentFilter,
}

/// Tokens used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Usage {
    pub(crate) input: u64,
    pub(crate) output: u64,
    /// Input tokens read from a prompt cache (part of `input`).
    pub(crate) cached: u64,
}

/// A whole answer, in no format.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct Response {
    pub(crate) id: String,
    pub(crate) model: String,
    /// Text, thinking and tool calls, in order.
    pub(crate) parts: Vec<Part>,
    pub(crate) stop: Stop,
    pub(crate) usage: Usage,
}

/// One event of a streamed answer, in no format.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Event {
    Start {
        id: String,
        model: String,
    },
    Text(String),
    Thinking(String),
    Signature(String),
    /// A tool call begins; `slot` is the upstream's own index for it.
    ToolStart {
        slot: u64,
        id: String,
        name: String,
    },
    ToolArgs {
        slot: u64,
        json: String,
    },
    Stop(Stop),
    Usage(Usage),
    /// An in-band error: `kind` (a type or status) and its message.
    Error {
        kind: String,
        message: String,
    },
    /// The upstream's terminal event.
    End,
}
