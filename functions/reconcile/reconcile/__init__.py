"""The reconcile function: heals payment webhooks that never arrived, from each provider's API."""
