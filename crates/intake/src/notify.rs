//! Notifications at pickup, success and failure: an email to the manifest's
//! `clientEmail` (lettre over SMTP, or printed instead of sent with `print_mail`, for
//! demos and tests) and, if configured, the same notice as JSON to a webhook. A failure whose manifest cannot be read (so names no `clientEmail`) is
//! emailed to the account's `failure_contact` instead, with a reason that quotes
//! nothing from the manifest. A notification that cannot be delivered is logged; it
//! never fails the file.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use lettre::message::header::ContentType;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport as _, Message, Tokio1Executor};
use serde::Serialize;

use super::host::PrintMail;
use super::ingest::BadRow;
use super::settings::{Smtp, SmtpTls};

/// Which stage a notice reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// The file was picked up for processing.
    Pickup,
    /// The file was imported.
    Success,
    /// The file was not imported.
    Failure,
    /// A scheduled pull from the customer's server failed (`file` names the server).
    PullFailure,
}

/// One notice.
#[derive(Debug, Clone, Serialize)]
pub struct Notice {
    /// The stage.
    pub stage: Stage,
    /// The account.
    pub account: String,
    /// The uploaded file's name.
    pub file: String,
    /// The manifest's name.
    pub manifest: String,
    /// Records uploaded (success).
    pub uploaded: u64,
    /// Rows skipped (success and failure).
    pub skipped: u64,
    /// Why it failed (failure).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The skipped rows, with column and reason (at most 100).
    pub bad_rows: Vec<BadRow>,
    /// Whom the email goes to.
    #[serde(skip)]
    pub to: Option<String>,
    /// The email goes to the account's `failure_contact` because the manifest could not
    /// be read: it says so, and `error` quotes nothing from the manifest.
    #[serde(skip)]
    pub manifest_unreadable: bool,
}

impl Notice {
    fn subject(&self) -> String {
        if self.manifest_unreadable {
            return format!(
                "File upload {}: import failed, the manifest could not be read",
                self.file
            );
        }
        if self.stage == Stage::PullFailure {
            return format!("Scheduled import from {}: failed", self.file);
        }
        match self.stage {
            Stage::Pickup => format!("File upload {}: picked up for processing", self.file),
            Stage::Success => format!(
                "File upload {}: imported, {} records",
                self.file, self.uploaded
            ),
            Stage::Failure | Stage::PullFailure => {
                format!("File upload {}: import failed", self.file)
            }
        }
    }

    fn body(&self) -> String {
        if self.stage == Stage::PullFailure {
            return format!(
                "Account: {}\nServer: {}\n\nThe scheduled import from your SFTP server did not \
                 complete.\nReason: {}\n\nFiles already fetched are not affected; the next scheduled \
                 run tries again.\n",
                self.account,
                self.file,
                self.error.as_deref().unwrap_or("unknown")
            );
        }
        let mut text = format!(
            "Account: {}\nFile: {}\nManifest: {}\n\n",
            self.account, self.file, self.manifest
        );
        if self.manifest_unreadable {
            text.push_str(&format!(
                "The manifest could not be read, so the customer could not be told: the \
                 upload was not imported.\nReason: {}\nThe manifest and the full reason are in \
                 the intake's state directory, under failed/.\n",
                self.error.as_deref().unwrap_or("unknown")
            ));
            return text;
        }
        match self.stage {
            Stage::Pickup => {
                text.push_str("The file was picked up and is being decrypted and imported.\n")
            }
            Stage::Success => text.push_str(&format!(
                "The file was decrypted and imported.\nRecords imported: {}\nRows skipped: {}\n",
                self.uploaded, self.skipped
            )),
            Stage::Failure | Stage::PullFailure => text.push_str(&format!(
                "The file was not imported.\nReason: {}\n",
                self.error.as_deref().unwrap_or("unknown")
            )),
        }
        if !self.bad_rows.is_empty() {
            text.push_str("\nSkipped rows (line, column, value: reason):\n");
            for r in &self.bad_rows {
                text.push_str(&format!(
                    "  line {}, column {}, value {:?}: {}\n",
                    r.line, r.column, r.value, r.reason
                ));
            }
            if self.skipped > self.bad_rows.len() as u64 {
                text.push_str(&format!(
                    "  ... and {} more\n",
                    self.skipped - self.bad_rows.len() as u64
                ));
            }
        }
        text
    }
}

type WebhookClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Sends notices.
#[derive(Clone)]
pub struct Notifier {
    smtp: Option<(
        Arc<AsyncSmtpTransport<Tokio1Executor>>,
        lettre::message::Mailbox,
    )>,
    /// `print_mail`: each mail is printed with this instead of sent.
    print: Option<PrintMail>,
    webhook: Option<(http::Uri, WebhookClient)>,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier")
            .field("smtp", &self.smtp.is_some())
            .field("print", &self.print.is_some())
            .field("webhook", &self.webhook.as_ref().map(|(u, _)| u))
            .finish()
    }
}

impl Notifier {
    /// A notifier for the configured channels: mail over `smtp`, or, with `print`, mail
    /// printed instead of sent (the two exclude each other in the settings).
    pub fn new(
        smtp: Option<&Smtp>,
        print: Option<PrintMail>,
        webhook: Option<&http::Uri>,
        tls: crate::host::WebhookTls,
    ) -> Result<Self, String> {
        let smtp = smtp
            .map(|s| {
                let builder = match s.tls {
                    SmtpTls::None => {
                        AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&s.host)
                    }
                    SmtpTls::StartTls => {
                        AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&s.host)
                            .map_err(|e| e.to_string())?
                    }
                    SmtpTls::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&s.host)
                        .map_err(|e| e.to_string())?,
                };
                let mut builder = builder
                    .port(s.port)
                    .timeout(Some(std::time::Duration::from_secs(30)));
                if let Some((user, pass)) = &s.credentials {
                    builder = builder.credentials(Credentials::new(user.clone(), pass.to_string()));
                }
                Ok::<_, String>((Arc::new(builder.build()), s.from.clone()))
            })
            .transpose()?;
        let webhook = webhook
            .map(|uri| {
                let tls = tls(uri.scheme_str() == Some("https"))?;
                let mut http = HttpConnector::new();
                http.enforce_http(false);
                let connector = hyper_rustls::HttpsConnectorBuilder::new()
                    .with_tls_config(tls)
                    .https_or_http()
                    .enable_http1()
                    .wrap_connector(http);
                let client = Client::builder(hyper_util::rt::TokioExecutor::new()).build(connector);
                Ok::<_, String>((uri.clone(), client))
            })
            .transpose()?;
        Ok(Self {
            smtp,
            print,
            webhook,
        })
    }

    /// Sends `notice` on every channel; failures are logged.
    pub async fn send(&self, notice: &Notice) {
        self.send_email(notice).await;
        self.post_webhook(notice).await;
    }

    /// Emails `notice` to its `to`, if SMTP is configured (or prints the mail, with
    /// `print_mail`); failures are logged.
    pub async fn send_email(&self, notice: &Notice) {
        let Some(to) = &notice.to else {
            return;
        };
        if let Some((transport, from)) = &self.smtp {
            match Mail::render(to, notice).map(|mail| mail.message(from)) {
                Ok(Ok(message)) => {
                    if let Err(e) = transport.send(message).await {
                        tracing::warn!(account = %notice.account, file = %notice.file, error = %e, "notification email not sent");
                    }
                }
                Ok(Err(e)) | Err(e) => {
                    tracing::warn!(error = %e, "notification email not built")
                }
            }
        }
        if let Some(print) = self.print {
            match Mail::render(to, notice) {
                Ok(mail) => {
                    if let Err(e) = print(&mail.printed()) {
                        tracing::warn!(account = %notice.account, file = %notice.file, error = %e, "notification email not printed");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "notification email not built"),
            }
        }
    }

    /// Posts `notice` to the webhook, if one is configured; failures are logged.
    pub(crate) async fn post_webhook(&self, notice: &Notice) {
        if let Some((uri, client)) = &self.webhook {
            let body = serde_json::to_vec(notice).unwrap_or_default();
            let request = http::Request::post(uri.clone())
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(Full::new(Bytes::from(body)));
            match request {
                Ok(req) => match tokio::time::timeout(
                    std::time::Duration::from_secs(30),
                    client.request(req),
                )
                .await
                {
                    Ok(Ok(res)) if res.status().is_success() => {}
                    Ok(Ok(res)) => {
                        tracing::warn!(status = %res.status(), "webhook refused the notification")
                    }
                    Ok(Err(e)) => tracing::warn!(error = %e, "webhook not reached"),
                    Err(_) => tracing::warn!("webhook timed out"),
                },
                Err(e) => tracing::warn!(error = %e, "webhook request not built"),
            }
        }
    }
}

/// One notification mail, rendered: what SMTP sends and what `print_mail` prints.
#[derive(Debug)]
struct Mail {
    to: lettre::message::Mailbox,
    subject: String,
    body: String,
}

impl Mail {
    fn render(to: &str, notice: &Notice) -> Result<Self, String> {
        Ok(Self {
            to: to
                .parse()
                .map_err(|e: lettre::address::AddressError| e.to_string())?,
            subject: notice.subject(),
            body: notice.body(),
        })
    }

    /// The message SMTP sends.
    fn message(self, from: &lettre::message::Mailbox) -> Result<Message, String> {
        Message::builder()
            .from(from.clone())
            .to(self.to)
            .subject(self.subject)
            .header(ContentType::TEXT_PLAIN)
            .body(self.body)
            .map_err(|e| e.to_string())
    }

    /// The text `print_mail` prints: the recipient, the subject and the body, between
    /// two marker lines.
    fn printed(&self) -> String {
        format!(
            "----- mail (print_mail: printed, not sent) -----\nTo: {}\nSubject: {}\n\n{}----- end of mail -----\n",
            self.to, self.subject, self.body
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unreadable() -> Notice {
        Notice {
            stage: Stage::Failure,
            account: "ACCT-1".into(),
            file: "upload.manifest".into(),
            manifest: "upload.manifest".into(),
            uploaded: 0,
            skipped: 0,
            error: Some("is not valid JSON: EOF while parsing an object".into()),
            bad_rows: Vec::new(),
            to: Some("ops@platform.example".into()),
            manifest_unreadable: true,
        }
    }

    #[test]
    fn an_unreadable_manifest_notice_says_so() {
        let n = unreadable();
        assert_eq!(
            n.subject(),
            "File upload upload.manifest: import failed, the manifest could not be read"
        );
        let body = n.body();
        assert!(body.contains("File: upload.manifest\n"), "{body}");
        assert!(body.contains("The manifest could not be read"), "{body}");
        assert!(body.contains("Reason: is not valid JSON"), "{body}");
    }

    #[test]
    fn a_printed_mail_is_the_mail_smtp_would_send() {
        let mut n = unreadable();
        n.stage = Stage::Success;
        n.manifest_unreadable = false;
        n.uploaded = 3;
        let to = n.to.clone().unwrap();
        let printed = Mail::render(&to, &n).unwrap().printed();
        assert!(printed.contains("To: ops@platform.example\n"), "{printed}");
        assert!(
            printed.contains("Subject: File upload upload.manifest: imported, 3 records\n\n"),
            "{printed}"
        );
        assert!(printed.contains(&n.body()), "{printed}");
        let from = "Imports <imports@platform.example>".parse().unwrap();
        let sent = Mail::render(&to, &n).unwrap().message(&from).unwrap();
        let sent = String::from_utf8(sent.formatted()).unwrap();
        assert!(
            sent.contains("Subject: File upload upload.manifest: imported, 3 records"),
            "{sent}"
        );
        assert!(sent.contains("Records imported: 3"), "{sent}");
    }

    #[test]
    fn the_webhook_json_is_unchanged_by_the_contact_fields() {
        let v = serde_json::to_value(unreadable()).unwrap();
        assert!(
            v.get("to").is_none() && v.get("manifest_unreadable").is_none(),
            "{v}"
        );
    }
}
