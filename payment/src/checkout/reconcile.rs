//! The reconciler: settles what no request or event will settle by itself, by Kakao
//! Pay's own record of the payment.

use super::*;

impl Checkout {
    /// Settles what no request or event will settle by itself (see `store::unsettled`):
    /// payments left `APPROVING` or `REFUNDING` longer than `older_than` — a call whose
    /// answer never came (gateway outage, crash) — by Kakao Pay's own record; `READY`
    /// payments whose approval was ever unclear; closes and refunds left half done.
    /// `older_than` must exceed the longest a live call can take, so a sweep never races
    /// a call still in flight. A payment not settled is checked again after a backoff of
    /// its own, and the least recently checked come first, so payments that keep failing
    /// neither hammer Kakao Pay nor starve the others. Returns how many were settled.
    pub async fn reconcile_stuck(&self, older_than: std::time::Duration) -> Result<usize, DbError> {
        let cutoff = Utc::now() - chrono::Duration::from_std(older_than).unwrap_or_default();
        let due = self.db.unsettled(cutoff, 50).await?;
        let mut settled = 0;
        for payment in due {
            let (id, checks) = (payment.id, payment.checks);
            match self.settle(payment).await {
                Ok(true) => settled += 1,
                Ok(false) => self.check_later(id, checks).await?,
                Err(error) => {
                    tracing::warn!(payment_id = %id, %error, "Payment still unsettled; will retry.");
                    self.check_later(id, checks).await?;
                }
            }
        }
        Ok(settled)
    }

    async fn check_later(&self, id: Uuid, checks: i32) -> Result<(), DbError> {
        let wait = self.recheck.delay(u32::try_from(checks).unwrap_or(0) + 1);
        let next = Utc::now() + chrono::Duration::from_std(wait).unwrap_or_default();
        self.db.schedule_check(id, next).await
    }

    /// One reconciler step for `payment`; true when it is settled.
    async fn settle(&self, payment: Payment) -> Result<bool, String> {
        let text = |e: DbError| e.to_string();
        match payment.status() {
            PaymentStatus::Approving => Ok(self.settle_approval(payment, true).await.is_ok()),
            PaymentStatus::Refunding => self.reconcile_refund(payment).await.map(|()| true),
            PaymentStatus::Ready if payment.close_requested_at.is_some() => {
                self.close(payment).await.map_err(text).map(|()| true)
            }
            PaymentStatus::Ready => self.recheck_ready(payment).await,
            PaymentStatus::Approved if payment.order_cancelled_at.is_some() => {
                match self.refund_payment(payment.id, None).await {
                    Ok(()) => Ok(true),
                    Err(error) => Err(format!("{error:?}")),
                }
            }
            _ => Ok(true),
        }
    }

    /// A `READY` payment whose approval was once unclear: approved if Kakao Pay's record
    /// shows it paid, failed if it shows it ended unpaid, else looked at again later.
    async fn recheck_ready(&self, payment: Payment) -> Result<bool, String> {
        let status = self
            .gateway
            .status(&payment)
            .await
            .map_err(|e| e.to_string())?;
        if !status.status.is_paid() && !status.status.is_failed() {
            return Ok(false);
        }
        match self.db.begin_approval(payment.id).await {
            Ok(Some(approving)) => Ok(self.settle_approval(approving, true).await.is_ok()),
            Ok(None) => Ok(true), // moved on meanwhile (the shopper, a close)
            Err(error) => Err(error.to_string()),
        }
    }

    /// A refund whose answer never came: done if Kakao Pay's record shows it refunded.
    /// Only when the record shows the payment still charged — so the earlier cancel
    /// certainly did not take effect — is the refund asked for again.
    async fn reconcile_refund(&self, payment: Payment) -> Result<(), String> {
        let status = self
            .gateway
            .status(&payment)
            .await
            .map_err(|e| e.to_string())?;
        if !status.status.as_str().ends_with("CANCEL_PAYMENT") {
            self.gateway
                .refund(&payment)
                .await
                .map_err(|e| e.to_string())?;
        }
        self.finish_refund(payment, None)
            .await
            .map_err(|e| e.to_string())
    }
}
