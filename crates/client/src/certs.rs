//! `/v1/apps/{app}/certificates` (PLATFORM.md §2.10): an app's custom hostnames and their
//! certificates.

use hangar_api_types::{
    CertificateDetailResponse, CreateCertificateRequest, ImportCertificateRequest,
    ListCertificatesResponse,
};
use serde_json::{Value, json};

use crate::api::{Client, Result, enc};

fn path(app: &str) -> String {
    format!("/v1/apps/{}/certificates", enc(app))
}

fn host_path(app: &str, hostname: &str) -> String {
    format!("{}/{}", path(app), enc(hostname))
}

impl Client {
    /// `GET …/certificates`: every hostname of the app (all pages).
    pub async fn certificates(&self, app: &str) -> Result<ListCertificatesResponse> {
        self.get(&path(app)).await
    }

    /// `POST …/certificates/acme`: adds `hostname` and asks for a certificate over ACME.
    pub async fn add_certificate(
        &self,
        app: &str,
        hostname: &str,
    ) -> Result<CertificateDetailResponse> {
        self.post(
            &format!("{}/acme", path(app)),
            &CreateCertificateRequest {
                hostname: hostname.to_string(),
            },
        )
        .await
    }

    /// `POST …/certificates/custom`: imports a certificate (PEM chain, leaf first) and its key.
    pub async fn import_certificate(
        &self,
        app: &str,
        req: &ImportCertificateRequest,
    ) -> Result<CertificateDetailResponse> {
        self.post(&format!("{}/custom", path(app)), req).await
    }

    /// `GET …/certificates/{hostname}`.
    pub async fn certificate(
        &self,
        app: &str,
        hostname: &str,
    ) -> Result<CertificateDetailResponse> {
        self.get(&host_path(app, hostname)).await
    }

    /// `POST …/certificates/{hostname}/check`: looks again now (ACME retried at once).
    pub async fn check_certificate(
        &self,
        app: &str,
        hostname: &str,
    ) -> Result<CertificateDetailResponse> {
        self.post::<Value, _>(&format!("{}/check", host_path(app, hostname)), &json!({}))
            .await
    }

    /// `DELETE …/certificates/{hostname}`: the hostname and its certificates.
    pub async fn remove_certificate(&self, app: &str, hostname: &str) -> Result<()> {
        self.delete(&host_path(app, hostname)).await
    }
}
