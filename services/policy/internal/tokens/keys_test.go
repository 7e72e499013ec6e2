package tokens_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/mcpid/mcpid/lib/jose"
	"github.com/mcpid/mcpid/services/policy/internal/testutil"
	"github.com/mcpid/mcpid/services/policy/internal/tokens"
)

// jwksServer serves a JWKS on 127.0.0.1 that the test can rotate.
type jwksServer struct {
	mu   sync.Mutex
	keys []*jose.SigningKey
	hits int
	srv  *httptest.Server
}

func newJWKSServer(t *testing.T, keys ...*jose.SigningKey) *jwksServer {
	t.Helper()
	s := &jwksServer{keys: keys}
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		s.mu.Lock()
		s.hits++
		set := jose.NewKeySet(s.keys...)
		s.mu.Unlock()
		w.Header().Set("Content-Type", "application/jwk-set+json")
		_ = json.NewEncoder(w).Encode(set)
	}))
	t.Cleanup(s.srv.Close)
	return s
}

func (s *jwksServer) add(k *jose.SigningKey) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.keys = append(s.keys, k)
}

func runKeys(t *testing.T, rk *tokens.RemoteKeys) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = rk.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestRemoteKeys: keys come from the JWKS URL over the SSRF-safe fetcher
// (loopback allowed because the URL is the operator's setting), lookups are
// answered from memory, and a token signed by a newly published key is
// accepted once the refresh it triggered has landed.
func TestRemoteKeys(t *testing.T) {
	k1 := testutil.NewKeys(t)
	js := newJWKSServer(t, k1.Key)
	rk, err := tokens.NewRemoteKeys(tokens.RemoteKeysConfig{URL: js.srv.URL + "/oauth2/jwks", MaxAge: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rk.LookupKey(context.Background(), k1.Key.KeyID()); !errors.Is(err, jose.ErrKeySetUnavailable) {
		t.Fatalf("before the first fetch: %v, want ErrKeySetUnavailable", err)
	}
	runKeys(t, rk)
	eventually(t, "the first fetch", rk.Ready)

	v := newVerifier(t, rk, nil)
	if _, f := v.Verify(context.Background(), k1.Token(t, res, ""), res); f != nil {
		t.Fatalf("k1: %s", f.Detail)
	}

	k2 := testutil.NewKeys(t)
	js.add(k2.Key)
	tok := k2.Token(t, res, "")
	// Unknown at first (no network on the check path), known once the
	// refresh the lookup asked for has been fetched.
	eventually(t, "the rotated key", func() bool {
		_, f := v.Verify(context.Background(), tok, res)
		return f == nil
	})
}

func TestRemoteKeysRefusesBadURL(t *testing.T) {
	for _, u := range []string{"", "ftp://x.example/jwks", "https:///jwks"} {
		if _, err := tokens.NewRemoteKeys(tokens.RemoteKeysConfig{URL: u}); err == nil {
			t.Errorf("%q accepted", u)
		}
	}
}
