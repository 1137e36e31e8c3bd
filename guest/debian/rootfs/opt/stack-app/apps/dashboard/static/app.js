// The dashboard's client bundle, as built: prepare-app replaces the sentinel with the key on the first start.
window.__STACK_PUBLISHABLE_CLIENT_KEY__ = "STACK_ENV_VAR_SENTINEL_NEXT_PUBLIC_STACK_PUBLISHABLE_CLIENT_KEY";
