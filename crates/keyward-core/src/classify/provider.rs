//! Who answered, with what kind of credential, on which kind of endpoint, and when.

use std::fmt;

/// An upstream provider (or wire family). Each has its own module of error shapes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Provider {
    /// Anthropic Messages API (API keys and Claude OAuth tokens).
    Anthropic,
    /// OpenAI platform API and the ChatGPT/Codex backend.
    OpenAi,
    /// Azure OpenAI deployments.
    AzureOpenAi,
    /// Google Gemini API (native and OpenAI-compatible endpoints).
    Gemini,
    /// Google Vertex AI (Google shapes, and Anthropic-shaped bodies of Claude on Vertex).
    VertexAi,
    /// AWS Bedrock (runtime, Converse, and the OpenAI-compatible "mantle" endpoint).
    Bedrock,
    /// Mistral La Plateforme.
    Mistral,
    /// Groq.
    Groq,
    /// Cohere.
    Cohere,
    /// DeepSeek.
    DeepSeek,
    /// xAI (Grok).
    Xai,
    /// OpenRouter.
    OpenRouter,
    /// Together AI.
    Together,
    /// Fireworks AI.
    Fireworks,
    /// Ollama (local or cloud).
    Ollama,
    /// vLLM's OpenAI-compatible server.
    Vllm,
    /// GitHub Copilot's chat API.
    GithubCopilot,
    /// Any other server that speaks the OpenAI wire format (llama.cpp, LM Studio, proxies).
    OpenAiCompatible,
    /// Nothing known about the provider: only generic shapes apply.
    Unknown,
}

impl Provider {
    /// Every provider.
    pub const ALL: [Provider; 19] = [
        Provider::Anthropic,
        Provider::OpenAi,
        Provider::AzureOpenAi,
        Provider::Gemini,
        Provider::VertexAi,
        Provider::Bedrock,
        Provider::Mistral,
        Provider::Groq,
        Provider::Cohere,
        Provider::DeepSeek,
        Provider::Xai,
        Provider::OpenRouter,
        Provider::Together,
        Provider::Fireworks,
        Provider::Ollama,
        Provider::Vllm,
        Provider::GithubCopilot,
        Provider::OpenAiCompatible,
        Provider::Unknown,
    ];

    /// The stable kebab-case name used in config and on the command line.
    pub const fn as_str(self) -> &'static str {
        match self {
            Provider::Anthropic => "anthropic",
            Provider::OpenAi => "openai",
            Provider::AzureOpenAi => "azure-openai",
            Provider::Gemini => "gemini",
            Provider::VertexAi => "vertex-ai",
            Provider::Bedrock => "bedrock",
            Provider::Mistral => "mistral",
            Provider::Groq => "groq",
            Provider::Cohere => "cohere",
            Provider::DeepSeek => "deepseek",
            Provider::Xai => "xai",
            Provider::OpenRouter => "openrouter",
            Provider::Together => "together",
            Provider::Fireworks => "fireworks",
            Provider::Ollama => "ollama",
            Provider::Vllm => "vllm",
            Provider::GithubCopilot => "github-copilot",
            Provider::OpenAiCompatible => "openai-compatible",
            Provider::Unknown => "unknown",
        }
    }

    /// Parses a provider's canonical name (case-insensitive; `_` and `-` are the same).
    pub fn parse(name: &str) -> Option<Provider> {
        let norm = normalise(name);
        Provider::ALL.into_iter().find(|p| p.as_str() == norm)
    }

    /// Whether this provider's HTTP API is an OpenAI-compatible one (error envelope
    /// `{"error": {"message", "type", "code"}}`).
    pub const fn speaks_openai(self) -> bool {
        !matches!(
            self,
            Provider::Anthropic | Provider::Gemini | Provider::VertexAi | Provider::Bedrock
        )
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What kind of secret the attempt used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CredentialKind {
    /// A static API key: cannot be refreshed, so an auth failure is never transient.
    ApiKey,
    /// An OAuth access token with a refresh token.
    OAuth,
    /// A cloud credential (AWS SigV4, Google service account / ADC): its session token or
    /// signature can be renewed.
    Cloud,
}

impl CredentialKind {
    /// The stable snake_case name.
    pub const fn as_str(self) -> &'static str {
        match self {
            CredentialKind::ApiKey => "api_key",
            CredentialKind::OAuth => "oauth",
            CredentialKind::Cloud => "cloud",
        }
    }

    /// Parses [`CredentialKind::as_str`] names.
    pub fn parse(name: &str) -> Option<CredentialKind> {
        match normalise(name).as_str() {
            "api-key" | "apikey" | "key" => Some(CredentialKind::ApiKey),
            "oauth" | "oauth2" => Some(CredentialKind::OAuth),
            "cloud" => Some(CredentialKind::Cloud),
            _ => None,
        }
    }

    /// Whether the credential can be refreshed without a person.
    pub const fn refreshable(self) -> bool {
        !matches!(self, CredentialKind::ApiKey)
    }
}

/// Which kind of endpoint answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EndpointKind {
    /// A model API (messages, chat completions, responses, embeddings, generateContent).
    Inference,
    /// An OAuth 2.0 token endpoint answering a refresh (RFC 6749 §5.2 errors).
    Token,
}

impl EndpointKind {
    /// The stable snake_case name.
    pub const fn as_str(self) -> &'static str {
        match self {
            EndpointKind::Inference => "inference",
            EndpointKind::Token => "token",
        }
    }

    /// Parses [`EndpointKind::as_str`] names.
    pub fn parse(name: &str) -> Option<EndpointKind> {
        match normalise(name).as_str() {
            "inference" => Some(EndpointKind::Inference),
            "token" | "oauth-token" => Some(EndpointKind::Token),
            _ => None,
        }
    }
}

/// How far the attempt got when it failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Phase {
    /// Before any response header arrived.
    BeforeHeaders,
    /// Headers (and possibly the body) arrived; the usual case.
    #[default]
    Headers,
    /// Inside a stream, after the response started.
    MidStream,
}

impl Phase {
    /// Parses `before_headers`, `headers`, `mid_stream`.
    pub fn parse(name: &str) -> Option<Phase> {
        match normalise(name).as_str() {
            "before-headers" => Some(Phase::BeforeHeaders),
            "headers" => Some(Phase::Headers),
            "mid-stream" => Some(Phase::MidStream),
            _ => None,
        }
    }
}

/// A transport failure that happened instead of (or in the middle of) a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TransportError {
    /// The connection was refused.
    ConnectRefused,
    /// The connection was reset or closed early (including a stream cut mid-body).
    Reset,
    /// The TLS handshake or certificate check failed.
    Tls,
    /// The host name did not resolve.
    Dns,
    /// A deadline passed: connect, response headers, first content, or idle between reads
    /// (the [`Phase`] tells which).
    Timeout,
}

impl TransportError {
    /// The stable snake_case name.
    pub const fn as_str(self) -> &'static str {
        match self {
            TransportError::ConnectRefused => "connect_refused",
            TransportError::Reset => "reset",
            TransportError::Tls => "tls",
            TransportError::Dns => "dns",
            TransportError::Timeout => "timeout",
        }
    }

    /// Parses [`TransportError::as_str`] names.
    pub fn parse(name: &str) -> Option<TransportError> {
        match normalise(name).as_str() {
            "connect-refused" | "refused" => Some(TransportError::ConnectRefused),
            "reset" | "connection-reset" => Some(TransportError::Reset),
            "tls" => Some(TransportError::Tls),
            "dns" => Some(TransportError::Dns),
            "timeout" => Some(TransportError::Timeout),
            _ => None,
        }
    }
}

/// Where a provider name from an error catalogue (or a caller) lands: the provider plus
/// the credential and endpoint kinds its name implies, when it implies them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CatalogueName {
    /// The provider module that reads the body.
    pub provider: Provider,
    /// The credential kind the name implies (`anthropic-oauth` implies OAuth).
    pub credential: Option<CredentialKind>,
    /// The endpoint kind the name implies (`openai-oauth-token` implies a token endpoint).
    pub endpoint: Option<EndpointKind>,
    /// Whether the name was recognised at all (an unrecognised name maps to `unknown`).
    pub recognised: bool,
}

impl CatalogueName {
    /// Maps a provider name as catalogued (`anthropic-oauth`, `bedrock-anthropic`,
    /// `google-oauth-token`, `llama.cpp`, …) or a canonical [`Provider`] name.
    /// Unrecognised names map to [`Provider::Unknown`] so that a verdict is still given.
    pub fn resolve(name: &str) -> CatalogueName {
        use CredentialKind::{ApiKey, Cloud, OAuth};
        use EndpointKind::{Inference, Token};
        let n = normalise(name);
        let (provider, credential, endpoint) = match n.as_str() {
            "anthropic-oauth" => (Provider::Anthropic, Some(OAuth), Some(Inference)),
            "anthropic-oauth-token" => (Provider::Anthropic, Some(OAuth), Some(Token)),
            "openai-chatgpt-oauth" | "openai-codex" | "chatgpt" | "codex" => {
                (Provider::OpenAi, Some(OAuth), Some(Inference))
            }
            "openai-oauth-token" => (Provider::OpenAi, Some(OAuth), Some(Token)),
            "azure" | "azure-openai-responses" => (Provider::AzureOpenAi, Some(ApiKey), None),
            "entra-oauth-token" => (Provider::AzureOpenAi, Some(OAuth), Some(Token)),
            "gemini-openai-compat" | "google" | "google-ai-studio" => {
                (Provider::Gemini, Some(ApiKey), Some(Inference))
            }
            "gemini-code-assist" | "google-gemini-cli" => {
                (Provider::Gemini, Some(OAuth), Some(Inference))
            }
            "google-oauth-token" => (Provider::VertexAi, Some(OAuth), Some(Token)),
            "vertex-ai-anthropic" | "vertex" | "google-vertex" => {
                (Provider::VertexAi, Some(Cloud), Some(Inference))
            }
            "vertex-ai" => (Provider::VertexAi, Some(Cloud), Some(Inference)),
            "bedrock"
            | "bedrock-anthropic"
            | "bedrock-mantle"
            | "amazon-bedrock"
            | "amazon-bedrock-mantle" => (Provider::Bedrock, Some(Cloud), Some(Inference)),
            "github-copilot-token" | "github-oauth-token" => {
                (Provider::GithubCopilot, Some(OAuth), Some(Token))
            }
            "github-copilot" => (Provider::GithubCopilot, Some(OAuth), Some(Inference)),
            "oauth2-generic" | "oauth2" => (Provider::Unknown, Some(OAuth), Some(Token)),
            "llama.cpp" | "llama-cpp" | "lmstudio" | "lm-studio" => {
                (Provider::OpenAiCompatible, Some(ApiKey), Some(Inference))
            }
            "any" => (Provider::Unknown, Some(ApiKey), Some(Inference)),
            "ollama-cloud" => (Provider::Ollama, None, None),
            other => match Provider::parse(other) {
                Some(p) => (p, None, None),
                None => {
                    return CatalogueName {
                        provider: Provider::Unknown,
                        credential: None,
                        endpoint: None,
                        recognised: false,
                    }
                }
            },
        };
        CatalogueName {
            provider,
            credential,
            endpoint,
            recognised: true,
        }
    }
}

fn normalise(name: &str) -> String {
    name.trim().to_ascii_lowercase().replace('_', "-")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_names_round_trip() {
        for p in Provider::ALL {
            assert_eq!(Provider::parse(p.as_str()), Some(p));
        }
        assert_eq!(Provider::parse("Azure_OpenAI"), Some(Provider::AzureOpenAi));
        assert_eq!(Provider::parse("nope"), None);
    }

    #[test]
    fn catalogue_names_imply_credential_and_endpoint() {
        let c = CatalogueName::resolve("openai-oauth-token");
        assert_eq!(c.provider, Provider::OpenAi);
        assert_eq!(c.credential, Some(CredentialKind::OAuth));
        assert_eq!(c.endpoint, Some(EndpointKind::Token));
        let c = CatalogueName::resolve("bedrock-anthropic");
        assert_eq!(
            (c.provider, c.credential),
            (Provider::Bedrock, Some(CredentialKind::Cloud))
        );
        let c = CatalogueName::resolve("perplexity");
        assert_eq!(c.provider, Provider::Unknown);
        assert!(!c.recognised);
        let c = CatalogueName::resolve("groq");
        assert_eq!((c.provider, c.credential), (Provider::Groq, None));
    }
}
