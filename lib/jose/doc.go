// Package jose signs and verifies the JSON Web Tokens mcpid exchanges: RFC 9068
// access tokens (signed by the token service, verified by policy and the SDK),
// private_key_jwt client assertions and software statements (verified by
// registration).
//
// It wraps github.com/go-jose/go-jose/v4 with the decisions every caller must
// make the same way:
//
//   - Keys: [GenerateKey] makes ES256 (P-256) and EdDSA (Ed25519) keys whose kid
//     is the RFC 7638 thumbprint; [SigningKey.MarshalPrivate] and
//     [UnmarshalPrivateKey] move private keys to and from JSON (encrypting them
//     at rest is the caller's job).
//   - Key sets: [NewKeySet] publishes the public half of signing keys as a
//     JWKS; [ParseJWKS] reads one, keeping only asymmetric signature keys.
//   - Signing: [Sign] produces a compact JWS with explicit "typ" and "kid".
//   - Verification: [Verifier] enforces an algorithm allowlist (never "none",
//     never HMAC, whatever the caller asks for), explicit typing (RFC 8725),
//     time claims with clock skew, issuer and audience, and refuses headers
//     that would let a token choose its own key (jku, x5u, jwk, x5c) or
//     change how it is processed (crit, b64).
//   - Remote keys: [KeySetCache] fetches a jwks_uri through a [Fetcher],
//     refreshes on an unknown kid at a bounded rate with concurrent callers
//     coalesced, and keeps serving the last good set for a bounded time when
//     the issuer is unreachable.
//
// Failures wrap the sentinel errors in errors.go so callers can map them with
// errors.Is (for example to invalid_token versus a temporary failure).
package jose
