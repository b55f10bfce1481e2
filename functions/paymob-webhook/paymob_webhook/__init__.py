"""The paymob-webhook function: Paymob's transaction callbacks."""
