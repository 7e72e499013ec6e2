package jose

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// httpFetcher is the test Fetcher: a plain GET with the test server's own
// TLS client (lib/fetch adds the SSRF policy in production).
type httpFetcher struct{ client *http.Client }

func (f httpFetcher) Get(ctx context.Context, url, accept string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", accept)
	resp, err := f.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: status %d", url, resp.StatusCode)
	}
	return io.ReadAll(io.LimitReader(resp.Body, maxJWKSBytes+1))
}

// jwksServer serves a JWKS over TLS on 127.0.0.1 and counts requests.
type jwksServer struct {
	srv      *httptest.Server
	requests atomic.Int64

	mu     sync.Mutex
	body   []byte
	status int
	hold   chan struct{} // if non-nil, requests wait until it is closed
	seen   chan struct{} // receives once per request, before any hold
	accept string
}

func newJWKSServer(t *testing.T, keys ...*SigningKey) *jwksServer {
	t.Helper()
	s := &jwksServer{status: http.StatusOK, seen: make(chan struct{}, 100)}
	s.publish(t, keys...)
	s.srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.requests.Add(1)
		s.mu.Lock()
		body, status, hold := s.body, s.status, s.hold
		s.accept = r.Header.Get("Accept")
		s.mu.Unlock()
		s.seen <- struct{}{}
		if hold != nil {
			select {
			case <-hold:
			case <-r.Context().Done():
				return
			}
		}
		w.Header().Set("Content-Type", "application/jwk-set+json")
		w.WriteHeader(status)
		_, _ = w.Write(body)
	}))
	t.Cleanup(s.srv.Close)
	return s
}

func (s *jwksServer) publish(t *testing.T, keys ...*SigningKey) {
	t.Helper()
	b, err := json.Marshal(NewKeySet(keys...))
	if err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.body, s.status = b, http.StatusOK
}

func (s *jwksServer) fail(status int, body string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.status, s.body = status, []byte(body)
}

// holdRequests makes requests block until the returned release func runs.
func (s *jwksServer) holdRequests(t *testing.T) (release func()) {
	ch := make(chan struct{})
	s.mu.Lock()
	s.hold = ch
	s.mu.Unlock()
	var once sync.Once
	release = func() {
		once.Do(func() {
			s.mu.Lock()
			s.hold = nil
			s.mu.Unlock()
			close(ch)
		})
	}
	t.Cleanup(release)
	return release
}

func (s *jwksServer) count() int64 { return s.requests.Load() }

func (s *jwksServer) cache(clk *clock) *KeySetCache {
	return NewKeySetCache(httpFetcher{client: s.srv.Client()}, s.srv.URL+"/jwks.json", CacheOptions{
		MaxAge:             5 * time.Minute,
		MinRefreshInterval: 30 * time.Second,
		MaxStale:           time.Hour,
		Now:                clk.Now,
	})
}

func verifyWith(t *testing.T, v *Verifier, k *SigningKey, now time.Time) error {
	t.Helper()
	tok, err := Sign(k, validClaims(now), "at+jwt")
	if err != nil {
		t.Fatal(err)
	}
	_, err = v.Verify(t.Context(), tok, nil)
	return err
}

func TestCacheUnknownKidTriggersExactlyOneRefresh(t *testing.T) {
	k1, k2 := mustKey(t, ES256), mustKey(t, EdDSA)
	srv := newJWKSServer(t, k1)
	clk := newClock()
	cache := srv.cache(clk)
	v := newTestVerifier(t, cache, clk.Now, nil)

	if err := verifyWith(t, v, k1, clk.Now()); err != nil {
		t.Fatal(err)
	}
	if srv.count() != 1 {
		t.Fatalf("%d requests after first verify, want 1", srv.count())
	}
	srv.mu.Lock()
	accept := srv.accept
	srv.mu.Unlock()
	if accept != jwksMediaTypes {
		t.Errorf("Accept %q, want %q", accept, jwksMediaTypes)
	}
	<-srv.seen

	// The issuer rotates: k2 appears. Many tokens signed by k2 arrive at once
	// while the refresh is in flight; they must share that one fetch.
	srv.publish(t, k1, k2)
	clk.Advance(time.Minute) // past MinRefreshInterval, well within MaxAge
	release := srv.holdRequests(t)
	const callers = 8
	joined := make(chan struct{}, callers)
	cache.mu.Lock()
	cache.onJoin = func() { joined <- struct{}{} }
	cache.mu.Unlock()

	tok, _ := Sign(k2, validClaims(clk.Now()), "at+jwt")
	errs := make(chan error, callers)
	for range callers {
		go func() {
			_, err := v.Verify(t.Context(), tok, nil)
			errs <- err
		}()
	}
	<-srv.seen // the one refresh has reached the server
	// Every other caller must join it: neither fetch again nor give up.
	// Each caller does one of the three, so this loop always ends.
	for range callers - 1 {
		select {
		case <-joined:
		case <-srv.seen:
			t.Error("a concurrent caller started a second fetch instead of joining the first")
		case err := <-errs:
			t.Fatalf("a caller returned while the refresh was in flight: %v", err)
		}
	}
	release()
	for range callers {
		if err := <-errs; err != nil {
			t.Errorf("Verify with rotated key: %v", err)
		}
	}
	if got := srv.count(); got != 2 {
		t.Fatalf("%d requests, want 2 (initial + exactly one refresh)", got)
	}
	// Known kids do not fetch again.
	if err := verifyWith(t, v, k1, clk.Now()); err != nil {
		t.Fatal(err)
	}
	if got := srv.count(); got != 2 {
		t.Fatalf("%d requests after known-kid verify, want 2", got)
	}
}

func TestCacheRateLimitsUnknownKidRefresh(t *testing.T) {
	k1 := mustKey(t, ES256)
	srv := newJWKSServer(t, k1)
	clk := newClock()
	v := newTestVerifier(t, srv.cache(clk), clk.Now, nil)

	if err := verifyWith(t, v, k1, clk.Now()); err != nil {
		t.Fatal(err)
	}
	// A stream of tokens with made-up kids right after a fetch: no fetches.
	for i := range 20 {
		if err := verifyWith(t, v, mustKey(t, ES256), clk.Now()); !errors.Is(err, ErrUnknownKey) {
			t.Fatalf("unknown kid %d: %v", i, err)
		}
	}
	if got := srv.count(); got != 1 {
		t.Fatalf("%d requests, want 1: refreshes inside MinRefreshInterval", got)
	}
	clk.Advance(29 * time.Second)
	if err := verifyWith(t, v, mustKey(t, ES256), clk.Now()); !errors.Is(err, ErrUnknownKey) {
		t.Fatal(err)
	}
	if got := srv.count(); got != 1 {
		t.Fatalf("%d requests at 29 s, want 1", got)
	}
	// Once the interval has passed, one refresh is allowed, then none again.
	clk.Advance(time.Second)
	for range 5 {
		if err := verifyWith(t, v, mustKey(t, ES256), clk.Now()); !errors.Is(err, ErrUnknownKey) {
			t.Fatal(err)
		}
	}
	if got := srv.count(); got != 2 {
		t.Fatalf("%d requests at 30 s, want 2", got)
	}
}

func TestCacheKeyRotation(t *testing.T) {
	k1, k2 := mustKey(t, ES256), mustKey(t, ES256)
	srv := newJWKSServer(t, k1)
	clk := newClock()
	v := newTestVerifier(t, srv.cache(clk), clk.Now, nil)

	if err := verifyWith(t, v, k1, clk.Now()); err != nil {
		t.Fatal(err)
	}
	// The next key is published ahead of use; the cache picks it up when
	// its copy expires, with no unknown-kid refresh needed.
	srv.publish(t, k1, k2)
	clk.Advance(5 * time.Minute)
	if err := verifyWith(t, v, k1, clk.Now()); err != nil {
		t.Fatal(err)
	}
	if got := srv.count(); got != 2 {
		t.Fatalf("%d requests after MaxAge, want 2", got)
	}
	if err := verifyWith(t, v, k2, clk.Now()); err != nil {
		t.Fatalf("next key: %v", err)
	}
	if got := srv.count(); got != 2 {
		t.Fatalf("%d requests after next-key verify, want 2", got)
	}
	// The old key is retired: once the cache refreshes, it is refused.
	srv.publish(t, k2)
	clk.Advance(5 * time.Minute)
	if err := verifyWith(t, v, k1, clk.Now()); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("retired key: %v, want ErrUnknownKey", err)
	}
	if err := verifyWith(t, v, k2, clk.Now()); err != nil {
		t.Fatalf("current key: %v", err)
	}
}

func TestCacheServesLastGoodSetUntilMaxStale(t *testing.T) {
	k1 := mustKey(t, EdDSA)
	srv := newJWKSServer(t, k1)
	clk := newClock()
	v := newTestVerifier(t, srv.cache(clk), clk.Now, nil)

	if err := verifyWith(t, v, k1, clk.Now()); err != nil {
		t.Fatal(err)
	}
	srv.fail(http.StatusServiceUnavailable, "down")
	clk.Advance(6 * time.Minute) // past MaxAge
	if err := verifyWith(t, v, k1, clk.Now()); err != nil {
		t.Fatalf("stale set not served while the issuer is down: %v", err)
	}
	if got := srv.count(); got != 2 {
		t.Fatalf("%d requests, want 2 (one failed refresh)", got)
	}
	// A broken document is a failed refresh too, not a reason to drop keys.
	srv.fail(http.StatusOK, `{"keys":`)
	clk.Advance(time.Minute)
	if err := verifyWith(t, v, k1, clk.Now()); err != nil {
		t.Fatalf("stale set not served after a malformed document: %v", err)
	}
	if got := srv.count(); got != 3 {
		t.Fatalf("%d requests, want 3", got)
	}
	// Past MaxStale the old keys are no longer trusted.
	clk.Advance(time.Hour)
	err := verifyWith(t, v, k1, clk.Now())
	if !errors.Is(err, ErrKeySetUnavailable) || errors.Is(err, ErrMalformed) || errors.Is(err, ErrUnknownKey) {
		t.Fatalf("beyond MaxStale: %v, want only ErrKeySetUnavailable", err)
	}
	// Recovery.
	srv.publish(t, k1)
	clk.Advance(30 * time.Second)
	if err := verifyWith(t, v, k1, clk.Now()); err != nil {
		t.Fatalf("after recovery: %v", err)
	}
}

func TestCacheFailedFirstFetchIsRateLimited(t *testing.T) {
	k1 := mustKey(t, ES256)
	srv := newJWKSServer(t, k1)
	srv.fail(http.StatusInternalServerError, "")
	clk := newClock()
	cache := srv.cache(clk)

	for range 3 {
		if _, err := cache.LookupKey(t.Context(), k1.KeyID()); !errors.Is(err, ErrKeySetUnavailable) {
			t.Fatalf("LookupKey = %v, want ErrKeySetUnavailable", err)
		}
	}
	if got := srv.count(); got != 1 {
		t.Fatalf("%d requests, want 1 (failures are not retried inside the retry interval)", got)
	}
	// With no usable set the cache retries after unusableRetryInterval, not
	// after the (much longer) MinRefreshInterval: a verifier started before
	// its issuer gets keys as soon as the issuer serves them.
	srv.publish(t, k1)
	clk.Advance(unusableRetryInterval)
	if _, err := cache.LookupKey(t.Context(), k1.KeyID()); err != nil {
		t.Fatal(err)
	}
	if got := srv.count(); got != 2 {
		t.Fatalf("%d requests, want 2", got)
	}
	// Once a set is held, unknown kids are rate limited by
	// MinRefreshInterval again.
	for range 3 {
		if _, err := cache.LookupKey(t.Context(), "made-up"); !errors.Is(err, ErrUnknownKey) {
			t.Fatalf("LookupKey(made-up) = %v, want ErrUnknownKey", err)
		}
	}
	clk.Advance(unusableRetryInterval)
	if _, err := cache.LookupKey(t.Context(), "made-up"); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("LookupKey(made-up) = %v, want ErrUnknownKey", err)
	}
	if got := srv.count(); got != 2 {
		t.Fatalf("%d requests, want 2 (unknown kids inside MinRefreshInterval fetch nothing)", got)
	}
}

func TestCacheWaiterHonoursItsContext(t *testing.T) {
	k1 := mustKey(t, ES256)
	srv := newJWKSServer(t, k1)
	clk := newClock()
	cache := srv.cache(clk)
	release := srv.holdRequests(t)

	ctx, cancel := context.WithCancel(t.Context())
	errc := make(chan error, 1)
	go func() {
		_, err := cache.LookupKey(ctx, k1.KeyID())
		errc <- err
	}()
	<-srv.seen
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled waiter: %v", err)
	}
	// The fetch itself was not cancelled: once the server answers, the set
	// is cached for everyone without another request.
	release()
	if _, err := cache.LookupKey(t.Context(), k1.KeyID()); err != nil {
		t.Fatalf("after release: %v", err)
	}
	if got := srv.count(); got != 1 {
		t.Fatalf("%d requests, want 1", got)
	}
}
