package jose

import "errors"

// Sentinel errors. Every error returned by this package that a caller may need
// to act on wraps exactly one of these; test with errors.Is.
var (
	// ErrAlgNotAllowed: the token's "alg" is "none", an HMAC algorithm, not in
	// the verifier's allowlist, or does not fit the key it names.
	ErrAlgNotAllowed = errors.New("jose: signature algorithm not allowed")
	// ErrUnknownKey: no key in the key set matches the token's "kid".
	ErrUnknownKey = errors.New("jose: unknown signing key")
	// ErrInvalidSignature: the signature does not verify with the named key.
	ErrInvalidSignature = errors.New("jose: invalid signature")
	// ErrWrongType: the token's "typ" header is missing or not the expected one.
	ErrWrongType = errors.New("jose: wrong token type")
	// ErrExpired: the token's "exp" has passed (beyond the clock skew), or it
	// has no "exp" and the verifier requires one.
	ErrExpired = errors.New("jose: token expired")
	// ErrNotYetValid: the token's "nbf" or "iat" lies in the future (beyond the
	// clock skew).
	ErrNotYetValid = errors.New("jose: token not yet valid")
	// ErrIssuerMismatch: the token's "iss" is not the expected issuer.
	ErrIssuerMismatch = errors.New("jose: issuer mismatch")
	// ErrAudienceMismatch: the token's "aud" does not contain the expected audience.
	ErrAudienceMismatch = errors.New("jose: audience mismatch")
	// ErrMalformed: the token, a header, a claim, a key or a key set cannot be parsed.
	ErrMalformed = errors.New("jose: malformed")
	// ErrUnsupportedHeader: the token carries a header this package refuses on
	// principle: "crit" (no extensions are understood), "b64", or any header
	// that supplies or points to a key ("jku", "x5u", "jwk", "x5c").
	ErrUnsupportedHeader = errors.New("jose: unsupported header")
	// ErrTooLarge: the token is larger than the verifier's size limit.
	ErrTooLarge = errors.New("jose: token too large")
	// ErrKeySetUnavailable: a remote key set could not be fetched and no copy
	// young enough to use is cached. Unlike the other errors this is not the
	// token's fault; callers should treat it as a temporary failure.
	ErrKeySetUnavailable = errors.New("jose: key set unavailable")
)
