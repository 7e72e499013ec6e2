package server_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	registrationv1 "github.com/mcpid/mcpid/gen/go/mcpid/registration/v1"
	"github.com/mcpid/mcpid/lib/admintoken"
	"github.com/mcpid/mcpid/lib/etcdtest"
	"github.com/mcpid/mcpid/lib/jose"
	"github.com/mcpid/mcpid/lib/principal"
	"github.com/mcpid/mcpid/lib/service/servicetest"
	"github.com/mcpid/mcpid/services/registration/server"
)

// TestOperatorTokens: registration accepts an operator token (`mcpid login`,
// aud=urn:mcpid:admin, signed by a key of the issuer's JWKS, fetched over
// loopback HTTP) in place of a bootstrap certificate: an admin and an
// auditor read, an auditor may not write; another audience, an expired
// token, alg none and HMAC with the public key are refused.
func TestOperatorTokens(t *testing.T) {
	key, err := jose.GenerateKey(jose.ES256, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	jwks := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != admintoken.JWKSPath {
			http.NotFound(w, r)
			return
		}
		_ = json.NewEncoder(w).Encode(jose.NewKeySet(key))
	}))
	t.Cleanup(jwks.Close)

	etcd := etcdtest.Start(t)
	pki := servicetest.NewPKI(t)
	srv, err := server.Config{Flags: pki.ServeTLS(t, server.Name, servicetest.Flags(etcd.Endpoints())), Issuer: jwks.URL}.Complete(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	servicetest.Run(t, srv)
	c := registrationv1.NewRegistrationServiceClient(pki.Dial(t, srv, server.Name, nil))

	now := time.Now()
	claims := func(role string) map[string]any {
		return map[string]any{
			"iss": jwks.URL, "sub": "usr_1", "aud": principal.AdminAudience, "client_id": "mcpid", "jti": "j-" + role,
			"grant_id": "grt_" + role, "roles": []string{role}, "iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(5 * time.Minute).Unix(),
		}
	}
	sign := func(c map[string]any) string {
		tok, err := jose.Sign(key, c, "at+jwt")
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	call := func(tok string) context.Context {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		t.Cleanup(cancel)
		return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+tok)
	}
	admin, auditor := sign(claims("admin")), sign(claims("auditor"))
	deadline := time.Now().Add(20 * time.Second)
	for {
		_, err := c.ListClients(call(admin), &registrationv1.ListClientsRequest{})
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("admin token read: %v", err)
		}
		time.Sleep(50 * time.Millisecond) // the service is still starting
	}
	if _, err := c.ListClients(call(auditor), &registrationv1.ListClientsRequest{}); err != nil {
		t.Fatalf("auditor token read: %v", err)
	}
	_, err = c.DeleteClient(call(auditor), &registrationv1.DeleteClientRequest{ClientId: "nobody"})
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("auditor token write: %v, want PermissionDenied", err)
	}
	_, err = c.DeleteClient(call(admin), &registrationv1.DeleteClientRequest{ClientId: "nobody"})
	if status.Code(err) == codes.PermissionDenied || status.Code(err) == codes.Unauthenticated {
		t.Fatalf("admin token write: %v, want past the allowlist", err)
	}

	wrongAud := claims("admin")
	wrongAud["aud"] = "https://mcp.example.com"
	expired := claims("admin")
	expired["exp"] = now.Add(-time.Hour).Unix()
	noneTok := b64url(map[string]any{"alg": "none", "typ": "at+jwt"}) + "." + b64url(claims("admin")) + "."
	pub, _ := json.Marshal(jose.NewKeySet(key))
	for name, bad := range map[string]string{
		"wrong audience":  sign(wrongAud),
		"policy audience": sign(map[string]any{"iss": jwks.URL, "sub": "s", "aud": principal.PolicyAudience, "client_id": "c", "resource": "https://mcp.example.com", "jti": "x", "iat": now.Unix(), "exp": now.Add(time.Minute).Unix()}),
		"expired":         sign(expired),
		"alg none":        noneTok,
		"HMAC confusion":  hmacSigned(claims("admin"), pub),
	} {
		if _, err := c.ListClients(call(bad), &registrationv1.ListClientsRequest{}); status.Code(err) != codes.Unauthenticated {
			t.Errorf("%s: %v, want Unauthenticated", name, err)
		}
	}
}
