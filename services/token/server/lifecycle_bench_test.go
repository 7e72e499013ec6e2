package server_test

import (
	"context"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	policyv1 "github.com/mcpid/mcpid/gen/go/mcpid/policy/v1"
	tokenv1 "github.com/mcpid/mcpid/gen/go/mcpid/token/v1"
)

// BenchmarkRevocationPropagation measures the revocation propagation delay:
// from the RevokeGrants call (by grant_id) until a real policy replica,
// following the feed over mTLS, answers DENY / TOKEN_REVOKED for the token
// (polled every 1 ms). Token issuance is outside the timer. Reports the
// p50 and p99 delays in milliseconds.
//
//	cd services/token && go test -run '^$' -bench RevocationPropagation ./server/
func BenchmarkRevocationPropagation(b *testing.B) {
	e := startEnv(b)
	ctx := context.Background()
	pol := e.startPolicy(b, e.srv.GRPCAddr().String(), 0)
	// One signed-in browser; consent for clientWeb is remembered after the
	// first approval, so each further code costs one redirect.
	br := e.browser()
	first := webAuthz("crm:read")
	r := br.login(br.authorize(first), testUser, testPassword)
	r = br.approve(br.consentPage(r), "crm:read")
	_ = e.code(r, first)
	issue := func() (tok, grantID string) {
		a := webAuthz("crm:read")
		r := br.authorize(a)
		if r.code != http.StatusFound && r.code != http.StatusSeeOther || strings.Contains(r.header.Get("Location"), "/oauth2/") {
			b.Fatalf("authorize: %d %s", r.code, r.header.Get("Location"))
		}
		tr := decodeToken(b, e.exchange(e.code(r, a), a))
		_, c := claims(b, tr.AccessToken)
		return tr.AccessToken, c["grant_id"].(string)
	}
	delays := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		tok, gid := issue()
		pol.waitAllow(b, tok)
		b.StartTimer()
		start := time.Now()
		if _, err := e.grpcTok.RevokeGrants(ctx, &tokenv1.RevokeGrantsRequest{Selector: &tokenv1.RevokeGrantsRequest_GrantId{GrantId: gid}}); err != nil {
			b.Fatal(err)
		}
		for {
			res := pol.decide(b, tok)
			if res.GetReason() == policyv1.DecisionReason_DECISION_REASON_TOKEN_REVOKED {
				break
			}
			if time.Since(start) > 30*time.Second {
				b.Fatalf("never revoked: %v", res)
			}
			time.Sleep(time.Millisecond)
		}
		delays = append(delays, time.Since(start))
	}
	b.StopTimer()
	slices.Sort(delays)
	pct := func(p float64) float64 {
		return float64(delays[min(len(delays)-1, int(float64(len(delays))*p))].Microseconds()) / 1000
	}
	b.ReportMetric(pct(0.50), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
}
