//! The shop's catalog and how an order is priced from it: a product line costs what the
//! catalog says, in the order's language; the client never sets a product's price.

use crate::domain::{Line, Locale, NewOrder, OrderLine, OrderRequest, MAX_TOTAL};
use serde::Serialize;
use shared_events::http::InvalidParam;
use shared_events::LineItem;
use std::collections::HashMap;

/// A product as the catalog lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Product {
    #[schema(example = "house-blend-200g")]
    pub sku: String,
    pub name: ProductName,
    /// Whole KRW.
    pub price: i64,
    #[schema(value_type = String, example = "KRW")]
    pub currency: &'static str,
    pub in_stock: bool,
}

/// The product's name in each of the shop's languages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ProductName {
    pub ko: String,
    pub en: String,
}

impl ProductName {
    fn in_locale(&self, locale: Locale) -> &str {
        match locale {
            Locale::Ko => &self.ko,
            Locale::En => &self.en,
        }
    }
}

/// Prices `request` from `catalog` (the products it names, by sku). An unknown or
/// out-of-stock product is refused, naming its line; so is a total the shop cannot take.
pub fn price(
    request: OrderRequest,
    catalog: &HashMap<String, Product>,
) -> Result<NewOrder, Vec<InvalidParam>> {
    let mut invalid = Vec::new();
    let locale = request.locale;
    let items: Vec<OrderLine> = request
        .lines
        .into_iter()
        .enumerate()
        .filter_map(|(i, line)| match line {
            Line::Custom(item) => Some(OrderLine { sku: None, item }),
            Line::Product { sku, quantity } => {
                let refuse = |reason: &str| InvalidParam::new(format!("items[{i}].sku"), reason);
                match catalog.get(&sku) {
                    None => {
                        invalid.push(refuse("is not a product of the shop (GET /products)"));
                        None
                    }
                    Some(product) if !product.in_stock => {
                        invalid.push(refuse("is out of stock"));
                        None
                    }
                    Some(product) => Some(OrderLine {
                        sku: Some(sku),
                        item: LineItem {
                            name: product.name.in_locale(locale).to_owned(),
                            quantity,
                            unit_price: product.price,
                        },
                    }),
                }
            }
        })
        .collect();
    if invalid.is_empty() {
        match total(&items) {
            Some(total) if total > 0 && total <= MAX_TOTAL => {
                return Ok(NewOrder {
                    customer_id: request.customer_id,
                    customer_email: request.customer_email,
                    locale,
                    items,
                    total_amount: total,
                });
            }
            Some(0) => invalid.push(InvalidParam::new(
                "items",
                "the order total must be above 0",
            )),
            _ => invalid.push(InvalidParam::new(
                "items",
                format!("the order total must not exceed {MAX_TOTAL}"),
            )),
        }
    }
    Err(invalid)
}

/// The order total, or `None` if it overflows.
fn total(lines: &[OrderLine]) -> Option<i64> {
    lines.iter().try_fold(0i64, |sum, line| {
        line.item
            .unit_price
            .checked_mul(i64::from(line.item.quantity))
            .and_then(|amount| sum.checked_add(amount))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{PlaceOrder, PlaceOrderItem, Pricing};

    fn item(
        sku: Option<&str>,
        name: Option<&str>,
        quantity: i64,
        price: Option<i64>,
    ) -> PlaceOrderItem {
        PlaceOrderItem {
            sku: sku.map(Into::into),
            name: name.map(Into::into),
            quantity,
            unit_price: price,
        }
    }

    fn request(items: Vec<PlaceOrderItem>, locale: &str) -> PlaceOrder {
        PlaceOrder {
            customer_id: "c-1".into(),
            customer_email: "kim@example.com".into(),
            items,
            locale: Some(locale.into()),
        }
    }

    fn catalog() -> HashMap<String, Product> {
        let product = |sku: &str, price, in_stock| Product {
            sku: sku.into(),
            name: ProductName {
                ko: format!("{sku} (ko)"),
                en: format!("{sku} (en)"),
            },
            price,
            currency: "KRW",
            in_stock,
        };
        [
            product("beans", 12_000, true),
            product("grinder", 89_000, false),
        ]
        .into_iter()
        .map(|p| (p.sku.clone(), p))
        .collect()
    }

    fn names(err: Vec<InvalidParam>) -> Vec<String> {
        err.into_iter().map(|p| p.name).collect()
    }

    fn priced(items: Vec<PlaceOrderItem>, pricing: Pricing) -> Result<NewOrder, Vec<InvalidParam>> {
        let parsed = OrderRequest::parse(request(items, "en"), pricing)?;
        price(parsed, &catalog())
    }

    #[test]
    fn a_product_line_is_priced_by_the_catalog_in_the_orders_language() {
        let order = priced(
            vec![item(Some("beans"), None, 2, None)],
            Pricing::CatalogOnly,
        )
        .expect("valid");
        assert_eq!(order.total_amount, 24_000);
        assert_eq!(order.items[0].sku.as_deref(), Some("beans"));
        assert_eq!(order.items[0].item.name, "beans (en)");
        assert_eq!(order.items[0].item.unit_price, 12_000);
    }

    #[test]
    fn unknown_and_out_of_stock_products_are_named() {
        let err = priced(
            vec![
                item(Some("beans"), None, 1, None),
                item(Some("tea"), None, 1, None),
                item(Some("grinder"), None, 1, None),
            ],
            Pricing::CatalogOnly,
        )
        .expect_err("refused");
        assert_eq!(names(err), ["items[1].sku", "items[2].sku"]);
    }

    #[test]
    fn a_client_price_is_refused_unless_custom_items_are_allowed() {
        let custom = || vec![item(None, Some("gift"), 1, Some(1_000))];
        let err = priced(custom(), Pricing::CatalogOnly).expect_err("refused");
        assert_eq!(names(err), ["items[0].unit_price"]);
        let order = priced(custom(), Pricing::CustomItemsAllowed).expect("allowed");
        assert_eq!(
            (order.total_amount, order.items[0].sku.clone()),
            (1_000, None)
        );
        // A product's price is the shop's even where custom lines are allowed.
        let err = priced(
            vec![item(Some("beans"), None, 1, Some(1))],
            Pricing::CustomItemsAllowed,
        )
        .expect_err("refused");
        assert_eq!(names(err), ["items[0].unit_price"]);
    }

    #[test]
    fn a_line_without_a_sku_is_refused_in_catalog_mode() {
        let err = priced(vec![item(None, Some("x"), 1, None)], Pricing::CatalogOnly)
            .expect_err("refused");
        assert_eq!(names(err), ["items[0].sku"]);
    }

    #[test]
    fn totals_that_overflow_are_refused() {
        let lines = vec![item(None, Some("gold"), 1000, Some(MAX_TOTAL))];
        let err = priced(lines, Pricing::CustomItemsAllowed).expect_err("too much");
        assert_eq!(names(err), ["items"]);
        let free = vec![item(None, Some("free"), 1, Some(0))];
        let err = priced(free, Pricing::CustomItemsAllowed).expect_err("zero");
        assert_eq!(names(err), ["items"]);
    }
}
