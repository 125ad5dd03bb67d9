//! Routes, one file per resource.

mod apps;
mod certs;
mod host;
mod images;
mod ips;
mod leases;
mod logs;
mod machines;
mod orgs;
mod platform;
mod secrets;
mod volumes;
mod wireguard;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, post, put};

use crate::{ApiError, ApiState};

pub(crate) fn router(state: ApiState) -> Router {
    // The JSON extractor enforces the configured limit with a JSON error; this outer limit is
    // a backstop a little above it so the extractor is what users see.
    let backstop = state.config.max_body_bytes.saturating_add(1);
    let m = "/v1/apps/{app}/machines/{id}";
    Router::new()
        .route("/v1/apps", get(apps::list).post(apps::create))
        .route("/v1/apps/{app}", get(apps::get).delete(apps::delete))
        .route(
            "/v1/apps/{app}/machines",
            get(machines::list).post(machines::create),
        )
        .route(
            m,
            get(machines::get)
                .post(machines::update)
                .put(machines::update)
                .delete(machines::destroy),
        )
        .route(&format!("{m}/start"), post(machines::start))
        .route(&format!("{m}/stop"), post(machines::stop))
        .route(&format!("{m}/suspend"), post(machines::suspend))
        .route(&format!("{m}/restart"), post(machines::restart))
        .route(&format!("{m}/signal"), post(machines::signal))
        .route(&format!("{m}/cordon"), post(machines::cordon))
        .route(&format!("{m}/uncordon"), post(machines::uncordon))
        .route(&format!("{m}/wait"), get(machines::wait))
        .route(&format!("{m}/events"), get(machines::events))
        .route(&format!("{m}/versions"), get(machines::versions))
        .route(&format!("{m}/metadata"), get(machines::metadata))
        .route(
            &format!("{m}/metadata/{{key}}"),
            post(machines::set_metadata).delete(machines::delete_metadata),
        )
        .route(
            &format!("{m}/lease"),
            get(leases::get)
                .post(leases::acquire)
                .delete(leases::release),
        )
        .route(&format!("{m}/ps"), get(host::ps))
        .route(&format!("{m}/exec"), post(host::exec))
        .route(&format!("{m}/logs"), get(host::logs))
        .route("/v1/apps/{app}/images", post(images::upload))
        .route("/v1/apps/{app}/certificates", get(certs::list))
        .route("/v1/apps/{app}/certificates/acme", post(certs::create_acme))
        .route(
            "/v1/apps/{app}/certificates/custom",
            post(certs::import_custom),
        )
        .route(
            "/v1/apps/{app}/certificates/{hostname}",
            get(certs::show).delete(certs::delete),
        )
        .route(
            "/v1/apps/{app}/certificates/{hostname}/check",
            post(certs::check),
        )
        .route(
            "/v1/apps/{app}/certificates/{hostname}/acme",
            delete(certs::delete_acme),
        )
        .route(
            "/v1/apps/{app}/certificates/{hostname}/custom",
            delete(certs::delete_custom),
        )
        .route(
            "/v1/apps/{app}/volumes",
            get(volumes::list).post(volumes::create),
        )
        .route(
            "/v1/apps/{app}/volumes/{id}",
            get(volumes::get)
                .put(volumes::update)
                .post(volumes::update)
                .delete(volumes::delete),
        )
        .route("/v1/apps/{app}/volumes/{id}/extend", put(volumes::extend))
        .route(
            "/v1/apps/{app}/volumes/{id}/snapshots",
            get(volumes::snapshots).post(volumes::create_snapshot),
        )
        .route(
            "/v1/apps/{app}/secrets",
            get(secrets::list).post(secrets::set_many),
        )
        .route(
            "/v1/apps/{app}/secrets/{name}",
            get(secrets::get_one)
                .post(secrets::set_one)
                .delete(secrets::delete_one),
        )
        .route(
            "/v1/apps/{app}/ip_assignments",
            get(ips::list).post(ips::create),
        )
        .route("/v1/apps/{app}/ip_assignments/{ip}", delete(ips::delete))
        .route("/v1/platform/regions", get(platform::regions))
        .route("/v1/orgs", get(orgs::list).post(orgs::create))
        .route("/v1/tokens", post(orgs::create_token))
        .route(
            "/v1/orgs/{org}/wireguard",
            get(wireguard::list).post(wireguard::create),
        )
        .route(
            "/v1/orgs/{org}/wireguard/{name}",
            get(wireguard::get).delete(wireguard::delete),
        )
        .merge(logs::routes())
        .fallback(|| async { ApiError::not_found("route") })
        .layer(DefaultBodyLimit::max(backstop))
        .layer(axum::middleware::map_response(crate::error::json_errors))
        .with_state(state)
}
