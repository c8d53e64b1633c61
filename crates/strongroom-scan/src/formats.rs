//! Well-known token formats: secrets recognisable by their shape alone,
//! stored in strongroom or not.

use std::sync::OnceLock;

use regex::bytes::Regex;

/// A well-known secret format, by its stable rule name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Rule {
    /// AWS access key id (`AKIA…`, `ASIA…` and the other documented
    /// prefixes, 20 characters).
    AwsAccessKeyId,
    /// GitHub token: classic (`ghp_`, `gho_`, `ghu_`, `ghs_`, `ghr_`) or
    /// fine-grained (`github_pat_`).
    GithubToken,
    /// Stripe secret or restricted key, live or test (`sk_live_`, `rk_test_`,
    /// ...).
    StripeKey,
    /// OpenAI API key: project, service-account and admin keys (`sk-proj-`,
    /// ...) and the older `sk-…T3BlbkFJ…` keys.
    OpenaiKey,
    /// Anthropic API key (`sk-ant-api03-…`).
    AnthropicKey,
    /// Slack token (`xoxb-`, `xoxp-`, `xapp-`, ...) or incoming webhook URL.
    SlackToken,
    /// Google API key (`AIza` and 35 more characters).
    GoogleApiKey,
    /// A PEM or OpenSSH private key block, from its `BEGIN` line to its
    /// `END` line (the `BEGIN` line alone when the block is cut off).
    PrivateKeyBlock,
    /// A JSON Web Token (three base64url parts, header and payload JSON).
    Jwt,
}

impl Rule {
    /// Every rule.
    pub const ALL: [Rule; 9] = [
        Rule::AwsAccessKeyId,
        Rule::GithubToken,
        Rule::StripeKey,
        Rule::OpenaiKey,
        Rule::AnthropicKey,
        Rule::SlackToken,
        Rule::GoogleApiKey,
        Rule::PrivateKeyBlock,
        Rule::Jwt,
    ];

    /// The rule's stable name, used as a finding's detector: `aws_access_key_id`,
    /// `github_token`, `stripe_key`, `openai_key`, `anthropic_key`,
    /// `slack_token`, `google_api_key`, `private_key_block`, `jwt`.
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::AwsAccessKeyId => "aws_access_key_id",
            Rule::GithubToken => "github_token",
            Rule::StripeKey => "stripe_key",
            Rule::OpenaiKey => "openai_key",
            Rule::AnthropicKey => "anthropic_key",
            Rule::SlackToken => "slack_token",
            Rule::GoogleApiKey => "google_api_key",
            Rule::PrivateKeyBlock => "private_key_block",
            Rule::Jwt => "jwt",
        }
    }

    /// The pattern. Byte-oriented (no Unicode classes); the regex engine runs
    /// in time linear in the text, whatever the pattern.
    fn pattern(self) -> &'static str {
        match self {
            Rule::AwsAccessKeyId => {
                r"(?-u)\b(?:AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AROA|AIPA|ANPA|ANVA|APKA|A3T[A-Z0-9])[A-Z0-9]{16}\b"
            }
            Rule::GithubToken => {
                r"(?-u)\b(?:gh[pousr]_[A-Za-z0-9]{36,251}|github_pat_[A-Za-z0-9_]{60,251})\b"
            }
            Rule::StripeKey => r"(?-u)\b[sr]k_(?:live|test)_[A-Za-z0-9]{20,247}\b",
            Rule::OpenaiKey => {
                r"(?-u)\bsk-(?:(?:proj|svcacct|admin)-[A-Za-z0-9_\-]{40,250}|[A-Za-z0-9]{20}T3BlbkFJ[A-Za-z0-9]{20})"
            }
            Rule::AnthropicKey => r"(?-u)\bsk-ant-[a-z]{3,8}[0-9]{2}-[A-Za-z0-9_\-]{32,250}",
            Rule::SlackToken => {
                r"(?-u)\b(?:xox[abeoprs]-[0-9A-Za-z\-]{10,250}|xapp-[0-9]-[A-Z0-9]{6,20}-[0-9]{6,20}-[a-f0-9]{32,80}|hooks\.slack\.com/services/T[A-Z0-9]{6,16}/B[A-Z0-9]{6,16}/[A-Za-z0-9]{20,40})"
            }
            Rule::GoogleApiKey => r"(?-u)\bAIza[0-9A-Za-z_\-]{35}",
            Rule::PrivateKeyBlock => {
                r"(?-u)-----BEGIN (?:[A-Z0-9]+ ){0,3}PRIVATE KEY(?: BLOCK)?-----(?:(?s:.)*?-----END (?:[A-Z0-9]+ ){0,3}PRIVATE KEY(?: BLOCK)?-----)?"
            }
            Rule::Jwt => {
                r"(?-u)\beyJ[A-Za-z0-9_\-]{8,4096}\.eyJ[A-Za-z0-9_\-]{8,16384}\.[A-Za-z0-9_\-]{0,4096}"
            }
        }
    }
}

impl std::fmt::Display for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A well-known format found in a text: which rule, where (byte offsets).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FormatMatch {
    /// The rule that matched.
    pub rule: Rule,
    /// Offset of the first byte.
    pub start: usize,
    /// Offset just past the last byte.
    pub end: usize,
}

fn compiled() -> &'static [(Rule, Regex)] {
    static RULES: OnceLock<Vec<(Rule, Regex)>> = OnceLock::new();
    RULES.get_or_init(|| {
        Rule::ALL
            .iter()
            .map(|&rule| {
                // The patterns are constants checked by this crate's tests.
                #[allow(clippy::expect_used)]
                let regex = Regex::new(rule.pattern()).expect("a built-in pattern compiles");
                (rule, regex)
            })
            .collect()
    })
}

/// Every well-known secret format in `text`, in order, without overlaps
/// (where two overlap, the one starting first, then the longer, is kept).
pub fn detect_known_formats(text: &[u8]) -> Vec<FormatMatch> {
    let mut found: Vec<FormatMatch> = compiled()
        .iter()
        .flat_map(|(rule, regex)| {
            regex.find_iter(text).map(|m| FormatMatch {
                rule: *rule,
                start: m.start(),
                end: m.end(),
            })
        })
        .collect();
    found.sort_by(|a, b| a.start.cmp(&b.start).then(b.end.cmp(&a.end)));
    let mut kept: Vec<FormatMatch> = Vec::with_capacity(found.len());
    for m in found {
        if kept.last().is_none_or(|last| m.start >= last.end) {
            kept.push(m);
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Token-shaped examples, assembled at run time so this file holds no
    /// token-shaped string.
    fn examples() -> Vec<(Rule, String)> {
        let alnum = "aB3dE5gH7jK9mN1pQ2rS4tU6vW8xY0zAbCdEfGhIjKlMnOpQrStUvWxYz0123456789";
        let upper = "Q7W3E9R2T5Y8U1I4O6P0";
        let b64 = |s: &str| {
            use base64::Engine as _;
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
        };
        vec![
            (Rule::AwsAccessKeyId, format!("{}{}", "AKIA", &upper[..16])),
            (Rule::AwsAccessKeyId, format!("{}{}", "ASIA", &upper[4..20])),
            (Rule::GithubToken, format!("{}_{}", "ghp", &alnum[..36])),
            (Rule::GithubToken, format!("{}_{}", "ghs", &alnum[2..40])),
            (
                Rule::GithubToken,
                format!("{}_{}_{}", "github_pat", &alnum[..22], &alnum[..59]),
            ),
            (
                Rule::StripeKey,
                format!("{}_{}_{}", "sk", "live", &alnum[..24]),
            ),
            (
                Rule::StripeKey,
                format!("{}_{}_{}", "rk", "test", &alnum[5..40]),
            ),
            (
                Rule::OpenaiKey,
                format!("{}-{}-{}", "sk", "proj", &alnum[..60]),
            ),
            (
                Rule::OpenaiKey,
                format!(
                    "{}-{}{}{}",
                    "sk",
                    &alnum[..20],
                    "T3Blbk",
                    format_args!("FJ{}", &alnum[20..40])
                ),
            ),
            (
                Rule::AnthropicKey,
                format!("{}-{}-{}-{}", "sk", "ant", "api03", &alnum[..60]),
            ),
            (
                Rule::SlackToken,
                format!("{}-{}-{}", "xoxb", "1234567890", &alnum[..24]),
            ),
            (
                Rule::SlackToken,
                format!(
                    "hooks.slack.com/services/{}/{}/{}",
                    "T0123ABCD",
                    "B0123ABCD",
                    &alnum[..24]
                ),
            ),
            (Rule::GoogleApiKey, format!("{}{}", "AIza", &alnum[..35])),
            (
                Rule::PrivateKeyBlock,
                format!(
                    "-----{} RSA {}-----\n{}\n{}\n-----{} RSA {}-----",
                    "BEGIN", "PRIVATE KEY", alnum, alnum, "END", "PRIVATE KEY"
                ),
            ),
            (
                Rule::PrivateKeyBlock,
                format!("-----{} OPENSSH {}-----\n{}", "BEGIN", "PRIVATE KEY", alnum),
            ),
            (
                Rule::Jwt,
                format!(
                    "{}.{}.{}",
                    b64("{\"alg\":\"HS256\"}"),
                    b64("{\"sub\":\"1234567890\"}"),
                    &alnum[..43]
                ),
            ),
        ]
    }

    #[test]
    fn every_rule_finds_its_examples_with_exact_offsets() {
        let mut covered = std::collections::BTreeSet::new();
        for (rule, token) in examples() {
            let text = format!("config:\n  key = \"{token}\" # set by ops\n");
            let start = text.find(&token).unwrap();
            let found = detect_known_formats(text.as_bytes());
            let expected_end = match rule {
                // A block cut off after its BEGIN line is the BEGIN line.
                Rule::PrivateKeyBlock if !token.contains("END") => {
                    start + token.find('\n').unwrap()
                }
                _ => start + token.len(),
            };
            assert_eq!(
                found,
                vec![FormatMatch {
                    rule,
                    start,
                    end: expected_end
                }],
                "{rule}"
            );
            covered.insert(rule);
        }
        assert_eq!(covered.len(), Rule::ALL.len());
    }

    #[test]
    fn look_alikes_are_not_findings() {
        let text = "AKIA is a prefix; the key AKIAQ7W3E9R2 is too short; ghp_short; sk-ant-nope; \
                    sk_live_short; eyJ alone; xoxb-; -----BEGIN PUBLIC KEY-----; AIzaShort; \
                    a word inside BASIAPACIFICREGIONSX2X";
        assert_eq!(detect_known_formats(text.as_bytes()), vec![]);
    }

    #[test]
    fn longer_runs_of_the_same_characters_are_not_cut_into_keys() {
        let aws = format!("{}{}", "AKIA", "Q".repeat(30));
        assert_eq!(detect_known_formats(aws.as_bytes()), vec![]);
    }
}
