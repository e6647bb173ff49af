//! The `rest` catalog: a client of the Iceberg REST catalog API (config, namespaces, load,
//! create, commit, drop) for the S3 Tables Iceberg endpoint, MinIO AIStor, SeaweedFS and other
//! servers. Every request is authenticated one way: SigV4 (credentials from the AWS default
//! chain), OAuth2 client credentials, a static bearer token, or nothing.
//!
//! A commit is one `updateTable` POST carrying the engine's requirements; 409 is a
//! [`CatalogError::Conflict`], a 5xx or a lost response is [`CatalogError::CommitStateUnknown`]
//! (the engine then looks for its commit in the table). 429 and 503 are retried with bounded
//! backoff. Tables' files go through [`super::s3_storage`], configured by the LoadTable
//! response's `config` over `catalog.properties`. The client never lists or deletes files, and
//! never logs or formats a secret.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_config::{BehaviorVersion, SdkConfig};
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use bytes::Bytes;
use iceberg::io::FileIO;
use iceberg::spec::TableMetadata;
use iceberg::{TableCreation, TableRequirement, TableUpdate};
use reqwest::{Method, StatusCode, Url};
use serde::Deserialize;
use serde_json::{Value, json};

use super::s3_storage::{self, S3RequestCounts, S3RequestStats};
use super::{CatalogError, LoadedTable, TableCatalog, TableIdent};
use crate::config::{RestAuth, RestCatalog as RestConfig, Secret};
use crate::retry::Backoff;

const KIND: &str = "rest";
/// Retries of a request the server throttles (429) or is unavailable for (503), or of a GET
/// whose answer was lost.
const RETRIES: Backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5), 4);
/// An OAuth2 token is renewed this long before it expires.
const TOKEN_MARGIN: Duration = Duration::from_secs(60);

/// The REST endpoints this backend calls, with the IAM actions each needs where the catalog
/// authorizes with IAM (the S3 Tables Iceberg endpoint, MinIO AIStor Tables; SigV4). `floe
/// policy` and `floe check` are derived from this list.
pub const ACTIONS: &[(&str, &[&str])] = &[
    ("GET /v1/config", &["s3tables:GetTableBucket"]),
    ("POST /v1/oauth/tokens", &[]),
    (
        "GET /v1/{prefix}/namespaces/{namespace}",
        &["s3tables:GetNamespace"],
    ),
    (
        "POST /v1/{prefix}/namespaces",
        &["s3tables:CreateNamespace"],
    ),
    (
        "GET /v1/{prefix}/namespaces/{namespace}/tables/{table}",
        &["s3tables:GetTable", "s3tables:GetTableMetadataLocation"],
    ),
    (
        "POST /v1/{prefix}/namespaces/{namespace}/tables",
        &["s3tables:CreateTable", "s3tables:PutTableData"],
    ),
    (
        "POST /v1/{prefix}/namespaces/{namespace}/tables/{table}",
        &[
            "s3tables:UpdateTableMetadataLocation",
            "s3tables:PutTableData",
        ],
    ),
    (
        "DELETE /v1/{prefix}/namespaces/{namespace}/tables/{table}",
        &["s3tables:DeleteTable"],
    ),
];

enum Auth {
    None,
    Sigv4 {
        credentials: SharedCredentialsProvider,
        region: String,
        signing_name: String,
    },
    OAuth2 {
        token_uri: String,
        client_id: String,
        client_secret: Secret,
        scope: Option<String>,
        token: tokio::sync::Mutex<Option<(Secret, Option<Instant>)>>,
    },
    Bearer(Secret),
}

pub struct RestCatalog {
    uri: String,
    /// `<uri>/v1/<prefix>`, the root of namespace and table paths.
    base: Url,
    http: reqwest::Client,
    auth: Auth,
    /// `/v1/config` defaults, then `catalog.properties`, then `/v1/config` overrides.
    properties: HashMap<String, String>,
    sdk: SdkConfig,
    stats: Arc<S3RequestStats>,
    /// The FileIO of the last table config seen (one S3 client per distinct config).
    file_io: Mutex<Option<(BTreeMap<String, String>, FileIO)>>,
    expire_snapshots: bool,
}

impl std::fmt::Debug for RestCatalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RestCatalog")
            .field("uri", &self.uri)
            .field("base", &self.base.as_str())
            .finish_non_exhaustive()
    }
}

/// A request's answer, or why there is none.
enum Reply {
    Status(StatusCode, Bytes),
    /// No response: the request may or may not have reached the server.
    Lost(String),
}

#[derive(Deserialize)]
struct ConfigResponse {
    #[serde(default)]
    defaults: HashMap<String, String>,
    #[serde(default)]
    overrides: HashMap<String, String>,
}

#[derive(Deserialize)]
struct LoadTableResponse {
    #[serde(rename = "metadata-location")]
    metadata_location: Option<String>,
    metadata: TableMetadata,
    #[serde(default)]
    config: HashMap<String, String>,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    expires_in: Option<u64>,
}

/// The `message` (and `type`) of an Iceberg REST error body, else the body's start.
fn error_text(body: &[u8]) -> String {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    if let Some(error) = parsed.as_ref().and_then(|v| v.get("error")) {
        let message = error.get("message").and_then(Value::as_str).unwrap_or("");
        return match error.get("type").and_then(Value::as_str) {
            Some(kind) => format!("{kind}: {message}"),
            None => message.to_string(),
        };
    }
    let text = String::from_utf8_lossy(body);
    text.chars().take(300).collect()
}

impl RestCatalog {
    /// Connects with the AWS default chain for SigV4 and for S3 credentials not given as
    /// properties.
    pub async fn connect(config: &RestConfig) -> Result<Self, CatalogError> {
        let sdk = aws_config::defaults(BehaviorVersion::latest()).load().await;
        Self::connect_with(config, sdk).await
    }

    /// Connects with the given AWS configuration (its credentials sign requests and reach S3
    /// when the table config and `catalog.properties` carry none). Fetches `/v1/config`.
    pub async fn connect_with(config: &RestConfig, sdk: SdkConfig) -> Result<Self, CatalogError> {
        let uri = config.uri.trim_end_matches('/').to_string();
        let shown = uri.clone();
        let fatal = move |message: String| CatalogError::other(KIND, format!("{shown}: {message}"));
        let auth = match &config.auth {
            RestAuth::None => Auth::None,
            RestAuth::Bearer { token } => Auth::Bearer(token.clone()),
            RestAuth::Sigv4 {
                signing_name,
                signing_region,
            } => {
                let region = signing_region
                    .clone()
                    .or_else(|| sdk.region().map(|r| r.to_string()))
                    .ok_or_else(|| {
                        fatal("SigV4 needs a region: set catalog.signing_region".into())
                    })?;
                let credentials = sdk.credentials_provider().ok_or_else(|| {
                    fatal("SigV4 needs AWS credentials, and the default chain has none".into())
                })?;
                Auth::Sigv4 {
                    credentials,
                    region,
                    signing_name: signing_name.clone(),
                }
            }
            RestAuth::OAuth2 {
                client_id,
                client_secret,
                server_uri,
                scope,
            } => Auth::OAuth2 {
                token_uri: server_uri
                    .clone()
                    .unwrap_or_else(|| format!("{uri}/v1/oauth/tokens")),
                client_id: client_id.clone(),
                client_secret: client_secret.clone(),
                scope: scope.clone(),
                token: tokio::sync::Mutex::new(None),
            },
        };
        let http = reqwest::Client::builder()
            .timeout(config.request_timeout)
            .connect_timeout(config.request_timeout.min(Duration::from_secs(10)))
            .build()
            .map_err(|e| fatal(format!("HTTP client: {e}")))?;
        let mut catalog = RestCatalog {
            base: Url::parse(&format!("{uri}/v1/"))
                .map_err(|e| fatal(format!("not a URL: {e}")))?,
            uri,
            http,
            auth,
            properties: HashMap::new(),
            sdk,
            stats: Arc::new(S3RequestStats::default()),
            file_io: Mutex::new(None),
            expire_snapshots: config.expire_snapshots,
        };

        let mut url = catalog.url(&["config"])?;
        if let Some(warehouse) = &config.warehouse {
            url.query_pairs_mut().append_pair("warehouse", warehouse);
        }
        let body = match catalog.send(Method::GET, url, None).await? {
            Reply::Status(status, body) if status.is_success() => body,
            Reply::Status(status, body) => {
                return Err(catalog.refused("GET /v1/config", status, &body));
            }
            Reply::Lost(message) => {
                return Err(CatalogError::Other {
                    catalog: KIND,
                    message: format!("{}: GET /v1/config: {message}", catalog.uri),
                    retryable: true,
                });
            }
        };
        let server: ConfigResponse =
            serde_json::from_slice(&body).map_err(|e| fatal(format!("/v1/config answer: {e}")))?;
        let mut properties = server.defaults;
        properties.extend(config.properties.clone());
        properties.extend(server.overrides);
        if let Some(prefix) = properties.get("prefix").filter(|p| !p.is_empty()) {
            catalog.base = Url::parse(&format!("{}/v1/{}/", catalog.uri, prefix.trim_matches('/')))
                .map_err(|e| fatal(format!("prefix {prefix}: {e}")))?;
        }
        catalog.properties = properties;
        Ok(catalog)
    }

    /// The S3 requests sent for table files so far, by kind.
    pub fn s3_requests(&self) -> S3RequestCounts {
        self.stats.counts()
    }

    fn url(&self, segments: &[&str]) -> Result<Url, CatalogError> {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .map_err(|()| CatalogError::other(KIND, format!("{}: not a base URL", self.base)))?
            .pop_if_empty()
            .extend(segments);
        Ok(url)
    }

    fn table_url(&self, ident: &TableIdent) -> Result<Url, CatalogError> {
        self.url(&["namespaces", &ident.namespace, "tables", &ident.name])
    }

    /// An error for an answer the caller has no better meaning for.
    fn refused(&self, what: &str, status: StatusCode, body: &[u8]) -> CatalogError {
        let text = error_text(body);
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return CatalogError::Other {
                catalog: KIND,
                message: format!(
                    "authentication refused by {} (HTTP {status}) for {what}: {text}",
                    self.uri
                ),
                retryable: false,
            };
        }
        CatalogError::Other {
            catalog: KIND,
            message: format!("{}: {what}: HTTP {status}: {text}", self.uri),
            retryable: status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS,
        }
    }

    async fn oauth2_token(&self, renew: bool) -> Result<Option<String>, CatalogError> {
        let Auth::OAuth2 {
            token_uri,
            client_id,
            client_secret,
            scope,
            token,
        } = &self.auth
        else {
            return Ok(None);
        };
        let mut cached = token.lock().await;
        if !renew
            && let Some((secret, expires)) = cached.as_ref()
            && expires.is_none_or(|at| Instant::now() + TOKEN_MARGIN < at)
        {
            return Ok(Some(secret.expose().to_string()));
        }
        let mut form = vec![
            ("grant_type", "client_credentials"),
            ("client_id", client_id.as_str()),
            ("client_secret", client_secret.expose()),
        ];
        if let Some(scope) = scope {
            form.push(("scope", scope.as_str()));
        }
        let response = self
            .http
            .post(token_uri)
            .form(&form)
            .send()
            .await
            .map_err(|e| CatalogError::Other {
                catalog: KIND,
                message: format!("OAuth2 token from {token_uri}: {}", e.without_url()),
                retryable: true,
            })?;
        let status = response.status();
        let body = response.bytes().await.unwrap_or_default();
        if !status.is_success() {
            return Err(CatalogError::Other {
                catalog: KIND,
                message: format!(
                    "authentication refused by {token_uri} (HTTP {status}) for the OAuth2 client credentials of {client_id}: {}",
                    error_text(&body)
                ),
                retryable: status.is_server_error(),
            });
        }
        let issued: TokenResponse = serde_json::from_slice(&body).map_err(|e| {
            CatalogError::other(KIND, format!("OAuth2 token answer from {token_uri}: {e}"))
        })?;
        let expires = issued
            .expires_in
            .map(|s| Instant::now() + Duration::from_secs(s));
        *cached = Some((Secret::new(issued.access_token.clone()), expires));
        Ok(Some(issued.access_token))
    }

    /// Builds, authenticates and sends one request; retries 429 and 503 (and, for reads, lost
    /// connections) with backoff, and renews an OAuth2 token once on 401.
    async fn send(
        &self,
        method: Method,
        url: Url,
        body: Option<&Value>,
    ) -> Result<Reply, CatalogError> {
        let body = match body {
            Some(v) => Some(
                serde_json::to_vec(v)
                    .map_err(|e| CatalogError::other(KIND, format!("encode request: {e}")))?,
            ),
            None => None,
        };
        let idempotent = method == Method::GET;
        let mut waits = RETRIES.delays();
        let mut renewed = false;
        let mut renew_now = false;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut builder = self.http.request(method.clone(), url.clone());
            if let Some(body) = &body {
                builder = builder
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body.clone());
            }
            let mut request = builder
                .build()
                .map_err(|e| CatalogError::other(KIND, format!("{method} {url}: {e}")))?;
            self.authenticate(&mut request, std::mem::take(&mut renew_now))
                .await?;
            let reply = match self.http.execute(request).await {
                Ok(response) => {
                    let status = response.status();
                    let retry_after = response
                        .headers()
                        .get(reqwest::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<u64>().ok())
                        .map(Duration::from_secs);
                    match response.bytes().await {
                        Ok(bytes) => {
                            if matches!(
                                status,
                                StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
                            ) && let Some(wait) = waits.next()
                            {
                                tracing::debug!(%url, %status, attempt, "catalog busy; retrying");
                                // The catalog's own Retry-After wins, up to the longest wait.
                                let wait = retry_after.map_or(wait, |r| r.min(RETRIES.longest));
                                tokio::time::sleep(wait).await;
                                continue;
                            }
                            if status == StatusCode::UNAUTHORIZED
                                && !renewed
                                && matches!(self.auth, Auth::OAuth2 { .. })
                            {
                                renewed = true;
                                renew_now = true;
                                continue;
                            }
                            Reply::Status(status, bytes)
                        }
                        Err(e) => Reply::Lost(format!("reading the answer: {}", e.without_url())),
                    }
                }
                Err(e) => Reply::Lost(e.without_url().to_string()),
            };
            if let Reply::Lost(message) = &reply
                && idempotent
                && let Some(wait) = waits.next()
            {
                tracing::debug!(%url, attempt, error = %message, "catalog request failed; retrying");
                tokio::time::sleep(wait).await;
                continue;
            }
            return Ok(reply);
        }
    }

    async fn authenticate(
        &self,
        request: &mut reqwest::Request,
        renew: bool,
    ) -> Result<(), CatalogError> {
        let bearer = |request: &mut reqwest::Request, token: &str| {
            let value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| CatalogError::other(KIND, "the token is not a valid header value"))?;
            request
                .headers_mut()
                .insert(reqwest::header::AUTHORIZATION, value);
            Ok::<(), CatalogError>(())
        };
        match &self.auth {
            Auth::None => Ok(()),
            Auth::Bearer(token) => bearer(request, token.expose()),
            Auth::OAuth2 { .. } => match self.oauth2_token(renew).await? {
                Some(token) => bearer(request, &token),
                None => Ok(()),
            },
            Auth::Sigv4 {
                credentials,
                region,
                signing_name,
            } => {
                let credentials =
                    credentials
                        .provide_credentials()
                        .await
                        .map_err(|e| CatalogError::Other {
                            catalog: KIND,
                            message: format!(
                                "{}: no AWS credentials to sign requests with: {e}",
                                self.uri
                            ),
                            retryable: true,
                        })?;
                super::sigv4::sign_request(request, &credentials, region, signing_name)
                    .map_err(|e| CatalogError::other(KIND, e))
            }
        }
    }

    /// A FileIO for a table whose LoadTable `config` is `table_config`.
    /// The storage settings of a table: the catalog's, with the table's own (vended
    /// credentials) over them.
    fn storage_properties(
        &self,
        table_config: HashMap<String, String>,
    ) -> BTreeMap<String, String> {
        let mut properties: BTreeMap<String, String> = self
            .properties
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        properties.extend(table_config);
        properties
    }

    fn file_io_for(&self, table_config: HashMap<String, String>) -> FileIO {
        let properties = self.storage_properties(table_config);
        let mut cached = self.file_io.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((props, io)) = cached.as_ref()
            && *props == properties
        {
            return io.clone();
        }
        // Floe deletes the files of the snapshots it expires, and nothing else.
        let deletes = if self.expire_snapshots {
            s3_storage::Deletes::Allowed
        } else {
            s3_storage::Deletes::Refused
        };
        let io = s3_storage::file_io(
            &self.sdk,
            properties.clone().into_iter().collect(),
            self.stats.clone(),
            deletes,
        );
        *cached = Some((properties, io.clone()));
        io
    }

    fn loaded(
        &self,
        ident: &TableIdent,
        body: &[u8],
        file_io: Option<FileIO>,
    ) -> Result<LoadedTable, CatalogError> {
        let answer: LoadTableResponse = serde_json::from_slice(body).map_err(|e| {
            CatalogError::other(KIND, format!("table {ident}: unreadable table answer: {e}"))
        })?;
        let location = answer.metadata_location.ok_or_else(|| {
            CatalogError::other(
                KIND,
                format!("table {ident}: answer without metadata-location"),
            )
        })?;
        Ok(LoadedTable {
            ident: ident.clone(),
            metadata: answer.metadata,
            version: location.clone(),
            metadata_location: location,
            file_io: match file_io {
                Some(io) => io,
                None => self.file_io_for(answer.config),
            },
        })
    }

    fn lost(&self, ident: &TableIdent, what: &str, message: String) -> CatalogError {
        CatalogError::Other {
            catalog: KIND,
            message: format!("{}: table {ident}: {what}: {message}", self.uri),
            retryable: true,
        }
    }
}

#[async_trait]
impl TableCatalog for RestCatalog {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn expires_snapshots(&self) -> bool {
        self.expire_snapshots
    }

    async fn list_files(
        &self,
        table: &LoadedTable,
    ) -> Result<Option<Vec<super::ListedFile>>, CatalogError> {
        if !self.expire_snapshots {
            return Ok(None);
        }
        // The table's own storage settings, asked of the catalog now: a `LoadedTable` keeps
        // only its FileIO, which cannot list.
        let ident = &table.ident;
        let config = match self.send(Method::GET, self.table_url(ident)?, None).await? {
            Reply::Status(s, body) if s.is_success() => {
                serde_json::from_slice::<LoadTableResponse>(&body)
                    .map_err(|e| {
                        CatalogError::other(
                            KIND,
                            format!("table {ident}: unreadable table answer: {e}"),
                        )
                    })?
                    .config
            }
            Reply::Status(s, body) => {
                return Err(self.refused(&format!("load table {ident}"), s, &body));
            }
            Reply::Lost(m) => return Err(self.lost(ident, "load", m)),
        };
        let properties: HashMap<String, String> =
            self.storage_properties(config).into_iter().collect();
        let location = table.metadata.location();
        s3_storage::list(&self.sdk, &properties, self.stats.clone(), location)
            .await
            .map(Some)
            .map_err(|e| CatalogError::Other {
                catalog: KIND,
                message: format!("list {location}: {e}"),
                retryable: super::io_retryable(&e),
            })
    }

    async fn namespace_exists(&self, namespace: &str) -> Result<bool, CatalogError> {
        let what = format!("namespace {namespace}");
        match self
            .send(Method::GET, self.url(&["namespaces", namespace])?, None)
            .await?
        {
            Reply::Status(s, _) if s.is_success() => Ok(true),
            Reply::Status(StatusCode::NOT_FOUND, _) => Ok(false),
            Reply::Status(s, body) => Err(self.refused(&what, s, &body)),
            Reply::Lost(m) => Err(CatalogError::other(
                KIND,
                format!("{}: {what}: {m}", self.uri),
            )),
        }
    }

    /// The warehouse was reached when the catalog was opened (`GET /v1/config`).
    async fn describe(&self) -> Result<String, CatalogError> {
        Ok(format!("catalog {} (tables under {})", self.uri, self.base))
    }

    async fn ensure_namespace(&self, namespace: &str) -> Result<(), CatalogError> {
        let what = format!("namespace {namespace}");
        let lost = |message: String| CatalogError::Other {
            catalog: KIND,
            message: format!("{}: {what}: {message}", self.uri),
            retryable: true,
        };
        match self
            .send(Method::GET, self.url(&["namespaces", namespace])?, None)
            .await?
        {
            Reply::Status(s, _) if s.is_success() => return Ok(()),
            Reply::Status(StatusCode::NOT_FOUND, _) => {}
            Reply::Status(s, body) => return Err(self.refused(&what, s, &body)),
            Reply::Lost(m) => return Err(lost(m)),
        }
        let body = json!({"namespace": [namespace], "properties": {}});
        match self
            .send(Method::POST, self.url(&["namespaces"])?, Some(&body))
            .await?
        {
            // 409: another writer created it first.
            Reply::Status(s, _) if s.is_success() || s == StatusCode::CONFLICT => Ok(()),
            Reply::Status(s, body) => Err(self.refused(&format!("create {what}"), s, &body)),
            Reply::Lost(m) => Err(lost(m)),
        }
    }

    async fn load_table(&self, ident: &TableIdent) -> Result<Option<LoadedTable>, CatalogError> {
        match self.send(Method::GET, self.table_url(ident)?, None).await? {
            Reply::Status(s, body) if s.is_success() => Ok(Some(self.loaded(ident, &body, None)?)),
            Reply::Status(StatusCode::NOT_FOUND, _) => Ok(None),
            Reply::Status(s, body) => Err(self.refused(&format!("load table {ident}"), s, &body)),
            Reply::Lost(m) => Err(self.lost(ident, "load", m)),
        }
    }

    async fn create_table(
        &self,
        ident: &TableIdent,
        creation: TableCreation,
    ) -> Result<LoadedTable, CatalogError> {
        let exists = || CatalogError::TableExists {
            catalog: KIND,
            table: ident.to_string(),
        };
        // Some servers (SeaweedFS) answer a create of an existing table with 200 and the
        // existing table: look first, so another writer's table is never taken for ours.
        if self.load_table(ident).await?.is_some() {
            return Err(exists());
        }
        let mut properties = creation.properties;
        properties
            .entry("format-version".into())
            .or_insert_with(|| (creation.format_version as u8).to_string());
        let mut body = json!({
            "name": ident.name,
            "schema": creation.schema,
            "stage-create": false,
            "properties": properties,
        });
        if let Some(spec) = &creation.partition_spec {
            body["partition-spec"] = serde_json::to_value(spec)
                .map_err(|e| CatalogError::other(KIND, format!("table {ident}: {e}")))?;
        }
        if let Some(order) = &creation.sort_order {
            body["write-order"] = serde_json::to_value(order)
                .map_err(|e| CatalogError::other(KIND, format!("table {ident}: {e}")))?;
        }
        let url = self.url(&["namespaces", &ident.namespace, "tables"])?;
        match self.send(Method::POST, url, Some(&body)).await? {
            Reply::Status(s, body) if s.is_success() => self.loaded(ident, &body, None),
            Reply::Status(StatusCode::CONFLICT, _) => Err(exists()),
            Reply::Status(s, body) => Err(self.refused(&format!("create table {ident}"), s, &body)),
            Reply::Lost(m) => Err(self.lost(ident, "create", m)),
        }
    }

    async fn commit(
        &self,
        base: &LoadedTable,
        requirements: Vec<TableRequirement>,
        updates: Vec<TableUpdate>,
    ) -> Result<LoadedTable, CatalogError> {
        let ident = &base.ident;
        let body = json!({
            "identifier": {"namespace": [ident.namespace], "name": ident.name},
            "requirements": requirements,
            "updates": updates,
        });
        let table = ident.to_string();
        match self
            .send(Method::POST, self.table_url(ident)?, Some(&body))
            .await?
        {
            Reply::Status(s, body) if s.is_success() => {
                // The commit answer has no `config`: keep the base's FileIO.
                self.loaded(ident, &body, Some(base.file_io.clone()))
                    .map_err(|e| CatalogError::CommitStateUnknown {
                        catalog: KIND,
                        table: table.clone(),
                        message: format!("the commit answer cannot be read: {e}"),
                    })
            }
            Reply::Status(StatusCode::CONFLICT, body) => Err(CatalogError::Conflict {
                catalog: KIND,
                table,
                message: error_text(&body),
            }),
            Reply::Status(StatusCode::NOT_FOUND, _) => Err(CatalogError::NoSuchTable {
                catalog: KIND,
                table,
            }),
            Reply::Status(s, body) if s.is_server_error() => {
                Err(CatalogError::CommitStateUnknown {
                    catalog: KIND,
                    table,
                    message: format!("HTTP {s}: {}", error_text(&body)),
                })
            }
            Reply::Status(s, body) => Err(self.refused(&format!("commit to {table}"), s, &body)),
            Reply::Lost(message) => Err(CatalogError::CommitStateUnknown {
                catalog: KIND,
                table,
                message,
            }),
        }
    }

    /// Drops the table and asks the catalog to purge its files.
    async fn drop_table(&self, ident: &TableIdent) -> Result<(), CatalogError> {
        let mut url = self.table_url(ident)?;
        url.query_pairs_mut().append_pair("purgeRequested", "true");
        match self.send(Method::DELETE, url, None).await? {
            Reply::Status(s, _) if s.is_success() => Ok(()),
            Reply::Status(StatusCode::NOT_FOUND, _) => Err(CatalogError::NoSuchTable {
                catalog: KIND,
                table: ident.to_string(),
            }),
            Reply::Status(s, body) => Err(self.refused(&format!("drop table {ident}"), s, &body)),
            Reply::Lost(m) => Err(self.lost(ident, "drop", m)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_give_their_message() {
        let body = br#"{"error": {"message": "Requirement failed", "type": "CommitFailedException", "code": 409}}"#;
        assert_eq!(
            error_text(body),
            "CommitFailedException: Requirement failed"
        );
        assert_eq!(error_text(b"plain"), "plain");
    }

    #[test]
    fn requirements_and_updates_serialize_as_the_rest_spec_says() {
        let uuid = uuid::Uuid::nil();
        let value = serde_json::to_value(vec![
            TableRequirement::UuidMatch { uuid },
            TableRequirement::RefSnapshotIdMatch {
                r#ref: "main".into(),
                snapshot_id: Some(7),
            },
        ])
        .unwrap();
        assert_eq!(value[0]["type"], "assert-table-uuid");
        assert_eq!(value[1]["type"], "assert-ref-snapshot-id");
        assert_eq!(value[1]["snapshot-id"], 7);
    }
}

/// The client against a scripted server on 127.0.0.1: retries, status mapping, prefix, auth.
#[cfg(test)]
mod scripted_server_tests {
    use std::sync::Mutex as StdMutex;

    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    use tokio::net::TcpListener;

    use super::*;

    /// Serves `answers` in order, one per connection, and records each request's first line
    /// and `authorization` header.
    async fn serve(answers: Vec<(u16, String)>) -> (String, Arc<StdMutex<Vec<String>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(StdMutex::new(Vec::new()));
        let log = seen.clone();
        tokio::spawn(async move {
            for (status, body) in answers {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let mut reader = BufReader::new(stream);
                let mut first = String::new();
                reader.read_line(&mut first).await.unwrap();
                let mut length = 0;
                let mut auth = String::new();
                loop {
                    let mut line = String::new();
                    reader.read_line(&mut line).await.unwrap();
                    let line = line.trim_end().to_string();
                    if line.is_empty() {
                        break;
                    }
                    let lower = line.to_ascii_lowercase();
                    if let Some(v) = lower.strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap();
                    }
                    if lower.starts_with("authorization:") {
                        auth = line["authorization:".len()..].trim().to_string();
                    }
                }
                let mut request_body = vec![0; length];
                reader.read_exact(&mut request_body).await.unwrap();
                log.lock()
                    .unwrap()
                    .push(format!("{} auth={auth}", first.trim_end()));
                let response = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let mut stream = reader.into_inner();
                stream.write_all(response.as_bytes()).await.unwrap();
                stream.shutdown().await.ok();
            }
        });
        (address, seen)
    }

    fn config(uri: &str) -> RestConfig {
        RestConfig {
            uri: uri.to_string(),
            warehouse: Some("wh".into()),
            auth: RestAuth::Bearer {
                token: Secret::new("tok"),
            },
            request_timeout: Duration::from_secs(10),
            expire_snapshots: true,
            properties: BTreeMap::new(),
        }
    }

    fn sdk() -> SdkConfig {
        SdkConfig::builder()
            .behavior_version(BehaviorVersion::latest())
            .build()
    }

    fn base_table() -> LoadedTable {
        let metadata = crate::catalog::test_metadata("s3://b/ns/t");
        LoadedTable {
            ident: TableIdent {
                namespace: "ns".into(),
                name: "t".into(),
            },
            metadata,
            metadata_location: "s3://b/ns/t/metadata/v1.metadata.json".into(),
            version: "s3://b/ns/t/metadata/v1.metadata.json".into(),
            file_io: FileIO::new_with_memory(),
        }
    }

    #[tokio::test]
    async fn busy_answers_are_retried_and_the_prefix_is_used() {
        let (uri, seen) = serve(vec![
            (503, "{}".into()),
            (200, r#"{"defaults": {}, "overrides": {"prefix": "pre"}}"#.into()),
            (429, "{}".into()),
            (404, r#"{"error": {"message": "no table", "type": "NoSuchTableException", "code": 404}}"#.into()),
        ])
        .await;
        let catalog = RestCatalog::connect_with(&config(&uri), sdk())
            .await
            .unwrap();
        let ident = TableIdent {
            namespace: "ns".into(),
            name: "t".into(),
        };
        assert!(catalog.load_table(&ident).await.unwrap().is_none());
        let seen = seen.lock().unwrap().clone();
        assert_eq!(
            seen,
            [
                "GET /v1/config?warehouse=wh HTTP/1.1 auth=Bearer tok",
                "GET /v1/config?warehouse=wh HTTP/1.1 auth=Bearer tok",
                "GET /v1/pre/namespaces/ns/tables/t HTTP/1.1 auth=Bearer tok",
                "GET /v1/pre/namespaces/ns/tables/t HTTP/1.1 auth=Bearer tok",
            ]
        );
    }

    #[tokio::test]
    async fn commit_answers_map_to_conflict_unknown_and_auth_errors() {
        let (uri, seen) = serve(vec![
            (200, "{}".into()),
            (409, r#"{"error": {"message": "stale", "type": "CommitFailedException", "code": 409}}"#.into()),
            (500, "{}".into()),
            (502, "{}".into()),
            (403, r#"{"error": {"message": "bad signature", "type": "ForbiddenException", "code": 403}}"#.into()),
        ])
        .await;
        let catalog = RestCatalog::connect_with(&config(&uri), sdk())
            .await
            .unwrap();
        let base = base_table();
        let requirements = || {
            vec![TableRequirement::UuidMatch {
                uuid: base.metadata.uuid(),
            }]
        };
        let err = catalog
            .commit(&base, requirements(), vec![])
            .await
            .unwrap_err();
        assert!(matches!(err, CatalogError::Conflict { .. }), "{err}");
        assert!(err.to_string().contains("stale"), "{err}");
        for _ in 0..2 {
            let err = catalog
                .commit(&base, requirements(), vec![])
                .await
                .unwrap_err();
            assert!(
                matches!(err, CatalogError::CommitStateUnknown { .. }),
                "{err}"
            );
        }
        let err = catalog
            .commit(&base, requirements(), vec![])
            .await
            .unwrap_err();
        assert!(!err.is_retryable());
        assert_eq!(
            err.to_string(),
            format!(
                "catalog rest: authentication refused by {uri} (HTTP 403 Forbidden) for commit to ns.t: ForbiddenException: bad signature"
            )
        );
        assert_eq!(
            seen.lock().unwrap().last().unwrap(),
            "POST /v1/namespaces/ns/tables/t HTTP/1.1 auth=Bearer tok"
        );
    }
}
