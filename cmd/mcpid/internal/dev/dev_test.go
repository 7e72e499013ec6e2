package dev

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	policyv1 "github.com/mcpid/mcpid/gen/go/mcpid/policy/v1"
	"github.com/mcpid/mcpid/lib/devca"
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
		CRMAddr:  "127.0.0.1:0",
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

	checkCRM(t, env, dataDir)

	var out bytes.Buffer
	env.PrintQuickStart(&out)
	if len(env.DemoPassword) < 12 {
		t.Errorf("demo password %q too short for the password policy", env.DemoPassword)
	}
	for _, want := range []string{base, "registration", "token", "policy", "audit", env.Etcd[0], DemoUser, env.DemoPassword, env.MCPServers[0].URL} {
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

// checkCRM checks the example CRM MCP server: protected by mcpguard (RFC
// 9728 metadata naming this issuer, 401 with a challenge) and its operator
// policy stored at the policy service.
func checkCRM(t *testing.T, env *Env, dataDir string) {
	t.Helper()
	if len(env.MCPServers) != 1 || env.MCPServers[0].Name != "CRM" {
		t.Fatalf("MCP servers = %+v, want the CRM", env.MCPServers)
	}
	crmURL := env.MCPServers[0].URL
	u, err := url.Parse(crmURL)
	if err != nil {
		t.Fatal(err)
	}
	code, body := get(t, u.Scheme+"://"+u.Host+"/.well-known/oauth-protected-resource/mcp")
	if code != http.StatusOK || !strings.Contains(body, `"resource":"`+crmURL+`"`) || !strings.Contains(body, env.Issuer) {
		t.Errorf("CRM resource metadata = %d %s", code, body)
	}
	req, _ := http.NewRequestWithContext(context.Background(), http.MethodPost, crmURL, strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"tools/list"}`))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(resp.Header.Get("WWW-Authenticate"), "resource_metadata=") {
		t.Errorf("CRM without a token = %d %q", resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
	}

	ca, err := devca.Load(filepath.Join(dataDir, "ca"), time.Now)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.IssueOperator("test", devca.RoleAuditor)
	if err != nil {
		t.Fatal(err)
	}
	cert := leaf.TLSCertificate()
	conn, err := grpc.NewClient(env.Services["policy"].GRPC.String(),
		grpc.WithTransportCredentials(credentials.NewTLS(devca.ClientTLSConfig(ca.Pool(), &cert, "policy"))))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := policyv1.NewPolicyServiceClient(conn)
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		got, err := client.GetPolicy(ctx, &policyv1.GetPolicyRequest{Resource: crmURL})
		cancel()
		if err == nil {
			if len(got.GetPolicy().GetTools()) != 3 {
				t.Errorf("CRM policy = %v", got.GetPolicy())
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("CRM policy never stored: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
