package server_test

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	registrationv1 "github.com/mcpid/mcpid/gen/go/mcpid/registration/v1"
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
	iss := servicetest.NewOperatorIssuer(t, jose.ES256)

	etcd := etcdtest.Start(t)
	pki := servicetest.NewPKI(t)
	srv, err := server.Config{Flags: pki.ServeTLS(t, server.Name, servicetest.Flags(etcd.Endpoints())), Issuer: iss.URL}.Complete(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	servicetest.Run(t, srv)
	c := registrationv1.NewRegistrationServiceClient(pki.Dial(t, srv, server.Name, nil))

	call := func(tok string) context.Context {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		t.Cleanup(cancel)
		return servicetest.Bearer(ctx, tok)
	}
	admin, auditor := iss.Sign(t, iss.Claims("admin")), iss.Sign(t, iss.Claims("auditor"))
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

	now := time.Now()
	wrongAud := iss.Claims("admin")
	wrongAud["aud"] = "https://mcp.example.com"
	expired := iss.Claims("admin")
	expired["exp"] = now.Add(-time.Hour).Unix()
	for name, bad := range map[string]string{
		"wrong audience":  iss.Sign(t, wrongAud),
		"policy audience": iss.Sign(t, map[string]any{"iss": iss.URL, "sub": "s", "aud": principal.PolicyAudience, "client_id": "c", "resource": "https://mcp.example.com", "jti": "x", "iat": now.Unix(), "exp": now.Add(time.Minute).Unix()}),
		"expired":         iss.Sign(t, expired),
		"alg none":        iss.AlgNone(iss.Claims("admin")),
		"HMAC confusion":  iss.HMACConfusion(t, iss.Claims("admin")),
	} {
		if _, err := c.ListClients(call(bad), &registrationv1.ListClientsRequest{}); status.Code(err) != codes.Unauthenticated {
			t.Errorf("%s: %v, want Unauthenticated", name, err)
		}
	}
}
