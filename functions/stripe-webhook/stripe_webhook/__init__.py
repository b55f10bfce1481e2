"""The stripe-webhook function: Stripe's events about checkouts, invoices, subscriptions
and refunds."""
