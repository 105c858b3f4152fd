//! The history API's bearer token (`NOTIFIER_API_TOKEN`). Its routes take the shop's one
//! bearer check, [`shared_events::bearer::Operator`]: 401 without the token, 403 with a
//! wrong one.

use secrecy::SecretString;
use shared_events::bearer::ApiToken;

/// The history API's token, or why the service must not start: a shop that silently fell
/// back to a well-known token would serve every shopper's mail history to anyone.
pub fn required_token(token: Option<&SecretString>) -> anyhow::Result<ApiToken> {
    ApiToken::required(
        token,
        "NOTIFIER_API_TOKEN",
        "notifier",
        "the mail history API (GET /notifications)",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_token_the_service_does_not_start() {
        let error = required_token(None).expect_err("no token").to_string();
        assert!(error.contains("NOTIFIER_API_TOKEN"), "{error}");
        assert!(required_token(Some(&SecretString::from("  "))).is_err());
        assert!(required_token(Some(&SecretString::from("given"))).is_ok());
    }
}
