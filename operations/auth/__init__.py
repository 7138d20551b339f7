"""Who is asking: user ids, the principal a token names, JWT verification and minting, and the
identity provider's signing keys."""
