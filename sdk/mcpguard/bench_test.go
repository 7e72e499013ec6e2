package mcpguard_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// BenchmarkToolCall measures what the guard adds to one tools/call: local
// token verification, header checks and the policy decision, in front of a
// handler that does nothing. "warm_cache" answers from the decision cache;
// "policy_round_trip" disables the cache, so every call is a Check against
// the real policy service over loopback mTLS.
func BenchmarkToolCall(b *testing.B) {
	for _, bc := range []struct {
		name    string
		noCache bool
	}{{"warm_cache", false}, {"policy_round_trip", true}} {
		b.Run(bc.name, func(b *testing.B) {
			e := startEnv(b, func(o *envOpts) { o.noCache = bc.noCache })
			tok := e.token("crm:contacts.read")
			h := e.guard.Protect(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) }))
			body := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"list_contacts","arguments":{"limit":5}}}`
			req := func() *http.Request {
				r := httptest.NewRequest(http.MethodPost, e.url, strings.NewReader(body))
				r.Header.Set("Authorization", "Bearer "+tok)
				r.Header.Set("Content-Type", "application/json")
				return r
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req()) // warm the JWKS and the cache
			if rec.Code != http.StatusOK {
				b.Fatalf("warm-up: %d %s", rec.Code, rec.Body)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, req())
				if rec.Code != http.StatusOK {
					b.Fatalf("%d %s", rec.Code, rec.Body)
				}
			}
		})
	}
}
