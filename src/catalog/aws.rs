//! AWS clients for the S3 Tables control plane and S3, built from the AWS default credential
//! chain (environment, profile, SSO, web identity / IRSA, ECS, IMDS) with Floe's region and
//! endpoint settings applied.

use aws_config::{BehaviorVersion, Region, SdkConfig};

use crate::config::S3TablesCatalog;

/// Loads the shared AWS configuration for `region` from the default chain.
pub async fn load_sdk_config(region: &str) -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(region.to_string()))
        .load()
        .await
}

/// The S3 Tables control-plane client for `catalog`, honouring its endpoint override.
pub fn s3tables_client(sdk: &SdkConfig, catalog: &S3TablesCatalog) -> aws_sdk_s3tables::Client {
    let mut builder =
        aws_sdk_s3tables::config::Builder::from(sdk).region(Region::new(catalog.region.clone()));
    if let Some(endpoint) = &catalog.endpoint {
        builder = builder.endpoint_url(endpoint);
    }
    aws_sdk_s3tables::Client::from_conf(builder.build())
}

/// An S3 client; with an endpoint override (MinIO, test servers) requests are path-style,
/// since such servers rarely resolve bucket subdomains.
pub fn s3_client(
    sdk: &SdkConfig,
    region: &str,
    endpoint: Option<&str>,
    force_path_style: bool,
) -> aws_sdk_s3::Client {
    let mut builder =
        aws_sdk_s3::config::Builder::from(sdk).region(Region::new(region.to_string()));
    if let Some(endpoint) = endpoint {
        builder = builder.endpoint_url(endpoint).force_path_style(true);
    } else if force_path_style {
        builder = builder.force_path_style(true);
    }
    aws_sdk_s3::Client::from_conf(builder.build())
}

/// Whether an S3 call that failed this way may succeed when sent again: no answer (dispatch
/// failure, timeout, a response cut off), a 5xx, throttling (429, `SlowDown`), a request
/// timeout or expired credentials. Other answers (access denied, no such bucket or key, a bad
/// request) do not change by themselves.
pub fn s3_transient<E>(
    e: &aws_sdk_s3::error::SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
) -> bool
where
    E: aws_sdk_s3::error::ProvideErrorMetadata,
{
    use aws_sdk_s3::error::SdkError;
    match e {
        SdkError::ServiceError(service) => {
            let status = service.raw().status().as_u16();
            status >= 500
                || status == 429
                || status == 408
                || matches!(
                    service.err().code(),
                    Some("SlowDown" | "RequestTimeout" | "ExpiredToken" | "TokenRefreshRequired")
                )
        }
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) | SdkError::ResponseError(_) => {
            true
        }
        _ => false,
    }
}
