//! Refunds: `RefundRequested` → Kakao Pay `cancel` (asked once, by the caller that moved
//! the payment `APPROVED → REFUNDING`) → `REFUNDED` + `PaymentRefunded`.

use super::*;

impl Checkout {
    /// `RefundRequested`: gives the shopper's money back (see [`Self::refund_payment`]).
    pub async fn refund(
        &self,
        cause: &Event,
        request: &RefundRequested,
    ) -> Result<(), HandlerError> {
        self.refund_payment(request.payment_id, Some(cause.clone()))
            .await
    }

    /// Gives the money of `payment_id` back through Kakao Pay `cancel`, asked once per
    /// payment: only the caller that moves it `APPROVED` → `REFUNDING` asks. A refund
    /// already under way (a redelivery, the other of OrderCancelled/RefundRequested) is
    /// left to its owner; an unclear answer to the reconciler, which settles it by Kakao
    /// Pay's record (`order`), never by asking again blindly.
    pub(super) async fn refund_payment(
        &self,
        payment_id: Uuid,
        cause: Option<Event>,
    ) -> Result<(), HandlerError> {
        let transient = |error: DbError| HandlerError::Transient(error.into());
        let (moved, payment) = self.db.begin_refund(payment_id).await.map_err(transient)?;
        let payment = payment.ok_or_else(|| {
            HandlerError::Permanent(anyhow::anyhow!("no payment {payment_id} to refund"))
        })?;
        match payment.status() {
            PaymentStatus::Refunding if moved => {}
            PaymentStatus::Refunding | PaymentStatus::Refunded => return Ok(()),
            other => {
                return Err(HandlerError::Permanent(anyhow::anyhow!(
                    "payment {payment_id} is {other}: nothing to refund"
                )))
            }
        }
        match self.gateway.refund(&payment).await {
            Ok(_) => self.finish_refund(payment, cause).await.map_err(transient),
            Err(error) => {
                // Left REFUNDING: the reconciler asks Kakao Pay what became of it.
                tracing::warn!(%payment_id, %error, "Refund outcome not known; the reconciler settles it.");
                Ok(())
            }
        }
    }

    /// `REFUNDING` → `REFUNDED` + `PaymentRefunded`, once the gateway has given the
    /// money back.
    pub(super) async fn finish_refund(
        &self,
        payment: Payment,
        cause: Option<Event>,
    ) -> Result<(), DbError> {
        let amount = payment.amount;
        let announce = move |p: &Payment| {
            Event::new(
                p.order_id,
                None,
                PaymentRefunded {
                    payment_id: p.id,
                    tid: p.tid().to_owned(),
                    amount,
                    refunded_at: p.refunded_at.unwrap_or_else(Utc::now),
                },
            )
        };
        self.commit(cause, payment.id, Transition::Refunded { amount }, announce)
            .await?;
        metrics::counter!("payment_refunds_total").increment(1);
        Ok(())
    }
}
