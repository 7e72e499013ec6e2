package dev

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"
)

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(context.Background(), http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestDevServesReadyzOnPublicOrigin runs the whole system as `mcpid dev`
// does: embedded etcd, the development CA, all four services with mTLS and
// the edge router.
func TestDevServesReadyzOnPublicOrigin(t *testing.T) {
	dataDir := t.TempDir()
	env, err := Start(context.Background(), Options{
		Addr:     "127.0.0.1:0",
		EtcdAddr: "127.0.0.1:0",
		DataDir:  dataDir,
		LogLevel: "error",
	}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			_ = env.Stop()
		}
	})
	base := "http://" + env.Public.String()

	deadline := time.Now().Add(60 * time.Second)
	for {
		code, body := get(t, base+"/readyz")
		if code == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz never 200: %d %s", code, body)
		}
		time.Sleep(50 * time.Millisecond)
	}

	// Both OAuth services answer through the public origin with OAuth JSON
	// (which answer depends on how far each service is implemented; the
	// routing itself is pinned by TestRouterRoutes).
	for _, path := range []string{"/oauth2/register", "/oauth2/token"} {
		ctype := "application/json"
		if path == "/oauth2/token" {
			ctype = "application/x-www-form-urlencoded"
		}
		req, _ := http.NewRequestWithContext(context.Background(), http.MethodPost, base+path, strings.NewReader("{}"))
		req.Header.Set("Content-Type", ctype)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusBadGateway ||
			resp.Header.Get("Cache-Control") != "no-store" || resp.Header.Get("Content-Type") != "application/json" {
			t.Errorf("POST %s = %d %v", path, resp.StatusCode, resp.Header)
		}
	}

	// The token service serves the issuer's metadata on the public origin.
	code, body := get(t, base+"/.well-known/oauth-authorization-server")
	if code != http.StatusOK || !strings.Contains(body, `"issuer":"`+env.Issuer+`"`) {
		t.Errorf("metadata = %d %s", code, body)
	}

	var out bytes.Buffer
	env.PrintQuickStart(&out)
	if len(env.DemoPassword) < 12 {
		t.Errorf("demo password %q too short for the password policy", env.DemoPassword)
	}
	for _, want := range []string{base, "registration", "token", "policy", "audit", env.Etcd[0], DemoUser, env.DemoPassword} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("quick start does not mention %q:\n%s", want, out.String())
		}
	}

	// The development CA and certificates persist in the data folder.
	for _, f := range []string{"ca/ca.crt", "ca/ca.key", "pki/token.crt", "pki/token.key", "token/kek", "demo-password", "audit/checkpoint-key.jwk"} {
		if _, err := os.Stat(dataDir + "/" + f); err != nil {
			t.Errorf("missing %s: %v", f, err)
		}
	}

	stopped = true
	if err := env.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	// Everything is closed: the public origin no longer accepts connections.
	if c, err := net.DialTimeout("tcp", env.Public.String(), time.Second); err == nil {
		c.Close()
		t.Fatal("public origin still listening after Stop")
	}
}

func TestDevReportsTakenPort(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	_, err = Start(context.Background(), Options{Addr: taken.Addr().String(), EtcdAddr: "127.0.0.1:0", DataDir: t.TempDir()}, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "setting addr") || !strings.Contains(err.Error(), taken.Addr().String()) {
		t.Fatalf("taken port error = %v", err)
	}
}
