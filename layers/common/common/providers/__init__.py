"""What each payment provider's events do, shared by its webhook and by ``reconcile``
(which fetches the same events from the provider's API when a delivery was lost): both
go through ``common.webhooks.deliver`` with the same inbox keys, so an event takes
effect once whichever of them brings it first.

- ``stripe_models``, ``stripe_subscriptions``, ``stripe_events``: Stripe events;
- ``paymob_models``, ``paymob_callbacks``: Paymob transactions (callback or inquiry);
- ``revenuecat_events``, ``revenuecat_apply``, ``revenuecat_delivery``: RevenueCat
  events (webhook, or synthesized from ``GET /v1/subscribers``).
"""
