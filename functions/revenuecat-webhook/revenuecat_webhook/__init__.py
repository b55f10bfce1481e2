"""revenuecat-webhook: RevenueCat events become entitlements and credits, exactly once."""
