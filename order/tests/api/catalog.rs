//! The catalog and its prices: an order names products by sku and the shop prices them;
//! a client-set price is refused unless the shop allows free-form items, and every
//! refused order changes nothing.

use crate::support::*;
use serde_json::{json, Value};

/// The shipped default: only catalog products.
async fn shop() -> App {
    App::start_with(&[]).await
}

fn order_of(items: Value) -> Value {
    json!({"customer_id": "kim", "customer_email": "kim@example.com", "locale": "en", "items": items})
}

/// The problem's `invalid_params` names, after checking it is a 400 problem.
async fn refused_names(response: reqwest::Response) -> Vec<String> {
    assert_eq!(response.status(), 400);
    assert_eq!(
        header(&response, "content-type").as_deref(),
        Some("application/problem+json")
    );
    let problem: Value = response.json().await.expect("problem JSON");
    problem["invalid_params"]
        .as_array()
        .expect("invalid_params")
        .iter()
        .map(|p| p["name"].as_str().expect("name").to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_catalog_lists_the_seeded_products_with_prices_and_stock() {
    let app = shop().await;
    let response = app
        .http
        .get(format!("{}/products", app.url))
        .send()
        .await
        .expect("answers");
    assert_eq!(response.status(), 200);
    let products: Vec<Value> = response.json().await.expect("JSON");
    assert!(products.len() >= 5, "a demo catalog: {products:?}");
    let beans = products
        .iter()
        .find(|p| p["sku"] == "house-blend-200g")
        .expect("the house blend is listed");
    assert_eq!(beans["price"], 12000);
    assert_eq!(beans["currency"], "KRW");
    assert_eq!(beans["in_stock"], true);
    assert!(beans["name"]["ko"].as_str().is_some_and(|n| !n.is_empty()));
    assert!(beans["name"]["en"].as_str().is_some_and(|n| !n.is_empty()));
    assert!(products.iter().any(|p| p["in_stock"] == false));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_order_by_sku_is_priced_by_the_shop_in_the_orders_language() {
    let app = shop().await;
    let items = json!([{"sku": "house-blend-200g", "quantity": 2}, {"sku": "paper-filters-100", "quantity": 1}]);
    let response = app.post_order(&order_of(items), None).await;
    assert_eq!(response.status(), 202);
    let order: Value = response.json().await.expect("order JSON");
    assert_eq!(order["total_amount"], 2 * 12000 + 4500);
    assert_eq!(order["items"][0]["sku"], "house-blend-200g");
    assert_eq!(order["items"][0]["unit_price"], 12000);
    assert_eq!(order["items"][0]["name"], "House blend beans 200 g");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_orders_name_the_item_and_change_nothing() {
    let app = shop().await;
    let cases = [
        // A price the client set, by default.
        (
            json!([{"name": "Gold", "quantity": 1, "unit_price": 1}]),
            "items[0].unit_price",
        ),
        (
            json!([{"sku": "house-blend-200g", "quantity": 1, "unit_price": 1}]),
            "items[0].unit_price",
        ),
        (
            json!([{"sku": "house-blend-200g", "quantity": 1}, {"sku": "no-such-thing", "quantity": 1}]),
            "items[1].sku",
        ),
        (
            json!([{"sku": "hand-grinder", "quantity": 1}]),
            "items[0].sku",
        ),
        (
            json!([{"sku": "house-blend-200g", "quantity": 1001}]),
            "items[0].quantity",
        ),
        (
            json!([{"sku": "house-blend-200g", "quantity": 0}]),
            "items[0].quantity",
        ),
        (json!([]), "items"),
    ];
    for (items, field) in cases {
        let response = app.post_order(&order_of(items.clone()), None).await;
        assert_eq!(refused_names(response).await, [field], "{items}");
    }
    assert_eq!(app.count("orders").await, 0, "no order was stored");
    assert_eq!(app.count("outbox").await, 0, "no event was written");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn free_form_items_are_priced_by_the_client_only_where_allowed() {
    let app = App::start_with(&["--allow-custom-items=true".into()]).await;
    let items = json!([{"name": "Gift wrap", "quantity": 2, "unit_price": 1500}, {"sku": "drip-bags-10", "quantity": 1}]);
    let response = app.post_order(&order_of(items), None).await;
    assert_eq!(response.status(), 202);
    let order: Value = response.json().await.expect("order JSON");
    assert_eq!(order["total_amount"], 2 * 1500 + 9900);
    assert_eq!(order["items"][0]["sku"], Value::Null);
    app.stop().await;
}
