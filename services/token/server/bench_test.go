package server_test

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// Benchmarks of the token endpoint over real HTTP on loopback, next to a
// trivial net/http JSON handler measured the same way in the same run (the
// ceiling of the machine for an HTTP round trip). Load generator and
// services share the process: cpu-µs/req is the process's user+system CPU
// per request (getrusage), load generator and the other services included —
// compare it with the baseline's, whose server work is nearly nothing.
//
//	cd services/token && go test -run '^$' -bench . -benchmem ./server/

// cpuTime is the process's user+system CPU time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// loadClient is an HTTP client with one kept-alive connection per worker.
func loadClient(concurrency int) *http.Client {
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		MaxIdleConns: concurrency * 2, MaxIdleConnsPerHost: concurrency * 2, IdleConnTimeout: time.Minute,
		DialContext: (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
	}}
}

// runLoad sends b.N requests with `concurrency` workers; next builds the
// i-th request. It reports req/s, p50, p99 and CPU per request.
func runLoad(b *testing.B, concurrency int, next func(i int) *http.Request) {
	client := loadClient(concurrency)
	// Warm the connections and the server's caches.
	for i := range concurrency {
		resp, err := client.Do(next(-1 - i))
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	lat := make([]time.Duration, b.N)
	var idx atomic.Int64
	var failed atomic.Int64
	var firstErr atomic.Value
	b.ResetTimer()
	cpu0, t0 := cpuTime(), time.Now()
	var wg sync.WaitGroup
	for range concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(idx.Add(1)) - 1
				if i >= b.N {
					return
				}
				start := time.Now()
				resp, err := client.Do(next(i))
				if err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != http.StatusOK {
						err = fmt.Errorf("status %d", resp.StatusCode)
					}
				}
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
				}
				lat[i] = time.Since(start)
			}
		}()
	}
	wg.Wait()
	elapsed, cpu := time.Since(t0), cpuTime()-cpu0
	b.StopTimer()
	if n := failed.Load(); n > 0 {
		b.Fatalf("%d of %d requests failed, first: %v", n, b.N, firstErr.Load())
	}
	slices.Sort(lat)
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "req/s")
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
	b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/req")
}

// BenchmarkBaselineJSON is the ceiling: a trivial net/http JSON handler.
func BenchmarkBaselineJSON(b *testing.B) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		_, _ = w.Write([]byte(`{"access_token":"x","token_type":"Bearer","expires_in":300,"scope":"crm:read"}`))
	})}
	go func() { _ = srv.Serve(lis) }()
	b.Cleanup(func() { _ = srv.Close() })
	target := "http://" + lis.Addr().String() + "/oauth2/token"
	body := tokenForm("grant_type", "client_credentials", "resource", resCRM, "client_id", clientMachine, "client_secret", secretMachine).Encode()
	for _, c := range []int{16, 64} {
		b.Run(fmt.Sprintf("c=%d", c), func(b *testing.B) {
			runLoad(b, c, func(int) *http.Request { return formRequest(target, body) })
		})
	}
}

func formRequest(target, body string) *http.Request {
	req, _ := http.NewRequest(http.MethodPost, target, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return req
}

// BenchmarkClientCredentials issues client_credentials tokens with all four
// services running: client authentication at the registration service over
// mTLS gRPC (it reads the client from etcd), the policy catalogue from
// memory, an ES256 signature, the token.issued event batched to the audit
// service; the token service writes nothing to etcd.
func BenchmarkClientCredentials(b *testing.B) {
	e := startEnv(b, withAudit)
	target := "http://" + e.srv.HTTPAddr().String() + "/oauth2/token"
	body := tokenForm("grant_type", "client_credentials", "resource", resCRM, "client_id", clientMachine, "client_secret", secretMachine).Encode()
	for _, c := range []int{16, 64} {
		b.Run(fmt.Sprintf("c=%d", c), func(b *testing.B) {
			runLoad(b, c, func(int) *http.Request { return formRequest(target, body) })
		})
	}
}

// BenchmarkCodeExchange redeems authorization codes with all four services
// running (PKCE check, one etcd transaction consuming the code and creating
// the grant with its refresh token and its outbox event, relayed to audit,
// an ES256 signature). Codes are made before the timer starts.
func BenchmarkCodeExchange(b *testing.B) {
	e := startEnv(b, withAudit)
	target := "http://" + e.srv.HTTPAddr().String() + "/oauth2/token"
	// Sign in once and approve; later requests get a code at once.
	a := webAuthz("crm:read offline_access")
	_, br := e.fullFlow(a, "crm:read", "offline_access")
	const concurrency = 16
	b.Run(fmt.Sprintf("c=%d", concurrency), func(b *testing.B) {
		n := b.N + concurrency
		forms := make([]string, n)
		for i := range forms {
			ai := webAuthz("crm:read offline_access")
			code := e.code(br.authorize(ai), ai)
			forms[i] = url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {ai.redirect},
				"code_verifier": {ai.verifier}}.Encode()
		}
		runLoad(b, concurrency, func(i int) *http.Request {
			if i < 0 {
				i = b.N - i - 1 // warm-up requests use the spare codes
			}
			req := formRequest(target, forms[i])
			req.SetBasicAuth(clientWeb, secretWeb)
			return req
		})
	})
}
