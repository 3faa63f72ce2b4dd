//! Sending one batch of records to the upload API, with retries for what may pass
//! on a later try.
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request};

use crate::Intake;
use crate::ingest::FileError;
use crate::job::Then;
use crate::settings::{IntakeAccount, IntakeConfig};

impl Intake {
    /// Sends one batch to the upstream's upload API. The error is why (the status as its
    /// reason, fit for the log; the upstream's answer as its detail, for the customer
    /// only), and whether to try the job again later (the upstream down, failing or
    /// overloaded) or to fail it (the upstream refused the batch).
    pub(crate) async fn upload(
        &self,
        config: &IntakeConfig,
        account: &IntakeAccount,
        job: &str,
        batch_no: u64,
        records: Vec<serde_json::Value>,
    ) -> Result<(), (FileError, Then)> {
        let fail = |reason: String| (FileError::from(reason), Then::Fail);
        let body = Bytes::from(
            serde_json::to_vec(&serde_json::json!({ "d": records }))
                .map_err(|e| fail(e.to_string()))?,
        );
        let passcode = HeaderValue::from_str(&account.passcode)
            .map_err(|_| fail("the passcode is not a valid header value".to_owned()))?;
        let mut last = fail(String::new());
        for attempt in 0..3u32 {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(500 * 2u64.pow(attempt))).await;
            }
            let request = Request::post(config.upload_path.as_str())
                .header(http::header::CONTENT_TYPE, "application/json")
                .header("x-clevertap-account-id", account.id.as_str())
                .header("x-clevertap-passcode", passcode.clone())
                .header("idempotency-key", format!("{job}-{batch_no}"))
                .body(body.clone())
                .map_err(|e| fail(e.to_string()))?;
            let answer = self.upload_api.send(request).await;
            let (status, gateway_error, text) = (answer.status, answer.from_gateway, answer.body);
            if status.is_success() {
                return Ok(());
            }
            // Retry what may pass on a second try: the upstream down or overloaded.
            let then = if gateway_error
                || status.is_server_error()
                || status == http::StatusCode::TOO_MANY_REQUESTS
            {
                Then::RetryLater
            } else {
                Then::Fail
            };
            let answer = String::from_utf8_lossy(&text[..text.len().min(300)])
                .trim()
                .to_owned();
            last = (
                FileError {
                    reason: format!("HTTP {status}"),
                    detail: (!answer.is_empty())
                        .then(|| format!("the upload API answered: {answer}")),
                },
                then,
            );
            if then == Then::Fail {
                break;
            }
        }
        Err(last)
    }
}
