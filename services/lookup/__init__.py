"""External customer lookups (seed 004 §2, 顧客情報連動; docs/lookups.md).

- `crypto`: the payload key (AES-256-GCM), wrapped at rest under the service's KEK.
- `guard`: which addresses may be called, checked on the address actually connected to.
- `breaker`, `rate`: a circuit breaker per definition, a rate limit per channel.
- `client`: one call — timeout, size limit, JSON, decryption — each failure a code.
- `worker`: automatic lookups, outside the projection's transaction; answers become
  `lookup.result` commands.
"""
