//! Canopy's web console. Until the console's pages land, one page that says so.

use axum::response::Html;
use axum::routing::get;
use axum::Router;

pub fn router() -> Router {
    Router::new().route("/", get(placeholder))
}

async fn placeholder() -> Html<&'static str> {
    Html("<!DOCTYPE html><title>Canopy</title><h1>Canopy</h1><p>The console is coming.</p>")
}
