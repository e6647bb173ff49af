//! AWS Signature Version 4 for HTTP requests to Iceberg REST catalogs (the S3 Tables Iceberg
//! endpoint and MinIO AIStor use signing name `s3tables`). The algorithm is aws-sigv4's; this
//! module only adapts reqwest requests to it.

use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;

#[derive(Debug, thiserror::Error)]
#[error("cannot sign request to {url}: {message}")]
pub struct SigningError {
    pub url: String,
    pub message: String,
}

/// Signs `request` in place (adds `authorization`, `x-amz-date`, and `x-amz-security-token`
/// for temporary credentials). The body must already be set and be in memory.
pub fn sign_request(
    request: &mut reqwest::Request,
    credentials: &Credentials,
    region: &str,
    signing_name: &str,
) -> Result<(), SigningError> {
    let url = request.url().to_string();
    let err = |message: String| SigningError {
        url: url.clone(),
        message,
    };
    let identity = credentials.clone().into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(signing_name)
        .time(SystemTime::now())
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| err(e.to_string()))?
        .into();
    let body: &[u8] = match request.body() {
        None => &[],
        Some(body) => body
            .as_bytes()
            .ok_or_else(|| err("a streaming body cannot be signed".into()))?,
    };
    let headers: Vec<(&str, &str)> = request
        .headers()
        .iter()
        .filter_map(|(name, value)| Some((name.as_str(), value.to_str().ok()?)))
        .collect();
    let signable = SignableRequest::new(
        request.method().as_str(),
        url.as_str(),
        headers.into_iter(),
        SignableBody::Bytes(body),
    )
    .map_err(|e| err(e.to_string()))?;
    let (instructions, _signature) = sign(signable, &params)
        .map_err(|e| err(e.to_string()))?
        .into_parts();
    let (new_headers, new_query) = instructions.into_parts();
    for header in new_headers {
        let value = reqwest::header::HeaderValue::from_str(header.value())
            .map_err(|e| err(e.to_string()))?;
        request.headers_mut().insert(header.name(), value);
    }
    if !new_query.is_empty() {
        let mut url = request.url().clone();
        url.query_pairs_mut()
            .extend_pairs(new_query.iter().map(|(k, v)| (*k, v.as_ref())));
        *request.url_mut() = url;
    }
    Ok(())
}
