"""The checkout function: the web catalog and the start of a Paymob or Stripe payment."""
