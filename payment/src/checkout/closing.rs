//! The order's side of a payment: the order was cancelled, or its deadline passed and
//! the payment must be made unpayable (answered by `PaymentClosed`).

use super::*;

impl Checkout {
    /// The order was cancelled: a payment that can still be paid is closed (a shopper
    /// returning late to the approval URL is not charged), and one that was paid is given
    /// back — whichever came first, this event or the approval (an approval that lands
    /// later sees `order_cancelled_at` and refunds).
    pub async fn order_cancelled(&self, event: &Event) -> Result<(), HandlerError> {
        let transient = |error: DbError| HandlerError::Transient(error.into());
        let order_id = event.order_id;
        let payments = self
            .db
            .mark_order_cancelled(order_id)
            .await
            .map_err(transient)?;
        let closed = self.db.close_unpaid(order_id).await.map_err(transient)?;
        if closed > 0 {
            metrics::counter!("payment_payments_failed_total", "reason" => "order_cancelled")
                .increment(closed);
            tracing::info!(%order_id, "Payment closed: its order was cancelled.");
        }
        for payment in payments {
            if payment.status() == PaymentStatus::Approved {
                tracing::warn!(%order_id, payment_id = %payment.id, "Order cancelled with its payment approved; refunding.");
                self.refund_payment(payment.id, None).await?;
            }
        }
        Ok(())
    }

    /// The order's deadline passed: makes the payment unpayable and answers whether the
    /// shopper was charged (`PaymentClosed`). A payment mid-approve is answered by the
    /// approve's own outcome (`PaymentApproved` / `PaymentFailed`), or closed once Kakao
    /// Pay's record shows it was not applied.
    pub async fn close_requested(&self, event: &Event) -> Result<(), DbError> {
        let order_id = event.order_id;
        let payments = self.db.mark_close_requested(order_id).await?;
        if payments.is_empty() {
            // Nothing was ever charged for it (its OrderPlaced never got here): the order
            // must not wait forever. Should the checkout start later after all, the
            // OrderCancelled that follows this answer closes it.
            tracing::warn!(%order_id, "Asked to close a payment this service never started.");
            let answer = event.follow_up(PaymentClosed {
                payment_id: None,
                tid: None,
                outcome: PaymentCloseOutcome::NotCharged,
            });
            self.db.announce(&self.outbox, answer).await?;
            self.outbox.notify();
        }
        for payment in payments {
            self.close(payment).await?;
        }
        Ok(())
    }

    /// Closes `payment` (see [`Self::close_requested`]), retrying when it moved under us.
    pub(super) async fn close(&self, mut payment: Payment) -> Result<(), DbError> {
        loop {
            let from = payment.status();
            let (transition, outcome) = match from {
                PaymentStatus::Requested | PaymentStatus::Ready => (
                    Transition::Failed {
                        from,
                        reason: reason_text(PaymentFailureReason::Expired),
                        error_code: None,
                    },
                    PaymentCloseOutcome::NotCharged,
                ),
                PaymentStatus::Approving => return Ok(()),
                PaymentStatus::Approved => (Transition::Unchanged, PaymentCloseOutcome::Approved),
                PaymentStatus::Failed | PaymentStatus::Refunding | PaymentStatus::Refunded => {
                    (Transition::Unchanged, PaymentCloseOutcome::NotCharged)
                }
            };
            let announce = move |p: &Payment| {
                Event::new(
                    p.order_id,
                    None,
                    PaymentClosed {
                        payment_id: Some(p.id),
                        tid: p.tid.clone(),
                        outcome,
                    },
                )
            };
            if self
                .commit(None, payment.id, transition, announce)
                .await?
                .is_some()
            {
                tracing::info!(payment_id = %payment.id, ?outcome, "Payment closed at its order's deadline.");
                return Ok(());
            }
            match self.db.find(payment.id).await? {
                Some(now) => payment = now,
                None => return Ok(()),
            }
        }
    }
}
