//! A Confluent-compatible Schema Registry client: the Avro schema of a record's schema id
//! (`GET /schemas/ids/{id}`). The decoder caches what it fetched, so each id is asked for once
//! per process.
//!
//! Calls block: they are made from the decoding thread, never from the async runtime. A
//! registry that does not answer (connection refused, timeouts, 5xx, 429) is retried with
//! backoff; an id the registry does not know is the record's own fault and is not retried.

use std::sync::OnceLock;
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::blocking::Client;
use serde::Deserialize;

use crate::config::{RegistryAuth, SchemaRegistryConfig};
use crate::decode::{FetchError, SchemaSource};
use crate::retry::Backoff;

/// About a minute of retries before a registry outage stops the run.
const BACKOFF: Backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(15), 8);

/// A Schema Registry reached over HTTP(S).
pub struct Registry {
    config: SchemaRegistryConfig,
    backoff: Backoff,
    /// Built on first use, on the thread that decodes (a blocking client may not be created
    /// on the async runtime).
    client: OnceLock<Result<Client, String>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("url", &self.config.url)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct SchemaResponse {
    schema: String,
    #[serde(rename = "schemaType")]
    schema_type: Option<String>,
    #[serde(default)]
    references: Vec<serde_json::Value>,
}

/// One try's failure: whether another try may help.
enum Attempt {
    Retry(String),
    Final(FetchError),
}

impl Registry {
    pub fn new(config: SchemaRegistryConfig) -> Registry {
        Registry::with_backoff(config, BACKOFF)
    }

    pub fn with_backoff(config: SchemaRegistryConfig, backoff: Backoff) -> Registry {
        Registry {
            config,
            backoff,
            client: OnceLock::new(),
        }
    }

    fn client(&self) -> Result<&Client, FetchError> {
        self.client
            .get_or_init(|| {
                let mut builder = Client::builder()
                    .timeout(self.config.timeout)
                    .connect_timeout(self.config.timeout);
                if let Some(pem) = &self.config.ca_pem {
                    let certs = reqwest::Certificate::from_pem_bundle(pem)
                        .map_err(|e| format!("decode.schema_registry.ca_file: {e}"))?;
                    for cert in certs {
                        builder = builder.add_root_certificate(cert);
                    }
                }
                builder.build().map_err(|e| e.to_string())
            })
            .as_ref()
            .map_err(|e| FetchError::Unavailable(format!("cannot set up the client: {e}")))
    }

    fn try_once(&self, client: &Client, id: u32) -> Result<String, Attempt> {
        let url = format!("{}/schemas/ids/{id}", self.config.url);
        let request = client.get(&url).header(
            reqwest::header::ACCEPT,
            "application/vnd.schemaregistry.v1+json, application/json",
        );
        let response = self
            .authorized(request)
            .send()
            .map_err(|e| Attempt::Retry(format!("GET {url}: {}", error_chain(&e))))?;
        let status = response.status();
        let body = response.text().unwrap_or_default();
        let shown = body.chars().take(300).collect::<String>();
        match status {
            s if s.is_success() => {
                let parsed: SchemaResponse = serde_json::from_str(&body).map_err(|e| {
                    Attempt::Final(FetchError::Unavailable(format!(
                        "GET {url}: the answer is not a schema ({e}): {shown}"
                    )))
                })?;
                if let Some(kind) = parsed.schema_type.filter(|t| t != "AVRO") {
                    return Err(Attempt::Final(FetchError::Unusable(format!(
                        "schema id {id} is a {kind} schema, not Avro"
                    ))));
                }
                if !parsed.references.is_empty() {
                    return Err(Attempt::Final(FetchError::Unusable(format!(
                        "schema id {id} refers to other schemas (schema references), which \
                         Floe does not resolve"
                    ))));
                }
                Ok(parsed.schema)
            }
            StatusCode::NOT_FOUND => Err(Attempt::Final(FetchError::Unusable(format!(
                "schema id {id} is not in the registry at {} ({shown})",
                self.config.url
            )))),
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                Err(Attempt::Final(FetchError::Unavailable(format!(
                    "GET {url}: HTTP {status}: the registry refused Floe's credentials \
                     (decode.schema_registry.username/password or bearer_token): {shown}"
                ))))
            }
            s if s.is_server_error() || s == StatusCode::TOO_MANY_REQUESTS => {
                Err(Attempt::Retry(format!("GET {url}: HTTP {status}: {shown}")))
            }
            _ => Err(Attempt::Final(FetchError::Unavailable(format!(
                "GET {url}: HTTP {status}: {shown}"
            )))),
        }
    }
}

impl Registry {
    /// Whether the registry answers with the configured credentials (`floe check`): the
    /// number of subjects it lists (`GET /subjects`). One try, no retries. Blocks.
    pub fn check(&self) -> Result<usize, String> {
        let client = self.client().map_err(|e| match e {
            FetchError::Unusable(m) | FetchError::Unavailable(m) => m,
        })?;
        let url = format!("{}/subjects", self.config.url);
        let response = self
            .authorized(client.get(&url))
            .send()
            .map_err(|e| format!("GET {url}: {}", error_chain(&e)))?;
        let status = response.status();
        let body = response.text().unwrap_or_default();
        if !status.is_success() {
            let shown = body.chars().take(300).collect::<String>();
            return Err(format!("GET {url}: HTTP {status}: {shown}"));
        }
        serde_json::from_str::<Vec<String>>(&body)
            .map(|subjects| subjects.len())
            .map_err(|e| format!("GET {url}: not a list of subjects ({e})"))
    }

    fn authorized(
        &self,
        request: reqwest::blocking::RequestBuilder,
    ) -> reqwest::blocking::RequestBuilder {
        match &self.config.auth {
            RegistryAuth::None => request,
            RegistryAuth::Basic { username, password } => {
                request.basic_auth(username, Some(password.expose()))
            }
            RegistryAuth::Bearer(token) => request.bearer_auth(token.expose()),
        }
    }
}

impl SchemaSource for Registry {
    fn fetch(&self, id: u32) -> Result<String, FetchError> {
        let client = self.client()?;
        self.backoff
            .retry_blocking(
                || self.try_once(client, id),
                |e| matches!(e, Attempt::Retry(_)),
                |e, wait| {
                    if let Attempt::Retry(message) = e {
                        tracing::warn!(
                            schema_id = id,
                            error = %message,
                            retry_in = ?wait,
                            "the schema registry did not answer; retrying"
                        );
                    }
                },
            )
            .map_err(|e| match e {
                Attempt::Retry(message) => FetchError::Unavailable(format!(
                    "{message} (gave up after {} retries)",
                    self.backoff.retries
                )),
                Attempt::Final(e) => e,
            })
    }
}

/// An error with its causes (reqwest's own message leaves out why a connection failed).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
