package jose

import (
	"testing"
	"time"
)

// The token service signs and policy verifies on every request, so both are
// hot paths.

func BenchmarkSign(b *testing.B) {
	for _, alg := range []string{ES256, EdDSA} {
		b.Run(alg, func(b *testing.B) {
			k := mustKey(b, alg)
			claims := validClaims(t0)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Sign(k, claims, "at+jwt"); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkVerify(b *testing.B) {
	for _, alg := range []string{ES256, EdDSA} {
		b.Run(alg, func(b *testing.B) {
			k := mustKey(b, alg)
			tok, err := Sign(k, validClaims(t0), "at+jwt")
			if err != nil {
				b.Fatal(err)
			}
			v := newTestVerifier(b, NewKeySet(mustKey(b, ES256), k), func() time.Time { return t0 }, nil)
			ctx := b.Context()
			b.ReportAllocs()
			for b.Loop() {
				var c tokenClaims
				if _, err := v.Verify(ctx, tok, &c); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
