package server_test

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mcpid/mcpid/lib/config"
	"github.com/mcpid/mcpid/lib/etcdtest"
	"github.com/mcpid/mcpid/lib/service/servicetest"
	"github.com/mcpid/mcpid/services/token/server"
)

func jwksKids(t *testing.T, base string) []string {
	t.Helper()
	code, body := servicetest.HTTP(t, http.MethodGet, base+"/oauth2/jwks", "", "")
	if code != http.StatusOK {
		t.Fatalf("jwks: %d %s", code, body)
	}
	var doc struct {
		Keys []struct {
			Kid string `json:"kid"`
		} `json:"keys"`
	}
	if err := json.Unmarshal([]byte(body), &doc); err != nil {
		t.Fatal(err)
	}
	var kids []string
	for _, k := range doc.Keys {
		kids = append(kids, k.Kid)
	}
	return kids
}

// TestSigningKeysAcrossReplicas starts a second replica on the same etcd
// and KEK: both publish and sign with the one key the first created, and
// each verifies the other's tokens. A third replica whose kek-file lacks the
// version that sealed the active key refuses to run, naming the setting.
func TestSigningKeysAcrossReplicas(t *testing.T) {
	e := startEnv(t)
	cfg := e.cfg
	cfg.Flags.GRPCAddr, cfg.Flags.HTTPAddr = "127.0.0.1:0", "127.0.0.1:0"
	srv2, err := cfg.Complete(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	servicetest.Run(t, srv2)
	base2 := "http://" + srv2.HTTPAddr().String()
	e.waitFor("second replica ready", func() bool {
		code, _ := servicetest.HTTP(t, http.MethodGet, base2+"/readyz", "", "")
		return code == http.StatusOK
	})
	k1, k2 := jwksKids(t, e.issuer), jwksKids(t, base2)
	if len(k1) != 1 || len(k2) != 1 || k1[0] != k2[0] {
		t.Fatalf("replicas publish %v and %v, want one shared key", k1, k2)
	}
	// A token from replica 2, introspected at replica 1 (through the edge).
	code, body := servicetest.HTTP(t, http.MethodPost, base2+"/oauth2/token", "application/x-www-form-urlencoded",
		tokenForm("grant_type", "client_credentials", "resource", resCRM, "client_id", clientMachine, "client_secret", secretMachine).Encode())
	if code != http.StatusOK {
		t.Fatalf("token at replica 2: %d %s", code, body)
	}
	var tr tokenResp
	_ = json.Unmarshal([]byte(body), &tr)
	if m := introspectAs(t, e, mcpParams(), tr.AccessToken); m["active"] != true {
		t.Fatalf("replica 1 does not accept replica 2's token: %v", m)
	}

	cfg.Flags.GRPCAddr, cfg.Flags.HTTPAddr = "127.0.0.1:0", "127.0.0.1:0"
	other := filepath.Join(t.TempDir(), "kek")
	if err := server.WriteKEKFile(other); err != nil {
		t.Fatal(err)
	}
	cfg.KEKFile = config.SecretFile{Path: other}
	srv3, err := cfg.Complete(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err = srv3.Run(ctx)
	if err == nil || !strings.Contains(err.Error(), "setting kek-file") {
		t.Fatalf("Run = %v, want a kek-file error", err)
	}
}

// TestEphemeralKEKReplacesUnreadableKey: without a kek-file (development),
// a restart cannot open the previous key and replaces it.
func TestEphemeralKEKReplacesUnreadableKey(t *testing.T) {
	etcd := etcdtest.Start(t)
	run := func() []string {
		srv, err := server.Config{Flags: servicetest.Flags(etcd.Endpoints())}.Complete(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- srv.Run(ctx) }()
		defer func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
		}()
		servicetest.WaitReady(t, srv, server.Name)
		return jwksKids(t, "http://"+srv.HTTPAddr().String())
	}
	first, second := run(), run()
	if len(first) != 1 || len(second) != 1 || first[0] == second[0] {
		t.Fatalf("keys %v then %v: want a replacement key", first, second)
	}
}

func TestSettingsErrorsNameTheSetting(t *testing.T) {
	etcd := etcdtest.Start(t)
	dir := t.TempDir()
	badKEK := filepath.Join(dir, "bad-kek")
	if err := os.WriteFile(badKEK, []byte("v1:not-base64!\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	shortPass := filepath.Join(dir, "short")
	if err := os.WriteFile(shortPass, []byte("short\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		setting string
		mod     func(*server.Config)
	}{
		{"issuer", func(c *server.Config) { c.Issuer = "http://auth.example.com" }},
		{"issuer", func(c *server.Config) { c.Issuer = "https://auth.example.com/?x=1" }},
		{"issuer", func(c *server.Config) { c.Issuer = "https://auth.example.com/" }},
		{"signing-alg", func(c *server.Config) { c.SigningAlg = "HS256" }},
		{"refresh-token-issuance", func(c *server.Config) { c.RefreshTokenIssuance = "always" }},
		{"access-token-ttl", func(c *server.Config) { c.AccessTokenTTL = 48 * time.Hour }},
		{"access-token-ttl-by-resource", func(c *server.Config) { c.AccessTokenTTLByResource = config.StringList{"not a uri=5m"} }},
		{"refresh-grace", func(c *server.Config) { c.RefreshGrace = time.Hour }},
		{"kek-file", func(c *server.Config) { c.KEKFile = config.SecretFile{Path: filepath.Join(dir, "missing")} }},
		{"kek-file", func(c *server.Config) { c.KEKFile = config.SecretFile{Path: badKEK} }},
		{"seed-password-file", func(c *server.Config) { c.SeedUser = "admin" }},
		{"seed-password-file", func(c *server.Config) { c.SeedUser, c.SeedPasswordFile = "admin", config.SecretFile{Path: shortPass} }},
		{"trusted-proxy-cidrs", func(c *server.Config) { c.TrustedProxies = config.StringList{"nope"} }},
	} {
		cfg := server.Config{Flags: servicetest.Flags(etcd.Endpoints())}
		c.mod(&cfg)
		_, err := cfg.Complete(context.Background())
		if err == nil || !strings.Contains(err.Error(), "setting "+c.setting) {
			t.Errorf("%s: Complete = %v, want an error naming the setting", c.setting, err)
		}
	}
}

// TestIssuerWithPath serves the path-inserted metadata URL (RFC 8414
// section 3.1) and builds every URL from the configured issuer.
func TestIssuerWithPath(t *testing.T) {
	etcd := etcdtest.Start(t)
	srv, err := server.Config{Flags: servicetest.Flags(etcd.Endpoints()), Issuer: "https://auth.example.com/tenant-a"}.Complete(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	servicetest.Run(t, srv)
	servicetest.WaitReady(t, srv, server.Name)
	base := "http://" + srv.HTTPAddr().String()
	code, body := servicetest.HTTP(t, http.MethodGet, base+"/.well-known/oauth-authorization-server/tenant-a", "", "")
	if code != http.StatusOK || !strings.Contains(body, `"issuer":"https://auth.example.com/tenant-a"`) ||
		!strings.Contains(body, `"token_endpoint":"https://auth.example.com/tenant-a/oauth2/token"`) {
		t.Fatalf("path-inserted metadata: %d %s", code, body)
	}
	for _, p := range []string{"", "/tenant-b"} {
		if code, body := servicetest.HTTP(t, http.MethodGet, base+"/.well-known/oauth-authorization-server"+p, "", ""); code != http.StatusNotFound {
			t.Errorf("metadata at %q: %d %s, want 404", p, code, body)
		}
	}
}

// TestSigningOptions: with signing-alg EdDSA the JWKS holds an OKP key and
// tokens are EdDSA (here the MCP server's own policy-audience token); a
// per-resource lifetime applies to its resource only.
func TestSigningOptions(t *testing.T) {
	e := startEnv(t, func(o *envOptions) {
		o.tweak = func(_ *env, c *server.Config) {
			c.SigningAlg = "EdDSA"
			c.AccessTokenTTLByResource = config.StringList{resFiles + "=90s"}
		}
	})
	files := decodeToken(t, e.post("/oauth2/token", tokenForm("grant_type", "client_credentials", "resource", resFiles,
		"client_id", clientNoCode, "client_secret", secretNoCode), "", ""))
	crm := decodeToken(t, e.post("/oauth2/token", tokenForm("grant_type", "client_credentials", "resource", resCRM,
		"client_id", clientMachine, "client_secret", secretMachine), "", ""))
	if files.ExpiresIn != 90 || crm.ExpiresIn != 300 {
		t.Fatalf("expires_in: files %d, crm %d", files.ExpiresIn, crm.ExpiresIn)
	}
	_, jwks := e.get("/oauth2/jwks")
	if !strings.Contains(jwks, `"kty":"OKP"`) || !strings.Contains(jwks, `"alg":"EdDSA"`) || !strings.Contains(jwks, `"crv":"Ed25519"`) {
		t.Fatalf("jwks: %s", jwks)
	}
	r := e.post("/oauth2/token", tokenForm("grant_type", "client_credentials", "resource", "urn:mcpid:policy"), clientMCP, secretMCP)
	h, c := claims(t, decodeToken(t, r).AccessToken)
	if h["alg"] != "EdDSA" || c["resource"] != resCRM || c["aud"] != "urn:mcpid:policy" {
		t.Fatalf("policy-audience token: %v %v", h, c)
	}
	if m := introspectAs(t, e, mcpParams(), decodeToken(t, r).AccessToken); m["active"] != false {
		// Its audience is not the MCP server's resource.
		t.Fatalf("introspection: %v", m)
	}
}
